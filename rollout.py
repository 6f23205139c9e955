"""Step-wise multi-turn rollout on plain Hugging Face `generate` (verl-agent's design, which the released
code builds on: its `agent_system/multi_turn_rollout/rollout_loop.py`).

Every turn of every episode becomes its own training sample: the prompt is rebuilt each turn from the
task, the step count, the last few (observation, action) pairs and the current observation, so prompts
stay short however long the episode runs. Only actions, never the model's reasoning, go into the
history. After an episode ends, each of its step samples is scored with the episode's return minus its
own invalid-action penalty, and GRPO compares step samples of the G rollouts of the same task.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from transformers import CompileConfig, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from envs.base import Env
from opsd import left_pad
from prompts import privileged_message, render_chat, teacher_prompt_text

STOP_TAGS = {"alfworld": ("</action>",), "webshop": ("</action>",), "search": ("</search>", "</answer>")}


@dataclass
class RolloutConfig:
    history_length: int = 2          # (observation, action) pairs shown in the prompt
    max_turns: int | None = None     # None: the env's own limit
    max_new_tokens: int = 512        # per turn
    max_prompt_length: int = 2048    # prompts are left-truncated to this many tokens
    temperature: float = 1.0         # 0 = greedy
    top_p: float = 1.0
    invalid_penalty: float = 0.1     # subtracted from the score of a step with an invalid action
    split: str = "train"
    show_skills_to_student: bool = False   # Skill-GRPO: the skills go into the student's prompt too
    teacher_context: str | None = None     # act as the SDAR teacher: its exact prompt ("prefix" | "in_prompt")
    stop_at_action: bool = True      # stop at the first closed action tag (False: sample to EOS or the budget)
    generation_batch_size: int | None = None  # rows per generate call (None: the whole active batch)
    sort_by_length: bool = False     # group prompts of similar length into the same generate call
    cache_implementation: str | None = None  # "static" with a compiled forward for fast decoding
    pad_to_multiple_of: int | None = None    # bucket prompt lengths (fewer recompiles with a static cache)
    compile_decode: bool | None = None       # compile the static-cache decode step (None: on GPU only, as HF does)


@dataclass
class StepSample:
    """One agent turn: what the student saw, exactly what it sampled, and how the episode went."""
    prompt_ids: list[int]
    response_ids: list[int]
    user_message: str                # the rendered user message (the teacher re-renders it with skills)
    group_id: int
    traj_id: int
    turn: int
    valid: bool
    task_type: str
    skill_text: str                  # privileged context for the teacher
    skill_category: str
    score: float = 0.0               # episode return minus this step's penalty (set at episode end)
    episode_return: float = 0.0      # the episode's return (set at episode end)
    won: bool = False                # the episode succeeded (set at episode end)
    response_text: str = ""
    prompt_truncated: bool = False   # the prompt was longer than max_prompt_length and lost its start
    extra: dict = field(default_factory=dict)


def _tag_automaton(tags: tuple[str, ...]):
    """A character automaton that finds any of `tags` in a stream of text: (step, accept state).

    States are the prefixes of the tags (0 is the empty one); a character moves to the longest suffix of
    the text so far that is still a tag prefix, and reaching a whole tag moves to the absorbing accept state.
    """
    prefixes = sorted({""} | {tag[:k] for tag in tags for k in range(len(tag) + 1)}, key=lambda p: (len(p), p))
    index, accept = {p: i for i, p in enumerate(prefixes)}, len(prefixes)
    moves = {}
    for prefix in prefixes:
        for char in set("".join(tags)):
            text = prefix + char
            if any(text.endswith(tag) for tag in tags):
                moves[index[prefix], char] = accept
                continue
            while text not in index:
                text = text[1:]
            moves[index[prefix], char] = index[text]

    def step(state: int, text: str) -> int:
        for char in text:
            if state == accept:
                break
            state = moves.get((state, char), 0)
        return state

    return step, accept


_STOP_TABLES: dict = {}


def stop_table(tokenizer, tags: tuple[str, ...], eos_ids: set[int], vocab_size: int,
               device) -> tuple[torch.Tensor, int]:
    """Next automaton state for every (state, token id) `(S, V+1)` and the accept state, cached per tokenizer.

    Each token id's own text (special tokens decode to nothing, as in `cut_response`) is run from every
    state; an EOS id leads straight to accept. Column V stands for any id the tokenizer does not know.
    """
    key = (id(tokenizer), tags, tuple(sorted(eos_ids)), vocab_size, str(device))
    if key not in _STOP_TABLES:
        step, accept = _tag_automaton(tags)
        alphabet = set("".join(tags))
        known = min(vocab_size, len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=True)
        columns = []
        for text in texts:
            outside = [i for i, char in enumerate(text) if char not in alphabet]
            if not outside:
                columns.append([step(state, text) for state in range(accept)])
                continue
            # past the first character that is in no tag every state is back at 0: only the head differs
            head, tail = text[:outside[0]], step(0, text[outside[0] + 1:])
            columns.append([accept if step(state, head) == accept else tail for state in range(accept)])
        table = torch.arange(accept + 1)[:, None].repeat(1, vocab_size + 1)   # (S, V+1) no text: state kept
        table[:accept, :len(texts)] = torch.tensor(columns, dtype=torch.long).T
        table[:, sorted(i for i in eos_ids if i < vocab_size)] = accept
        _STOP_TABLES[key] = (tokenizer, table.to(device), accept)
    _, table, accept = _STOP_TABLES[key]
    return table, accept


class StopOnTags(StoppingCriteria):
    """Per-row stop once the generated text closes an action tag or an EOS token is sampled, on the device.

    The text test runs as a table lookup per row and step (`stop_table`): no decoding and no host
    synchronisation per token, unlike decoding the tail every step or `stop_strings`. Called once per
    generated token, as `generate` does; a fresh instance per generate call. Rows from `live_rows` on
    (bucket padding) count as finished from their first token.
    """

    def __init__(self, tokenizer, tags: tuple[str, ...], eos_ids: set[int], vocab_size: int, device,
                 live_rows: int | None = None):
        self.table, self.accept = stop_table(tokenizer, tags, eos_ids, vocab_size, device)
        self.live_rows, self.state = live_rows, None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tokens = input_ids[:, -1].clamp(max=self.table.shape[1] - 1)       # (B,)
        if self.state is None:
            self.state = torch.zeros_like(tokens)                           # (B,)
            if self.live_rows is not None:
                self.state[self.live_rows:] = self.accept
        self.state = self.table[self.state, tokens]                         # (B,)
        return self.state == self.accept


def cut_response(ids: list[int], tokenizer, eos_ids: set[int], tags: tuple[str, ...]) -> list[int]:
    """The sampled tokens up to and including the first EOS or the token that closes an action tag."""
    for position, token in enumerate(ids):
        if token in eos_ids:
            ids = ids[:position + 1]
            break
    if not any(tag in tokenizer.decode(ids, skip_special_tokens=True) for tag in tags):
        return ids
    low, high = 1, len(ids)                                   # smallest prefix whose text holds a tag
    while low < high:
        mid = (low + high) // 2
        if any(tag in tokenizer.decode(ids[:mid], skip_special_tokens=True) for tag in tags):
            high = mid
        else:
            low = mid + 1
    return ids[:low]


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a turn: the tokenizer's EOS and the model's generation EOS ids."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured] if configured is not None else [])
    return ids | {tokenizer.eos_token_id}


def decode_compile_config(device: torch.device) -> CompileConfig:
    """HF's compile settings (CUDA graphs on GPU) with dynamic shapes from the first call, so batch and
    cache sizes never recompile (the first compile is the only one); on CPU generate compiles only when told."""
    config = CompileConfig(dynamic=True)
    config._compile_all_devices = device.type == "cpu"
    return config


def bucket_rows(rows: int, cap: int) -> int:
    """Rows padded up to a power of two, at least 2 (torch.compile specialises size 1) and at most `cap`,
    so a shrinking batch replays a few recorded CUDA graphs instead of recording one per turn."""
    return min(cap, max(2, 1 << max(0, rows - 1).bit_length()))


def generate_responses(model, tokenizer, prompts: list[list[int]], config: RolloutConfig,
                       tags: tuple[str, ...]) -> list[list[int]]:
    """Sample one response per prompt (token ids exactly as sampled, cut at the action's end): `tags` are the
    closing tags to stop at; with none, each row samples to EOS or the token budget (the released rule).

    Fast path (`cache_implementation="static"`): HF's static KV cache with its compiled decode step;
    prompt widths are bucketed by `pad_to_multiple_of` and, when compiled, the rows to a power of two
    (extra rows repeat the first prompt and are dropped): the step compiles once, with dynamic shapes,
    and a run replays a handful of shapes instead of one per turn. Stopping at the closed tag is a
    device-side table lookup (`StopOnTags`), so the only host sync per token left is generate's own
    "all rows finished?" test.
    """
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    greedy = config.temperature <= 0
    device = next(model.parameters()).device
    static = config.cache_implementation == "static"
    compiled = static and (device.type != "cpu" if config.compile_decode is None else config.compile_decode)
    # Every sampling field is set explicitly: a field left unset is filled from the checkpoint's own
    # generation_config (Qwen ships top_k=20, top_p=0.8, repetition_penalty=1.05), which would change
    # the policy being trained. top_k=0 turns top-k off.
    generation_config = GenerationConfig(
        max_new_tokens=config.max_new_tokens, do_sample=not greedy, temperature=1.0 if greedy else config.temperature,
        top_p=1.0 if greedy else config.top_p, top_k=0, repetition_penalty=1.0,
        pad_token_id=pad_id, eos_token_id=sorted(eos_ids), cache_implementation=config.cache_implementation,
        compile_config=decode_compile_config(device) if compiled else None, disable_compile=static and not compiled,
    )
    vocab_size = max(len(tokenizer), getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    order = list(range(len(prompts)))
    if config.sort_by_length:
        order.sort(key=lambda index: len(prompts[index]))
    size = config.generation_batch_size or max(1, len(prompts))
    responses: list[list[int]] = [[] for _ in prompts]
    for begin in range(0, len(order), size):
        rows = order[begin:begin + size]
        slots = rows + rows[:1] * (bucket_rows(len(rows), config.generation_batch_size or 1 << 30) - len(rows)
                                   if compiled else 0)
        width = max(len(prompts[row]) for row in rows)
        if config.pad_to_multiple_of:
            width = -(-width // config.pad_to_multiple_of) * config.pad_to_multiple_of
        input_ids, attention_mask = left_pad([prompts[row] for row in slots], pad_id, width)  # (b, P) each
        stop = StoppingCriteriaList([StopOnTags(tokenizer, tags, eos_ids, vocab_size, device, len(rows))])
        sequences = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                   generation_config=generation_config, stopping_criteria=stop)  # (b, P+n)
        generated = sequences[:len(rows), width:].tolist()
        for slot, row in enumerate(rows):
            responses[row] = cut_response(generated[slot], tokenizer, eos_ids, tags)
    return responses


def _score_trajectory(samples: list[StepSample], rewards: list[float], penalty: float, won: bool) -> float:
    episode_return = float(sum(rewards))
    for sample in samples:
        sample.score = episode_return - (0.0 if sample.valid else penalty)
        sample.episode_return, sample.won = episode_return, won
    return episode_return


def rollout(model, tokenizer, envs: list[Env], seeds: list[int], group_ids: list[int], config: RolloutConfig,
            skill_fn=None, task_indices: list[int | None] | None = None):
    """Play one episode in each env and return (step samples, metrics); arguments as `play_episodes`."""
    trajectories, infos, returns, tokens, seconds = play_episodes(model, tokenizer, envs, seeds, group_ids, config,
                                                                  skill_fn, task_indices)
    samples = [sample for trajectory in trajectories for sample in trajectory]
    return samples, episode_metrics(infos, trajectories, returns, tokens, seconds)


@torch.no_grad()
def play_episodes(model, tokenizer, envs: list[Env], seeds: list[int], group_ids: list[int], config: RolloutConfig,
                  skill_fn=None, task_indices: list[int | None] | None = None, progress=None):
    """Play one episode in each env; returns (step samples per trajectory, final infos, returns, response
    tokens, generate seconds).

    envs: one env per trajectory; rollouts of the same task share a seed and a group id.
    skill_fn(env, info[, prompt_text]) -> (skill_text, skill_category): the teacher's privileged text for a
    task, asked at reset, and again at every turn with the student's message if `skill_fn.per_turn`.
    task_indices: a fixed task per env (evaluation panels) instead of drawing one from the seed.
    progress: a tqdm bar advanced by each episode as it ends.
    Rows of every generate call are the active envs in index order (unless `sort_by_length`).
    """
    was_training = model.training
    model.eval()
    n = len(envs)
    task_indices = task_indices or [None] * n
    observations, infos, skills = [], [], []
    for env, seed, task_index in zip(envs, seeds, task_indices):
        observation, info = env.reset(seed, split=config.split, task_index=task_index)
        observations.append(observation)
        infos.append(info)
        skills.append(skill_fn(env, info) if skill_fn else ("", env.privileged().get("skill_category", "")))
    histories = [[] for _ in range(n)]
    trajectories = [[] for _ in range(n)]
    rewards = [[] for _ in range(n)]
    active = list(range(n))
    max_turns = config.max_turns or max(env.max_steps for env in envs)
    tokens, generate_seconds = 0, 0.0
    for turn in range(max_turns):
        if not active:
            break
        messages, prompts, truncated = {}, [], {}
        for i in active:
            message = envs[i].render_prompt(observations[i], histories[i], infos[i], config.history_length)
            if getattr(skill_fn, "per_turn", False):      # a rule that reads each turn's prompt
                skills[i] = skill_fn(envs[i], infos[i], message)
            if config.show_skills_to_student:
                message = privileged_message(message, skills[i][0])
            messages[i] = message
            text = (teacher_prompt_text(tokenizer, message, skills[i][0], config.teacher_context)
                    if config.teacher_context else render_chat(tokenizer, message))
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            truncated[i] = len(ids) > config.max_prompt_length
            prompts.append(ids[-config.max_prompt_length:])
        tags = STOP_TAGS.get(envs[active[0]].name, ("</action>",)) if config.stop_at_action else ()
        start = time.perf_counter()
        responses = generate_responses(model, tokenizer, prompts, config, tags)
        generate_seconds += time.perf_counter() - start
        still_active = []
        for i, prompt_ids, response_ids in zip(active, prompts, responses):
            text = tokenizer.decode(response_ids, skip_special_tokens=True)
            action, valid = envs[i].parse_action(text)
            observation, reward, done, info = envs[i].step(action)
            tokens += len(response_ids)
            trajectories[i].append(StepSample(
                prompt_ids=prompt_ids, response_ids=response_ids, user_message=messages[i], group_id=group_ids[i],
                traj_id=i, turn=turn, valid=valid, task_type=infos[i]["task_type"], skill_text=skills[i][0],
                skill_category=skills[i][1], response_text=text, prompt_truncated=truncated[i]))
            rewards[i].append(float(reward))
            histories[i].append((observations[i], action))
            observations[i], infos[i] = observation, info
            if not done:
                still_active.append(i)
        if progress is not None:
            progress.update(len(active) - len(still_active))
        active = still_active
    returns = [_score_trajectory(trajectories[i], rewards[i], config.invalid_penalty, bool(infos[i]["won"]))
               for i in range(n)]
    model.train(was_training)
    return trajectories, infos, returns, tokens, generate_seconds


def episode_metrics(infos: list[dict], trajectories: list[list[StepSample]], returns: list[float],
                    tokens: int, generate_seconds: float) -> dict:
    """Success overall and per task type, return, length, invalid rate, generation speed, and how many
    prompts were left-truncated to `max_prompt_length` (the released code raises there instead)."""
    n = max(1, len(infos))
    by_type = defaultdict(list)
    for info in infos:
        by_type[info["task_type"]].append(float(info["won"]))
    steps = [sample for trajectory in trajectories for sample in trajectory]
    metrics = {
        "success": sum(float(info["won"]) for info in infos) / n,
        "score": sum(float(info["score"]) for info in infos) / n,
        "return": sum(returns) / n,
        "episode_length": len(steps) / n,
        "invalid_rate": sum(not s.valid for s in steps) / max(1, len(steps)),
        "truncated_prompts": sum(s.prompt_truncated for s in steps),
        "tokens": tokens,
        "generate_s": generate_seconds,
        "tokens_per_s": tokens / generate_seconds if generate_seconds > 0 else 0.0,
    }
    for task_type, wins in sorted(by_type.items()):
        metrics[f"success/{task_type}"] = sum(wins) / len(wins)
    return metrics


_TOKEN_TEXTS: dict[int, dict[int, str]] = {}


def action_token_mask(tokenizer, response_ids: list[int], tags: tuple[str, ...]) -> list[int]:
    """1 for each response token whose text overlaps the content of an action block (between `<x>` and
    its closing `</x>`, for each closing tag in `tags`), else 0: which tokens choose the action, as
    opposed to reasoning and format. Token texts are decoded one by one, so a character split across
    tokens counts for the token it ends in."""
    texts = _TOKEN_TEXTS.setdefault(id(tokenizer), {})
    pieces = [texts[token] if token in texts else texts.setdefault(token, tokenizer.decode([token]))
              for token in response_ids]
    ends = [len(piece) for piece in pieces]
    for k in range(1, len(ends)):
        ends[k] += ends[k - 1]
    text, spans = "".join(pieces), []
    for closing in tags:
        opening = closing.replace("</", "<", 1)
        start = text.find(opening)
        while start != -1:
            end = text.find(closing, start + len(opening))
            if end == -1:
                break
            spans.append((start + len(opening), end))
            start = text.find(opening, end + len(closing))
    mask = []
    for k, end in enumerate(ends):
        begin = ends[k - 1] if k else 0
        mask.append(int(any(begin < span_end and end > span_start for span_start, span_end in spans)))
    return mask


def evaluate(model, tokenizer, envs: list[Env], task_indices: list[int], config: RolloutConfig, skill_fn=None,
             progress: str | None = None):
    """One episode per task of a fixed panel (same tasks every evaluation), `len(envs)` tasks at a time;
    returns the episode metrics of the whole panel. `progress`: the label of a bar of episodes played
    (an evaluation of 128 tasks takes long enough that a silent one looks hung)."""
    from tqdm import tqdm

    trajectories, infos, returns, tokens, seconds = [], [], [], 0, 0.0
    with tqdm(total=len(task_indices), desc=progress, unit="episode", leave=False, disable=progress is None) as bar:
        for start in range(0, len(task_indices), max(1, len(envs))):
            chunk = task_indices[start:start + len(envs)]
            seeds = list(range(start, start + len(chunk)))
            played = play_episodes(model, tokenizer, envs[:len(chunk)], seeds, seeds, config, skill_fn, chunk, bar)
            trajectories, infos, returns = trajectories + played[0], infos + played[1], returns + played[2]
            tokens, seconds = tokens + played[3], seconds + played[4]
    return episode_metrics(infos, trajectories, returns, tokens, seconds)
