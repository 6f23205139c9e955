"""`RealSearchQA`: the Search-R1 benchmark, from its data files and a retriever server over HTTP.

Data: Search-R1's processed parquet files (e.g. `nq_hotpotqa_train/train.parquet` and `test.parquet`
made by its `scripts/data_process` scripts). Each row has `question`, `data_source` (nq, hotpotqa,
triviaqa, popqa, 2wikimultihopqa, musique, bamboogle) and the gold aliases in `golden_answers` or in
`reward_model["ground_truth"]["target"]`; `id` is used when present. A file in the custom-dataset layout
of Search-R1's README (`data_source`, `prompt` as chat messages, `ability`, `reward_model`, `extra_info`;
no `question` column) gives its question through the prompt (`question_text`). JSON Lines files with
the same fields (FlashRAG's raw layout) are read too, without any extra package. A split file that
yields no question stops the run at setup, before any model loads.

Retriever: Search-R1's `retrieval_server.py` (E5 over wiki-18, answering POST /retrieve), or
`python -m envs.search.server` to try the path on the built-in corpus. See `envs.search.retriever`.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import os
import random
from collections import defaultdict

from envs.base import EnvSetupError, expand_path
from envs.search.qa import Question, SearchEpisode
from envs.search.retriever import DEFAULT_URL, RetrieverClient, probe_retriever

COLUMNS = ("id", "question", "golden_answers", "data_source", "reward_model", "prompt")
QUESTION_MARKER = "Question:"      # Search-R1's instruction prefix ends with "Question: <question>"
SPLIT_FILES = {"train": ("train.parquet", "train.jsonl"), "test": ("test.parquet", "test.jsonl")}


def read_rows(path: str) -> list[dict]:
    """Rows of a .parquet (needs pyarrow, imported here only), .jsonl or .json file."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow "
                              "(or convert the file to JSON Lines)") from error
        names = pq.read_schema(path).names
        return pq.read_table(path, columns=[c for c in COLUMNS if c in names]).to_pylist()
    with open(path, encoding="utf-8") as handle:
        if path.endswith(".jsonl"):
            return [json.loads(line) for line in handle if line.strip()]
        rows = json.load(handle)
    if not isinstance(rows, list):
        raise ValueError(f"{path} must hold a JSON list of objects")
    return rows


def gold_answers(row: dict) -> tuple[str, ...]:
    """Gold aliases from `golden_answers`, else from `reward_model.ground_truth.target`."""
    answers = row.get("golden_answers")
    if answers is None:
        truth = (row.get("reward_model") or {}).get("ground_truth") or {}
        answers = truth.get("target") if isinstance(truth, dict) else truth
    if isinstance(answers, str):
        answers = [answers]
    return tuple(str(a) for a in (answers if answers is not None else []) if str(a).strip())


def question_text(row: dict) -> str:
    """The row's question: its `question` column, else its `prompt` (Search-R1's custom-dataset layout:
    chat messages, or one string): the last user message, from after its last "Question:" when it has
    one, since Search-R1's own files put the instruction before the question there."""
    if row.get("question"):
        return str(row["question"])
    messages = row.get("prompt")
    if isinstance(messages, str):
        content = messages
    else:
        users = [m.get("content") for m in messages or [] if isinstance(m, dict) and m.get("role", "user") == "user"]
        content = str(users[-1] or "") if users else ""
    marker = content.rfind(QUESTION_MARKER)
    return content[marker + len(QUESTION_MARKER):] if marker >= 0 else content


def to_question(row: dict, index: int) -> Question | None:
    """One row as a Question (None when it has no question or no gold answer). The question gets a
    final "?" as Search-R1's preprocessing gives it."""
    text = " ".join(question_text(row).split())
    answers = gold_answers(row)
    if not text or not answers:
        return None
    if not text.endswith("?"):
        text += "?"
    qid = str(row.get("id") if row.get("id") is not None else index)
    return Question(qid=qid, text=text, answers=answers, task_type=str(row.get("data_source") or "unknown"),
                    plan_queries=(text,))


def split_paths(data_path: str) -> dict[str, str | None]:
    """A folder gives its train/test files; a single file serves every split."""
    if os.path.isdir(data_path):
        found = {}
        for split, names in SPLIT_FILES.items():
            paths = [os.path.join(data_path, name) for name in names]
            found[split] = next((p for p in paths if os.path.exists(p)), None)
        if not any(found.values()):
            raise FileNotFoundError(f"{data_path} holds none of {sum(SPLIT_FILES.values(), ())}")
        return found
    if not os.path.exists(data_path):
        raise FileNotFoundError(f"data_path {data_path} does not exist; point it at Search-R1's data folder "
                                "(e.g. nq_hotpotqa_train/) or one of its parquet files")
    return {"train": data_path, "test": data_path}


def stratified(questions: list[Question], seed: int) -> list[Question]:
    """Round-robin over the data sources (in name order), each source's questions in a seeded shuffle:
    any prefix, such as the first `eval_tasks` indices of an evaluation panel, holds every source
    about equally (Search-R1's merged test file is sorted by source, so its first rows are one source)."""
    by_source = defaultdict(list)
    for question in questions:
        by_source[question.task_type].append(question)
    rng = random.Random(f"search-panel-{seed}")
    queues = []
    for source in sorted(by_source):
        queue = list(by_source[source])
        rng.shuffle(queue)
        queues.append(queue)
    return [q for round_ in itertools.zip_longest(*queues) for q in round_ if q is not None]


@functools.lru_cache(maxsize=8)
def load_split(path: str, mtime: float, data_sources: tuple[str, ...] | None,
               max_questions: int | None, panel_seed: int | None = None) -> list[Question]:
    """Cached per (file, modification time): a rollout builds many envs over the same file. With a
    `panel_seed` the rows are put in `stratified` order before `max_questions` cuts them."""
    questions = [q for i, row in enumerate(read_rows(path)) if (q := to_question(row, i)) is not None]
    if data_sources:
        questions = [q for q in questions if q.task_type in data_sources]
    if panel_seed is not None:
        questions = stratified(questions, panel_seed)
    return questions[:max_questions] if max_questions else questions


class RealSearchQA(SearchEpisode):
    """Search-R1 questions, searched through a retriever server.

    kwargs: `data_path` (folder with train/test files, or one file for every split; `$VARS` are
    expanded), `retriever_url` (loopback by default), `wire` ("batched" = Search-R1, "single" =
    verl-agent), `topk`, `timeout`, `retries`, `backoff` (for the HTTP client), `check_retriever`
    (True: one probe search at construction, so a wrong URL fails at start-up), `data_sources` (keep
    only these, e.g. ("nq", "hotpotqa")), `max_questions` (per split), `panel_seed` (the seeded
    order of the test split, stratified over data sources: task_index 0..N-1 covers every source),
    `max_steps` (4), and the prompt switches of `SearchEpisode`.

    `privileged()["expert_plan"]` is only a suggestion here (search the question, give the first
    gold alias): real data carries no verified search path.
    """

    def __init__(self, data_path: str, retriever_url: str = DEFAULT_URL, topk: int = 3, max_steps: int = 4,
                 wire: str = "batched", timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 data_sources: tuple[str, ...] | list[str] | None = None, max_questions: int | None = None,
                 panel_seed: int = 0, check_retriever: bool = True, prompt_template: str | None = None,
                 clip_observations: bool = True, action_parse: str = "project", last_turn_hint: bool = True):
        super().__init__(max_steps, topk, prompt_template, clip_observations, action_parse, last_turn_hint)
        sources = tuple(data_sources) if data_sources else None
        paths = split_paths(self.check_kwargs({"data_path": data_path}))
        self.questions = {split: (load_split(path, os.path.getmtime(path), sources, max_questions,
                                             panel_seed if split == "test" else None) if path else [])
                          for split, path in paths.items()}
        empty = next((path for split, path in paths.items() if path and not self.questions[split]), None)
        if empty:
            kept = f" of data_sources {list(sources)}" if sources else ""
            raise EnvSetupError(f"data_path: no question{kept} loaded from {empty}; each row needs a question (a "
                                "`question` column, or a user message in `prompt`) and gold answers "
                                "(`golden_answers` or `reward_model.ground_truth.target`)")
        self.client = RetrieverClient(retriever_url, topk=topk, timeout=timeout, retries=retries,
                                      backoff=backoff, wire=wire)
        if check_retriever:
            probe_retriever(retriever_url, wire, timeout)

    @staticmethod
    def check_kwargs(kwargs: dict) -> str:
        """The data path, checked cheaply before anything loads: given, placeholders set, present,
        and pyarrow installed when it holds parquet files. EnvSetupError says what to fix."""
        if not kwargs.get("data_path"):
            raise EnvSetupError("the real Search-QA needs data_path: the folder of Search-R1's train.parquet and "
                                "test.parquet (or one file), e.g. --env_kwargs '{\"data_path\": \"DIR\"}'")
        path = os.path.abspath(expand_path(kwargs["data_path"], "data_path"))
        try:
            files = [f for f in split_paths(path).values() if f]
        except FileNotFoundError as error:
            raise EnvSetupError(str(error)) from None
        if any(f.endswith(".parquet") for f in files) and importlib.util.find_spec("pyarrow") is None:
            raise EnvSetupError(f"reading {files[0]} needs pyarrow: pip install pyarrow (README 'Reproducing "
                                "the paper'), or convert the files to JSON Lines")
        return path

    def search(self, queries: list[str]) -> list[list[dict]]:
        return self.client.search(queries)
