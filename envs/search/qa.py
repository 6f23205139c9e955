"""The Search-QA episode, shared by the built-in engine and the real-data adapter.

A subclass supplies the questions of each split and a retriever (`search(queries) -> list of passage
lists`); this class runs the episode exactly as the released SDAR code does: at most `max_steps`
turns, a search returns passages inside <information>, an answer ends the episode, and the reward is
the normalised exact match of that answer against the gold aliases.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass, field

from envs.base import check_switches
from envs.search import skill_category
from envs.search.prompts import (FORMAT_REMINDER, MAX_ACTION_CHARS, START_OBSERVATION, answer_action,
                                 format_information, get_template, parse_action, render_prompt,
                                 search_action, split_action)

SPLIT_ALIASES = {"train": "train", "test": "test", "valid": "test", "valid_seen": "test",
                 "validation": "test", "eval": "test", "dev": "test"}

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse white space (the
    SQuAD-style normalisation Search-R1 scores with)."""
    text = str(text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction, gold_answers) -> float:
    """1.0 if the normalised prediction equals any normalised gold alias, else 0.0."""
    guess = normalize_answer(prediction)
    return float(any(guess == normalize_answer(gold) for gold in gold_answers))


def canonical_split(split: str) -> str:
    if split not in SPLIT_ALIASES:
        raise ValueError(f"split={split!r} is unknown; use one of {', '.join(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[split]


@dataclass(frozen=True)
class Question:
    """One task. `plan_queries` are the searches that surface `support_ids` (empty for real data)."""

    qid: str
    text: str
    answers: tuple[str, ...]
    task_type: str
    plan_queries: tuple[str, ...] = ()
    support_ids: tuple[str, ...] = ()
    support_titles: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False)


class SearchEpisode:
    """Episode logic; subclasses set `self.questions = {"train": [...], "test": [...]}` and
    implement `search(queries) -> list[list[dict]]` with passages shaped {"id", "contents", "score"}.

    The prompt switches every env takes: `prompt_template` (a template file, see `envs.templates`;
    None = `envs/search/prompt.txt`), `clip_observations` (True: observations are cut to 6,000
    characters; False: nothing is cut, as released), `action_parse` ("project" or "released", see
    `envs.search.prompts.parse_action`), and `last_turn_hint` (True: the last turn's prompt asks for
    the answer; False: it does not, as released). `info["data_source"]` is the question's source
    (Search-R1's `data_source`; the built-in engine's question family).
    """

    name = "search"
    max_steps = 4

    def __init__(self, max_steps: int = 4, topk: int = 3, prompt_template: str | None = None,
                 clip_observations: bool = True, action_parse: str = "project", last_turn_hint: bool = True):
        check_switches(action_parse, clip_observations)
        if not isinstance(last_turn_hint, bool):
            raise ValueError(f"last_turn_hint={last_turn_hint!r} must be true or false")
        self.max_steps = max_steps
        self.topk = topk
        self.template = get_template(prompt_template)
        self.clip_observations, self.action_parse, self.last_turn_hint = clip_observations, action_parse, last_turn_hint
        self.questions: dict[str, list[Question]] = {"train": [], "test": []}
        self.question: Question | None = None
        self.split = "train"
        self.index = 0
        self.steps = 0
        self.done = False
        self.last_answer = ""
        self.score = 0.0
        self.observation = START_OBSERVATION

    def search(self, queries: list[str]) -> list[list[dict]]:
        raise NotImplementedError

    def num_tasks(self, split: str) -> int:
        """Questions of a split (task_index 0..num_tasks-1)."""
        return len(self.questions[canonical_split(split)])

    def reset(self, seed: int, split: str = "train", task_index: int | None = None) -> tuple[str, dict]:
        """Pick a question: `task_index` directly (a fixed eval panel), else drawn from `seed`."""
        self.split = canonical_split(split)
        pool = self.questions[self.split]
        if not pool:
            raise ValueError(f"no questions loaded for split {self.split!r}")
        if task_index is None:
            task_index = random.Random(seed).randrange(len(pool))
        if not 0 <= task_index < len(pool):
            raise ValueError(f"task_index={task_index} is out of range for {len(pool)} {self.split} questions")
        self.index = task_index
        self.question = pool[task_index]
        self.steps, self.done, self.last_answer, self.score = 0, False, "", 0.0
        self.observation = START_OBSERVATION
        return self.observation, self._info(valid=True)

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        """Apply a canonical action. Invalid text costs a turn and yields the format reminder.

        A retriever that cannot be reached raises `RetrieverError` (an infrastructure fault, not a
        model mistake); nothing the model writes makes this raise.
        """
        if self.question is None:
            raise RuntimeError("call reset() before step()")
        if self.done:
            return self.observation, 0.0, True, self._info(valid=False)
        self.steps += 1
        parsed = split_action(action)
        reward = 0.0
        if parsed is None:
            self.observation = FORMAT_REMINDER
        elif parsed[0] == "search":
            query = parsed[1][:MAX_ACTION_CHARS]
            self.observation = format_information(self.search([query])[0][:self.topk])
        else:
            self.last_answer = parsed[1]
            self.score = exact_match(parsed[1], self.question.answers)
            reward, self.done = self.score, True
            self.observation = "Answer submitted."
        if self.steps >= self.max_steps:
            self.done = True
        return self.observation, reward, self.done, self._info(valid=parsed is not None)

    def _info(self, valid: bool) -> dict:
        q = self.question
        return {"won": self.score == 1.0, "score": self.score, "admissible_actions": [],
                "task_description": q.text, "task_type": q.task_type,
                "task_id": f"search/{self.split}/{q.qid}", "step": self.steps,
                "valid_action": valid, "answer": self.last_answer, "data_source": q.task_type}

    def privileged(self) -> dict:
        """Teacher-only view: gold aliases, the supporting passages and an expert plan (searches that
        surface them, then the first gold alias as the answer)."""
        q = self.question
        if q is None:
            return {}
        plan = [search_action(query) for query in q.plan_queries] + [answer_action(q.answers[0])]
        return {"task_type": q.task_type, "skill_category": skill_category(q.text),
                "gold_answers": list(q.answers), "expert_plan": plan,
                "supporting_titles": list(q.support_titles), "supporting_ids": list(q.support_ids)}

    def render_prompt(self, observation: str, history: list[tuple[str, str]], info: dict,
                      history_length: int) -> str:
        return render_prompt(observation, history, info, history_length, self.max_steps, self.template,
                             self.clip_observations, self.last_turn_hint)

    def parse_action(self, response: str) -> tuple[str, bool]:
        return parse_action(response, self.action_parse)
