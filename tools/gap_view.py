"""Where does the teacher disagree? A page of a few episodes with every response token shaded by the gap.

    python -m tools.gap_view runs/embedded                       # the run's final weights, 4 episodes
    python -m tools.gap_view runs/embedded --checkpoint start    # the weights the run started from

Plays `--episodes` training episodes with the run's own settings (config.json), scores them as one
training iteration does (`experience.build_experience`: the student's and the teacher's log-probs of the
student's sampled tokens), and writes RUN/gap_view.html: per turn the observation the agent answered and
its response, each token coloured by the gap delta = teacher_logp - student_logp (green: the teacher,
which sees the skills, finds the token more likely; red: less likely), action tokens underlined, and the
gate g = sigmoid(beta delta) and the gap in each token's tooltip. It shows what the metrics summarise:
the signal sits on a few action tokens, and the words around them carry next to none.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import json
import os
import sys

import torch

from config import TrainConfig, env_kwargs_of
from diagnostics import action_masks
from embedded import embedded_model_path
from envs import make_env
from envs.skills import SkillPicker
from experience import build_experience
from rollout import rollout
from train import load_model, rollout_config, task_seed

STYLE = """body { font-family: sans-serif; max-width: 1000px; margin: 2em auto; color: #222; }
.episode { border: 1px solid #ccc; border-radius: 6px; padding: 0.6em 1em; margin-bottom: 1.2em; }
.won { border-left: 6px solid #2a2; } .lost { border-left: 6px solid #c33; }
.observation { color: #555; font-size: 0.85em; white-space: pre-wrap; margin: 0.4em 0; }
.response { font-family: monospace; font-size: 1.0em; line-height: 1.9; }
.token { padding: 1px 0; border-radius: 2px; white-space: pre-wrap; }
.action { text-decoration: underline; text-decoration-thickness: 2px; }
.legend span { padding: 2px 6px; margin-right: 4px; font-family: monospace; }"""


def colour(gap: float, scale: float = 2.0) -> str:
    """Background of a token: green for a positive gap, red for a negative one, full at |gap| >= scale."""
    strength = min(1.0, abs(gap) / scale)
    red, green = (255, int(255 * (1 - strength))) if gap < 0 else (int(255 * (1 - strength)), 255)
    blue = int(255 * (1 - strength))
    return f"rgb({red},{green},{blue})"


def token_spans(tokenizer, response_ids: list[int], gaps: list[float], action: list[bool], beta: float) -> str:
    """One <span> per response token, shaded by its gap, with the gap and the gate in its tooltip."""
    spans = []
    for token, gap, is_action in zip(response_ids, gaps, action):
        gate = 1.0 / (1.0 + pow(2.718281828459045, -beta * gap))
        text = html.escape(tokenizer.decode([token]))
        spans.append(f'<span class="token{" action" if is_action else ""}" style="background:{colour(gap)}" '
                     f'title="gap {gap:+.3f} nats, gate {gate:.3f}">{text}</span>')
    return "".join(spans)


def render(cfg: TrainConfig, tokenizer, samples, experience, label: str) -> str:
    """The whole page: a legend, then each episode's turns with their shaded responses."""
    T = experience.response_mask.shape[1]
    gaps = (experience.teacher_logp - experience.old_logp).cpu()                  # (N, T)
    action = action_masks(tokenizer, samples, cfg.env_name, T)                    # (N, T)
    legend = "".join(f'<span style="background:{colour(g)}">{g:+.1f}</span>' for g in (-2, -1, -0.5, 0, 0.5, 1, 2))
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>gap view: {html.escape(label)}</title>"
             f"<style>{STYLE}</style></head><body><h1>Where the teacher disagrees</h1>"
             f"<p>{html.escape(label)}. Each response token is shaded by the gap teacher_logp - student_logp "
             f"(nats; the teacher is the same weights with the skills in its prompt). Action tokens are "
             f"underlined; hover a token for its gap and its gate g = sigmoid({cfg.beta:g} gap).</p>"
             f"<p class='legend'>gap: {legend}</p>"]
    by_episode = {}
    for row, sample in enumerate(samples):
        by_episode.setdefault(sample.traj_id, []).append(row)
    for traj, rows in by_episode.items():
        first = samples[rows[0]]
        outcome = "won" if first.won else "lost"
        total_action_gap = float(sum(gaps[r][action[r]].sum() for r in rows))
        parts.append(f"<div class='episode {outcome}'><h3>episode {traj}: {outcome}, return {first.episode_return:g}, "
                     f"{len(rows)} turns, summed action-token gap {total_action_gap:+.2f}</h3>")
        for row in rows:
            sample = samples[row]
            n = len(sample.response_ids)
            observation = sample.user_message.strip().splitlines()[-6:]          # the end: the current state
            parts.append(f"<div class='observation'>turn {sample.turn}: ...{html.escape(chr(10).join(observation))}</div>"
                         f"<div class='response'>{token_spans(tokenizer, sample.response_ids, gaps[row, :n].tolist(), action[row, :n].tolist(), cfg.beta)}</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder (with config.json) written by train.py")
    parser.add_argument("--checkpoint", default="final", help="final (the run's final/ weights) or start")
    parser.add_argument("--episodes", type=int, default=4, help="episodes to play and show")
    parser.add_argument("--seed", type=int, default=0, help="seeds the task and the sampling")
    parser.add_argument("--out", default=None, help="the page (default RUN/gap_view.html)")
    args = parser.parse_args(argv)
    with open(os.path.join(args.run, "config.json")) as handle:
        saved = json.load(handle)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in saved.items() if k in known})
    cfg = dataclasses.replace(cfg, sdar_coef=cfg.sdar_coef or 1.0, kl_coef=0.0, lora_r=0)   # teacher on, no reference
    start = embedded_model_path(cfg.env_name) if cfg.model == "embedded" else cfg.model
    path = os.path.join(args.run, "final") if args.checkpoint == "final" else start
    tokenizer, model = load_model(cfg, path, torch.device("cpu"))
    torch.manual_seed(args.seed)
    env_kwargs = env_kwargs_of(cfg)
    envs = [make_env(cfg.env_name, cfg.env_backend, **env_kwargs) for _ in range(args.episodes)]
    skills = SkillPicker(cfg.env_name, cfg.skill_retrieval, args.seed, None, cfg.skills_dir)
    seeds = [task_seed(args.seed, 0, episode) for episode in range(args.episodes)]
    samples, _ = rollout(model, tokenizer, envs, seeds, list(range(args.episodes)), rollout_config(cfg), skills)
    experience, _ = build_experience(model, None, tokenizer, samples, torch.zeros(len(samples)), cfg)
    label = (f"run {os.path.basename(os.path.normpath(args.run))}, its {args.checkpoint} weights, {args.episodes} "
             f"training episodes, seed {args.seed}")
    out = args.out or os.path.join(args.run, "gap_view.html")
    with open(out, "w") as handle:
        handle.write(render(cfg, tokenizer, samples, experience, label))
    print(f"wrote {out}: {len(samples)} turns of {args.episodes} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
