"""The embedded default model: a tiny agent warm-started offline by imitating the built-in expert.

No machine here can download Qwen2.5, and a random tiny model cannot read a prompt, so RL on it shows
nothing. Instead we build, once, and cache under `~/.cache/sdar/` (or `$SDAR_CACHE`):
  1. demonstrations: expert episodes of a built-in environment, each turn rendered exactly as
     `rollout.py` renders it, answered with `<think>..</think><action>expert action</action>`;
  2. a byte-level BPE tokenizer trained on that text, with a chat template;
  3. a small Qwen2 model trained briefly by next-token prediction on the responses.
The warm start is deliberately partial, so RL has room to improve it: in demonstrations *without*
skills a fraction of the action labels is replaced by a random admissible action (the env still
follows the expert), while demonstrations *with* the privileged skill text in front (the teacher's
exact prompt format) keep clean labels. The model therefore learns to act better when it sees the
skills, which is what makes its self-teacher better than its student, as for a real instruct model.
It is saved with `save_pretrained` and loaded by the trainer like any hub model.
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

VERSION = 2
RECIPES = {
    # env: env kwargs, episodes, label noise without skills, share of episodes with skills, model shape, steps
    "alfworld": dict(env_kwargs=json.loads(EMBEDDED_DEFAULTS["env_kwargs"]), episodes=600, noise=0.3,
                     skill_share=0.5, shape="mini", steps=1500, batch_size=8, lr=3e-3, vocab_size=1500,
                     history_length=EMBEDDED_DEFAULTS["history_length"], detours=2),
}


def cache_root() -> str:
    return os.environ.get("SDAR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "sdar"))


def demonstrations(env_name: str, episodes: int, noise: float, skill_share: float, seed: int,
                   env_kwargs: dict, history_length: int, detours: int = 0) -> list[dict]:
    """Turns of expert episodes: {message, skill, action}; `skill` is "" for student-format turns.

    The expert knows where the target is; the student cannot. So each episode first visits up to
    `detours` wrong places (executed, not imitated: those turns are labelled with the expert's first
    move), which teaches the model to keep looking instead of stalling after a wrong guess.
    """
    from envs import env_module, make_env
    from envs.skills import load_skills, retrieve_skills

    rng, noise_rng = random.Random(seed), random.Random(seed + 1)   # the noise never changes the episodes
    env, module, skills = make_env(env_name, **env_kwargs), env_module(env_name), load_skills(env_name)
    turns = []
    for episode in range(episodes):
        observation, info = env.reset(seed=rng.randrange(2**31), split="train")
        with_skill = rng.random() < skill_share
        skill = retrieve_skills(skills, module.skill_category(info["task_description"]))[0] if with_skill else ""
        plan = env.privileged()["expert_plan"]
        wrong = [a for a in info.get("admissible_actions") or [] if a.startswith("go to ") and a != plan[0]]
        executed = rng.sample(wrong, min(len(wrong), rng.randint(0, detours))) + list(plan)
        labels = [plan[0]] * (len(executed) - len(plan)) + list(plan)
        history = []
        for action, label in zip(executed, labels):
            message = env.render_prompt(observation, history, info, history_length)
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


def supervised_finetune(model, examples, steps: int, batch_size: int, lr: float, seed: int, log_every: int = 50):
    """Next-token loss on the response tokens only; returns the list of (step, loss).

    Each step trains on one bucket of examples of similar length (drawn at random), so little compute
    goes into padding."""
    from opsd import pack_batch, token_logprobs

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
        logp, _ = token_logprobs(model, ids, attn, mask.shape[1], chunk_size=None)  # (B, T)
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps - 1:
            history.append((step, loss.item()))
    return history


def build_embedded_model(env_name: str, out_dir: str, seed: int = 0, **overrides) -> dict:
    """Collect demonstrations, train the tokenizer and the model, save both; returns a summary."""
    from tinymodel import build_tokenizer, tiny_model

    recipe = {**RECIPES[env_name], **overrides}
    start = time.perf_counter()
    torch.manual_seed(seed)
    turns = demonstrations(env_name, recipe["episodes"], recipe["noise"], recipe["skill_share"], seed,
                           recipe["env_kwargs"], recipe["history_length"], recipe["detours"])
    corpus = [t["message"] for t in turns] + [t["skill"] for t in turns if t["skill"]]
    corpus += [f"<think>ok</think><action>{t['action']}</action>" for t in turns]
    tokenizer = build_tokenizer(corpus, vocab_size=recipe["vocab_size"],
                                extra_tokens=("<think>", "</think>", "<action>", "</action>"))
    examples = [render_example(tokenizer, t) for t in turns]
    model = tiny_model(tokenizer, shape=recipe["shape"], seed=seed)
    losses = supervised_finetune(model, examples, recipe["steps"], recipe["batch_size"], recipe["lr"], seed)
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
