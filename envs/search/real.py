"""`RealSearchQA`: the Search-R1 benchmark, from its data files and a retriever server over HTTP.

Data: Search-R1's processed parquet files (e.g. `nq_hotpotqa_train/train.parquet` and `test.parquet`
made by its `scripts/data_process` scripts). Each row has `question`, `data_source` (nq, hotpotqa,
triviaqa, popqa, 2wikimultihopqa, musique, bamboogle) and the gold aliases in `golden_answers` or in
`reward_model["ground_truth"]["target"]`; `id` is used when present. JSON Lines files with the same
fields (FlashRAG's raw layout) are read too, without any extra package.

Retriever: Search-R1's `retrieval_server.py` (E5 over wiki-18, answering POST /retrieve), or
`python -m envs.search.server` to try the path on the built-in corpus. See `envs.search.retriever`.
"""

from __future__ import annotations

import functools
import json
import os

from envs.search.qa import Question, SearchEpisode
from envs.search.retriever import DEFAULT_URL, RetrieverClient

COLUMNS = ("id", "question", "golden_answers", "data_source", "reward_model")
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


def to_question(row: dict, index: int) -> Question | None:
    """One row as a Question (None when it has no question or no gold answer). The question gets a
    final "?" as Search-R1's preprocessing gives it."""
    text = " ".join(str(row.get("question") or "").split())
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


@functools.lru_cache(maxsize=8)
def load_split(path: str, mtime: float, data_sources: tuple[str, ...] | None,
               max_questions: int | None) -> list[Question]:
    """Cached per (file, modification time): a rollout builds many envs over the same file."""
    questions = [q for i, row in enumerate(read_rows(path)) if (q := to_question(row, i)) is not None]
    if data_sources:
        questions = [q for q in questions if q.task_type in data_sources]
    return questions[:max_questions] if max_questions else questions


class RealSearchQA(SearchEpisode):
    """Search-R1 questions, searched through a retriever server.

    kwargs: `data_path` (folder with train/test files, or one file for every split),
    `retriever_url` (loopback by default), `wire` ("batched" = Search-R1, "single" = verl-agent),
    `topk`, `timeout`, `retries`, `backoff` (for the HTTP client), `data_sources` (keep only these,
    e.g. ("nq", "hotpotqa")), `max_questions` (per split), `max_steps` (4).

    `privileged()["expert_plan"]` is only a suggestion here (search the question, give the first
    gold alias): real data carries no verified search path.
    """

    def __init__(self, data_path: str, retriever_url: str = DEFAULT_URL, topk: int = 3, max_steps: int = 4,
                 wire: str = "batched", timeout: float = 30.0, retries: int = 3, backoff: float = 0.5,
                 data_sources: tuple[str, ...] | list[str] | None = None, max_questions: int | None = None):
        super().__init__(max_steps=max_steps, topk=topk)
        sources = tuple(data_sources) if data_sources else None
        self.questions = {split: (load_split(path, os.path.getmtime(path), sources, max_questions) if path else [])
                          for split, path in split_paths(os.path.abspath(str(data_path))).items()}
        self.client = RetrieverClient(retriever_url, topk=topk, timeout=timeout, retries=retries,
                                      backoff=backoff, wire=wire)

    def search(self, queries: list[str]) -> list[list[dict]]:
        return self.client.search(queries)
