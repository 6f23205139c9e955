"""The embedded default model: a tiny agent warm-started offline by imitating a built-in expert.

No machine here can download Qwen2.5, and a random tiny model cannot read a prompt, so RL on it shows
nothing. Instead we build, once, and cache under `~/.cache/sdar/` (or `$SDAR_CACHE`):
  1. demonstrations: episodes of the searching expert (`envs/alfworld/explorer.py`), each turn
     rendered exactly as `rollout.py` renders it, answered with `<think>..</think><action>..</action>`;
  2. a byte-level BPE tokenizer trained on that text, with a chat template;
  3. a small Qwen2 model trained briefly by next-token prediction on the responses and, with equal
     weight, on the prompts (why: see `supervised_finetune`).
The warm start is deliberately partial, so RL has room to improve it: the training is short, and in
demonstrations *without* skills a fraction of the action labels is replaced by a random admissible
action (the env still follows the expert), while demonstrations *with* the privileged skill text in
front (the teacher's exact prompt format) keep clean labels, so the model can learn to act more
surely when it sees the skills. It is saved with `save_pretrained` and loaded by the trainer like any
hub model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time

import torch

from config import EMBEDDED_DEFAULTS

VERSION = 4
RECIPES = {
    # env: env kwargs, episodes, label noise without skills, share of episodes with skills, model shape,
    # SFT steps, weight of the prompt loss, batch size, learning rate, tokenizer vocabulary, prompt format.
    # Noise 0.45: the sampled policy starts far below what the agent knows (26 % success at temperature
    # 1.0 vs 48 % at 0.4), room that RL partly closes in the default's 16 iterations; at 0.15 there was none.
    "alfworld": dict(env_kwargs=json.loads(EMBEDDED_DEFAULTS["env_kwargs"]), episodes=600, noise=0.45,
                     skill_share=0.5, shape="mini", steps=1500, prompt_weight=1.0, batch_size=8, lr=3e-3,
                     vocab_size=1500, history_length=EMBEDDED_DEFAULTS["history_length"],
                     max_turns=EMBEDDED_DEFAULTS["max_turns"]),
}


def cache_root() -> str:
    return os.environ.get("SDAR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "sdar"))


def demonstrations(env_name: str, episodes: int, noise: float, skill_share: float, seed: int,
                   env_kwargs: dict, history_length: int, max_turns: int) -> list[dict]:
    """Turns of expert episodes: {message, skill, action}; `skill` is "" for student-format turns.

    The expert is `envs.alfworld.explorer`: it knows the task sentence but not where things are, so
    every action it takes can be inferred from what the prompt shows (the generator's direct plan
    could not: it walks straight to a hidden object). The environment always follows the expert;
    only the imitated label is replaced by noise."""
    from envs import env_module, make_env
    from envs.alfworld.explorer import explorer
    from envs.skills import load_skills, retrieve_skills

    rng, noise_rng = random.Random(seed), random.Random(seed + 1)   # the noise never changes the episodes
    env, module, skills = make_env(env_name, **env_kwargs), env_module(env_name), load_skills(env_name)
    turns = []
    for episode in range(episodes):
        observation, info = env.reset(seed=rng.randrange(2**31), split="train")
        with_skill = rng.random() < skill_share
        skill = retrieve_skills(skills, module.skill_category(info["task_description"]))[0] if with_skill else ""
        act = explorer(env.privileged()["goal"], rng)
        history = []
        for _ in range(max_turns):
            message = env.render_prompt(observation, history, info, history_length)
            action = label = act(observation, info)
            admissible = info.get("admissible_actions") or []
            if not with_skill and admissible and noise_rng.random() < noise:
                label = noise_rng.choice(admissible)
            turns.append({"message": message, "skill": skill, "action": label})
            history.append((observation, action))
            observation, _, done, info = env.step(action)
            if done:
                break
    return turns


def render_example(tokenizer, turn: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one demonstration turn, in the rollout's / teacher's format."""
    from opsd import render_chat, teacher_prompt_text

    prompt = (teacher_prompt_text(tokenizer, turn["message"], turn["skill"]) if turn["skill"]
              else render_chat(tokenizer, turn["message"]))
    response = f"<think>ok</think><action>{turn['action']}</action>"
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, response_ids


def sft_loss(model, input_ids, attention_mask, response_mask, prompt_weight: float):
    """L = mean_response(-log p) + prompt_weight * mean_prompt(-log p); returns (L, response term).

    input_ids, attention_mask `(B, P+T)` and response_mask `(B, T)` as `opsd.pack_batch` lays them out
    (left-padded prompts). A prompt's first token has no context and is not predicted."""
    from opsd import token_logprobs

    T = response_mask.shape[1]
    logp, _ = token_logprobs(model, input_ids, attention_mask, input_ids.shape[1] - 1, chunk_size=None)  # (B, P+T-1)
    prompt_mask = (attention_mask[:, 1:-T] * attention_mask[:, :-T - 1]).to(logp.dtype)  # (B, P-1) real token after a real one
    response_loss = -(logp[:, -T:] * response_mask).sum() / response_mask.sum()
    prompt_loss = -(logp[:, :-T] * prompt_mask).sum() / prompt_mask.sum().clamp(min=1)
    return response_loss + prompt_weight * prompt_loss, response_loss


def supervised_finetune(model, examples, steps: int, batch_size: int, lr: float, seed: int,
                        prompt_weight: float = 0.0, log_every: int = 50):
    """Next-token loss on the responses (plus `prompt_weight` x the loss on the prompts); returns
    the list of (step, response loss).

    Why the prompt term: acting means copying an admissible action from the prompt, and a tiny model
    learns to copy (an induction head) only after many steps when it sees the ~15 response tokens
    alone; the prompts repeat names all over (task, observations, action list), so predicting them
    too makes the copying circuit appear several times sooner. Each step trains on one bucket of
    examples of similar length (drawn at random), so little compute goes into padding."""
    from opsd import pack_batch

    generator = random.Random(seed)
    by_length = sorted(examples, key=lambda e: len(e[0]) + len(e[1]))
    buckets = [by_length[i:i + batch_size] for i in range(0, len(by_length), batch_size)]  # little padding
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * max(0.1, 1 - s / steps))
    model.train()
    history = []
    for step in range(steps):
        batch = generator.choice(buckets)
        ids, attn, mask = pack_batch([p for p, _ in batch], [r for _, r in batch], pad_id=0)
        loss, response_loss = sft_loss(model, ids, attn, mask, prompt_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps - 1:
            history.append((step, response_loss.item()))
    return history


def build_embedded_model(env_name: str, out_dir: str, seed: int = 0, **overrides) -> dict:
    """Collect demonstrations, train the tokenizer and the model, save both; returns a summary."""
    from tinymodel import build_tokenizer, tiny_model

    recipe = {**RECIPES[env_name], **overrides}
    start = time.perf_counter()
    torch.manual_seed(seed)
    turns = demonstrations(env_name, recipe["episodes"], recipe["noise"], recipe["skill_share"], seed,
                           recipe["env_kwargs"], recipe["history_length"], recipe["max_turns"])
    corpus = [t["message"] for t in turns] + [t["skill"] for t in turns if t["skill"]]
    corpus += [f"<think>ok</think><action>{t['action']}</action>" for t in turns]
    tokenizer = build_tokenizer(corpus, vocab_size=recipe["vocab_size"],
                                extra_tokens=("<think>", "</think>", "<action>", "</action>"))
    examples = [render_example(tokenizer, t) for t in turns]
    model = tiny_model(tokenizer, shape=recipe["shape"], seed=seed)
    losses = supervised_finetune(model, examples, recipe["steps"], recipe["batch_size"], recipe["lr"], seed,
                                 recipe["prompt_weight"])
    model.eval()
    summary = {"version": VERSION, "env": env_name, "recipe": recipe, "turns": len(turns),
               "parameters": sum(p.numel() for p in model.parameters()), "losses": losses,
               "mean_prompt_tokens": sum(len(p) for p, _ in examples) / len(examples),
               "build_seconds": time.perf_counter() - start}
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "warmstart.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def embedded_model_path(env_name: str = "alfworld") -> str:
    """The cached embedded model folder for an env, built on first use (about a minute on a laptop CPU)."""
    if env_name not in RECIPES:
        raise ValueError(f"model=embedded exists for {', '.join(RECIPES)} only; give --model for {env_name}")
    final = os.path.join(cache_root(), f"embedded-{env_name}-v{VERSION}")
    if os.path.isfile(os.path.join(final, "warmstart.json")):
        return final
    os.makedirs(cache_root(), exist_ok=True)
    print(f"building the embedded {env_name} agent once (cached in {final}) ...", flush=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=cache_root())
    summary = build_embedded_model(env_name, tmp)
    if os.path.isdir(final):                    # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)
    print(f"embedded agent ready: {summary['parameters']:,} parameters, final SFT loss "
          f"{summary['losses'][-1][1]:.3f}, {summary['build_seconds']:.0f} s", flush=True)
    return final
