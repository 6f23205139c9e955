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

from envs.base import Env
from generation import STOP_TAGS, generate_responses
from prompts import privileged_message, render_chat, teacher_prompt_text


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
