"""The embedded default model: a tiny agent warm-started offline by imitating two built-in experts.

No machine here can download Qwen2.5, and a random tiny model cannot read a prompt, so RL on it shows
nothing. So we build one, once, and ship it in `assets/embedded-alfworld/` (save_pretrained files in
half precision, a MANIFEST.json of their sha256 checksums and of the command that rebuilds them):

    python -m tools.warmstart --out assets/embedded-alfworld   # about 14 minutes on 2 CPU cores

The build:
  1. demonstrations: episodes of the searching expert (`envs/alfworld/explorer.py`), each turn
     rendered exactly as `rollout.py` renders it, answered with `<think>find apple</think><action>..</action>`
     (the thought names what the agent is after, see `thought`). Half of the episodes are shown
     without skills and played by the expert that searches in random order; the other half have the
     privileged skill text in front (before the chat template, as the SDAR teacher sees it, or inside
     the user message, as `--eval_with_skills` shows it) and are played by the expert that searches
     first where things are usually left, the habit the skill text states. So the student (no skills)
     learns to search blindly, and the same weights with the skills in front learn to search the usual
     place first: a self-teacher that really is better where the habit holds. Both see themselves
     recover from slips (see `demonstrations`);
  2. a byte-level BPE tokenizer trained on that text, with a chat template;
  3. a small Qwen2 model trained by next-token prediction on the responses and, with equal weight,
     on the prompts for the first half of the steps (why: see `supervised_finetune`).
The build is deterministic for a given machine and thread count. `embedded.embedded_model_path()` returns the
shipped folder after checking it against its manifest (`embedded.py`): the first `python train.py` builds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

import torch

from config import EMBEDDED_DEFAULTS
from embedded import ASSETS, MANIFEST, sha256

VERSION = 5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository
RECIPES = {
    # env: env kwargs, episodes, chance of a slip per step, share of episodes with skills, model shape,
    # SFT steps, weight of the prompt loss and the steps it is on for, copies of each search move (the
    # turns where the two experts differ), batch size, learning rate, tokenizer vocabulary, prompt format.
    "alfworld": dict(env_kwargs=json.loads(EMBEDDED_DEFAULTS["env_kwargs"]), episodes=1600, slips=0.1,
                     skill_share=0.5, shape="agent", steps=3000, prompt_weight=1.0, prompt_steps=1500,
                     search_repeats=3, batch_size=16, lr=3e-3, vocab_size=1500,
                     history_length=EMBEDDED_DEFAULTS["history_length"], max_turns=EMBEDDED_DEFAULTS["max_turns"]),
}


def demonstrations(env_name: str, episodes: int, slips: float, skill_share: float, seed: int,
                   env_kwargs: dict, history_length: int, max_turns: int) -> list[dict]:
    """Turns of expert episodes: {message, skill, context, think, action}; `skill` is "" (and `context` "")
    for student-format turns, else `context` is "prefix" (the SDAR teacher's prompt) or "in_prompt"
    (the skills inside the user message, as `--eval_with_skills` shows them).

    Both experts know only what the prompt shows (`envs.alfworld.explorer`); the one behind the
    skill-format turns also follows the habit the skills state. With probability `slips` per step the
    agent first slips: it repeats its previous action, which no longer applies ("Nothing happens.",
    a step lost). A slip is not a demonstration, the turn after it is: so the model sees how to carry
    on after a mistake of its own instead of only ever seeing perfect episodes."""
    from envs import env_module, make_env
    from envs.alfworld.explorer import explorer
    from envs.skills import load_skills, retrieve_skills

    rng, slip_rng = random.Random(seed), random.Random(seed + 1)
    env, module, skills = make_env(env_name, **env_kwargs), env_module(env_name), load_skills(env_name)
    turns = []
    for episode in range(episodes):
        observation, info = env.reset(seed=rng.randrange(2**31), split="train")
        with_skill = rng.random() < skill_share
        skill = retrieve_skills(skills, module.skill_category(info["task_description"]))[0] if with_skill else ""
        context = rng.choice(["prefix", "in_prompt"]) if with_skill else ""
        goal = env.privileged()["goal"]
        act = explorer(goal, rng, follow_habits=with_skill)
        history, holding, previous = [], False, None
        for _ in range(max_turns):
            if previous is not None and slip_rng.random() < slips:
                action = previous
            else:
                message = env.render_prompt(observation, history, info, history_length)
                action = previous = act(observation, info)
                turns.append({"message": message, "skill": skill, "context": context,
                              "think": thought(goal, holding), "action": action})
                holding = action.startswith("take ") or (holding and not action.startswith("move "))
            history.append((observation, action))
            observation, _, done, info = env.step(action)
            if done:
                break
    return turns


def thought(goal: dict, holding: bool) -> str:
    """The demonstrations' reasoning: what the agent is after now ("find apple", "find desklamp",
    "put in countertop"), the same for both experts. Why: a model this small then reads its sub-goal
    from the few tokens it just wrote, instead of working it out from the whole prompt at every step
    (it otherwise kept taking an object it already held)."""
    if not holding:
        return f"find {goal['obj_type'].lower()}"
    if goal["toggle_type"]:
        return f"find {goal['toggle_type'].lower()}"
    return f"put in {goal['recep_type'].lower()}"


def is_search(turn: dict) -> bool:
    """A move to a place while looking for something: where following the habit changes the action."""
    return turn["action"].startswith("go to ") and turn["think"].startswith("find ")


def response_text(turn: dict) -> str:
    return f"<think>{turn['think']}</think><action>{turn['action']}</action>"


def render_example(tokenizer, turn: dict) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one demonstration turn, in the rollout's / teacher's format."""
    from prompts import render_chat, teacher_prompt_text

    prompt = (teacher_prompt_text(tokenizer, turn["message"], turn["skill"], turn["context"]) if turn["skill"]
              else render_chat(tokenizer, turn["message"]))
    response = response_text(turn)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids, response_ids


def sft_loss(model, input_ids, attention_mask, response_mask, prompt_weight: float):
    """L = mean_response(-log p) + prompt_weight * mean_prompt(-log p); returns (L, response term).

    input_ids, attention_mask `(B, P+T)` and response_mask `(B, T)` as `opsd.pack_batch` lays them out
    (left-padded prompts). A prompt's first token has no context and is not predicted."""
    from opsd import token_logprobs

    T = response_mask.shape[1]
    if prompt_weight == 0:                      # the output head over the response only: much cheaper
        logp, _ = token_logprobs(model, input_ids, attention_mask, T, chunk_size=None)    # (B, T)
        response_loss = -(logp * response_mask).sum() / response_mask.sum()
        return response_loss, response_loss
    logp, _ = token_logprobs(model, input_ids, attention_mask, input_ids.shape[1] - 1, chunk_size=None)  # (B, P+T-1)
    prompt_mask = (attention_mask[:, 1:-T] * attention_mask[:, :-T - 1]).to(logp.dtype)  # (B, P-1) real token after a real one
    response_loss = -(logp[:, -T:] * response_mask).sum() / response_mask.sum()
    prompt_loss = -(logp[:, :-T] * prompt_mask).sum() / prompt_mask.sum().clamp(min=1)
    return response_loss + prompt_weight * prompt_loss, response_loss


def supervised_finetune(model, examples, steps: int, batch_size: int, lr: float, seed: int,
                        prompt_weight: float = 0.0, prompt_steps: int | None = None, log_every: int = 50,
                        print_every: int = 0):
    """Next-token loss on the responses, plus `prompt_weight` x the loss on the prompts during the
    first `prompt_steps` steps (None: all of them); returns the list of (step, response loss).

    Why the prompt term: acting means copying an admissible action from the prompt, and a tiny model
    learns to copy (an induction head) only after many steps when it sees the ~15 response tokens
    alone; the prompts repeat names all over (task, observations, action list), so predicting them
    too makes the copying circuit appear several times sooner. Once it has, the responses alone
    teach the rest (which place to search first) faster, and at half the cost. Each step trains on
    one bucket of examples of similar length (drawn at random), so little compute goes into padding."""
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
        weight = prompt_weight if prompt_steps is None or step < prompt_steps else 0.0
        loss, response_loss = sft_loss(model, ids, attn, mask, weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == steps - 1:
            history.append((step, response_loss.item()))
        if print_every and step % print_every == 0:
            print(f"  step {step}/{steps}: response loss {response_loss.item():.3f}", flush=True)
    return history


def build_embedded_model(env_name: str, out_dir: str, seed: int = 0, half: bool = True, print_every: int = 0,
                         **overrides) -> dict:
    """Collect demonstrations, train the tokenizer and the model, save both (float16 weights when
    `half`); returns a summary, also written to warmstart.json."""
    from prompts import PRIVILEGED_HEADER
    from tools.tinymodel import build_tokenizer, tiny_model

    recipe = {**RECIPES[env_name], **overrides}
    start = time.perf_counter()
    torch.manual_seed(seed)
    turns = demonstrations(env_name, recipe["episodes"], recipe["slips"], recipe["skill_share"], seed,
                           recipe["env_kwargs"], recipe["history_length"], recipe["max_turns"])
    corpus = [t["message"] for t in turns] + [PRIVILEGED_HEADER + t["skill"] for t in turns if t["skill"]]
    corpus += [response_text(t) for t in turns]
    tokenizer = build_tokenizer(corpus, vocab_size=recipe["vocab_size"],
                                extra_tokens=("<think>", "</think>", "<action>", "</action>"))
    examples = [render_example(tokenizer, t) for t in turns
                for _ in range(recipe["search_repeats"] if is_search(t) else 1)]
    model = tiny_model(tokenizer, shape=recipe["shape"], seed=seed)
    losses = supervised_finetune(model, examples, recipe["steps"], recipe["batch_size"], recipe["lr"], seed,
                                 recipe["prompt_weight"], recipe["prompt_steps"], print_every=print_every)
    model.eval()
    summary = {"version": VERSION, "env": env_name, "recipe": recipe, "seed": seed, "turns": len(turns),
               "skill_turns": sum(bool(t["skill"]) for t in turns),
               "parameters": sum(p.numel() for p in model.parameters()), "losses": losses,
               "mean_prompt_tokens": sum(len(p) for p, _ in examples) / len(examples),
               "dtype": "float16" if half else "float32", "threads": torch.get_num_threads(),
               "torch": torch.__version__, "build_seconds": time.perf_counter() - start}
    os.makedirs(out_dir, exist_ok=True)
    (model.half() if half else model).save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "warmstart.json"), "w") as handle:
        json.dump(summary, handle, indent=1)
    return summary


def final_loss(losses: list[tuple[int, float]]) -> float:
    """Mean response loss over the last tenth of the steps (one batch alone is noisy)."""
    last = losses[-1][0]
    tail = [loss for step, loss in losses if step >= 0.9 * last]
    return sum(tail) / len(tail)


def write_manifest(folder: str, command: str, summary: dict) -> dict:
    """MANIFEST.json: the sha256 of every file the build wrote, the command that rebuilds them, the commit
    of the code that ran it (the demonstrations are rendered by `opsd` and the envs, so a later commit
    may build another model) and the build's key numbers (a README.md next to them is not checked)."""
    names = sorted(n for n in os.listdir(folder) if n not in (MANIFEST, "README.md"))
    manifest = {"version": summary["version"], "command": command, "commit": source_commit(),
                "files": {n: sha256(os.path.join(folder, n)) for n in names},
                "bytes": sum(os.path.getsize(os.path.join(folder, n)) for n in names),
                "parameters": summary["parameters"], "dtype": summary["dtype"],
                "build_seconds": round(summary["build_seconds"], 1), "threads": summary["threads"],
                "final_response_loss": round(final_loss(summary["losses"]), 4), "torch": summary["torch"]}
    with open(os.path.join(folder, MANIFEST), "w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.write("\n")
    return manifest


def source_commit() -> str:
    """The short commit of this checkout, with "+changes" when the working tree differs from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the embedded agent and its manifest (see the module docstring).")
    parser.add_argument("--env", default="alfworld", choices=sorted(RECIPES))
    parser.add_argument("--out", default=ASSETS["alfworld"], help="folder for the save_pretrained files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="SFT steps (default: the recipe's)")
    args = parser.parse_args(argv)
    overrides = {} if args.steps is None else {"steps": args.steps}
    command = "python -m " + " ".join(["tools.warmstart", *(sys.argv[1:] if argv is None else argv)])
    print(f"building the embedded {args.env} agent into {args.out} ({torch.get_num_threads()} threads) ...", flush=True)
    summary = build_embedded_model(args.env, args.out, seed=args.seed, print_every=250, **overrides)
    manifest = write_manifest(args.out, command, summary)
    print(f"{summary['parameters']:,} parameters, {manifest['bytes'] / 1e6:.2f} MB, SFT response loss over the "
          f"last tenth {manifest['final_response_loss']:.3f}, {manifest['build_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
