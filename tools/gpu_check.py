"""Before spending GPU-hours: one command that runs the real-size path end to end and writes one JSON.

    python -m tools.gpu_check --out results/gpu                                  # one GPU, about 8 min
    python -m tools.gpu_check --device cpu --shape qwen2.5-0.5b --out results/cpu-real-shape   # CPU rehearsal
    python -m tools.gpu_check --device cpu --shape tiny --budget_s 300 --out /tmp/check        # what CI runs

Nothing is downloaded: the model is random weights of a named shape (`tools/tinymodel.SHAPES`; at
qwen2.5-0.5b with Qwen's 151,936-token vocabulary) and a tokenizer trained on the built-in envs' text.
Sections, in order, each skipped (and said so) once `--budget_s` is spent:

  train          `train.py` end to end on the built-in ALFWorld with the paper's coefficients (SDAR, KL to the
                 reference model, entropy), once per `--precisions` x `--fast_decode` setting: per-phase seconds
                 and peak memory (`perf/*`), decode tokens/s, and the first mini-batch's `approx_kl` and
                 `clip_frac`. That mini-batch runs at the rollout weights, so both should be about 0 (targets
                 1e-3 and 1 %): more means the scoring and training forwards disagree numerically.
  greedy         the fast decode path (static cache, compiled step) against the plain dynamic cache under greedy
                 decoding: the same tokens, or a divergence only where the two chosen tokens' logits tie.
  teacher_cache  teacher log-probs with and without the shared-prefix cache (`teacher_cache.py`): under float32
                 within 1e-4; under bf16 no further from the plain pass than bf16 itself is from float32.
  decode         `tools/bench.py`'s decode: ms per step of plain `generate` against fast decode (targets on CUDA:
                 5x at 64 rows, 3x at 256).
  micro_step     `tools/bench.py`'s SDAR micro-step (forward+backward+AdamW) at `--micro_rows` x `--micro_len`
                 tokens, chunked log-probs, gradient checkpointing: peak memory (target on CUDA <= 24 GiB),
                 tokens/s, and model FLOP utilisation where the GPU's peak is known.
  estimate       (for a CPU rehearsal) the micro-step's peak at a few small sizes, fitted linearly in tokens and
                 extrapolated to `--micro_rows` x `--micro_len`, plus the weights of policy and reference.

Writes `<out>/check.json` (the command, the commit, the device, every number, every check with its
target and verdict) and `<out>/check.md` (the checks as a table). Exit code 0 when every check that ran
passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

from tools import bench
from tools.benchlib import load
from tools.checklib import (check, decode_check, device_name, estimate_section, greedy_section, micro_step_section,
                            teacher_cache_section)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("train", "greedy", "teacher_cache", "decode", "micro_step", "estimate")
# option: (CPU default, CUDA default)
DEFAULTS = {
    "budget_s": (3600, 480), "precisions": ("no,bf16", "bf16"), "fast_decode": ("off,on", "on"),
    "tasks": (2, 16), "group": (2, 8), "turns": (2, 4), "new_tokens": (16, 256), "iterations": (1, 2),
    "eval_tasks": (2, 16), "mini_batch": (8, 256), "micro_batch": (4, 8),
    "greedy_rows": (2, 64), "greedy_tokens": (16, 64), "greedy_variants": ("static,compiled", "static,compiled"), "cache_groups": (2, 8), "cache_rows": (2, 8),
    "decode_batches": ("4", "64,256"), "decode_prompt": (128, 1024), "decode_tokens": (16, 128),
    "micro_rows": (16, 16), "micro_len": (2048, 2048), "estimate_lengths": ("512,1024", "512,1024"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for check.json and check.md")
    parser.add_argument("--shape", default="qwen2.5-0.5b", help="tinymodel.SHAPES name of the random model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sections", default=None, help=f"comma-separated, of {', '.join(SECTIONS)} (default: all "
                        "on CUDA; all but decode and micro_step on CPU, where estimate stands in for micro_step)")
    for name, (cpu, cuda) in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=type(cpu), help=f"default {cpu} on CPU, {cuda} on CUDA")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    cuda = args.device == "cuda"
    for name, (cpu_value, cuda_value) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, cuda_value if cuda else cpu_value)
    if args.sections is None:
        args.sections = ",".join(s for s in SECTIONS if cuda or s not in ("decode", "micro_step"))
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def commit() -> str:
    """The checkout's commit, with '+changes' when the work tree differs from it."""
    def git(*words):
        return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


# --- train: the real script -------------------------------------------------------------------------------

def train_flags(args, model_dir: str, output_dir: str, precision: str, fast: str) -> list[str]:
    """One train.py run at the paper's coefficients (preset paper) with this check's small sizes."""
    sizes = {"iterations": args.iterations, "tasks_per_iter": args.tasks, "group_size": args.group,
             "max_turns": args.turns, "max_new_tokens": args.new_tokens, "eval_tasks": args.eval_tasks,
             "mini_batch_size": args.mini_batch, "micro_batch_size": args.micro_batch}
    flags = ["--model", model_dir, "--output_dir", output_dir, "--preset", "paper", "--env_name", "alfworld",
             "--mixed_precision", precision, "--fast_decode", str(fast == "on"), "--eval_every", "0",
             "--eval_teacher", "False", "--plot", "False", "--keep_checkpoints", "1"]
    return flags + [part for name, value in sizes.items() for part in (f"--{name}", str(value))]


def run_train(args, model_dir: str, precision: str, fast: str, seconds_left: float) -> dict:
    """train.py in a subprocess: its first iteration's metrics (per-phase seconds and peak memory), the last
    row's evaluation, its wall time; or the error it stopped with."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, os.path.join(ROOT, "train.py"),
                   *train_flags(args, model_dir, output_dir, precision, fast)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        start = time.perf_counter()
        try:
            result = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True, timeout=max(30.0, seconds_left))     # killed at the timeout
        except subprocess.TimeoutExpired:
            return {"error": f"stopped at the time budget ({seconds_left:.0f} s left)"}
        wall = time.perf_counter() - start
        rows = []
        path = os.path.join(output_dir, "metrics.jsonl")
        if os.path.exists(path):
            rows = [json.loads(line) for line in open(path) if line.strip()]
        if result.returncode != 0 or not rows:
            return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:300],
                    "exit_code": result.returncode}
    first = next(row for row in rows if row["iteration"] == 1)
    keep = [key for key in first if key.startswith(("perf/", "pg/first_minibatch_"))]
    keep += ["train/step_samples", "loss/pg", "loss/kl", "loss/sdar", "grad_norm"]
    return {"wall_s": wall, "first_iteration": {key: first.get(key) for key in keep},
            "eval/success": rows[-1].get("eval/success"), "iterations": rows[-1]["iteration"]}


def train_section(args, model_dir: str, budget, report) -> None:
    for precision in args.precisions.split(","):
        for fast in args.fast_decode.split(","):
            label = f"train {precision} fast_decode={fast}"
            if budget.spent():
                report["skipped"].append(label)
                continue
            result = run_train(args, model_dir, precision, fast, budget.left())
            result.update(precision=precision, fast_decode=fast)
            report["train"].append(result)
            if "error" in result:
                report["checks"].append(check(f"{label}: runs", result["error"], "exit 0", False))
                continue
            first = result["first_iteration"]
            report["checks"] += [
                check(f"{label}: first mini-batch approx_kl", first["pg/first_minibatch_approx_kl"], "< 1e-3",
                      abs(first["pg/first_minibatch_approx_kl"]) < 1e-3),
                check(f"{label}: first mini-batch clip_frac", first["pg/first_minibatch_clip_frac"], "< 0.01",
                      first["pg/first_minibatch_clip_frac"] < 0.01),
                check(f"{label}: eval/success logged", result["eval/success"], "a number",
                      isinstance(result["eval/success"], float))]


class Budget:
    """Seconds left of `--budget_s`, counted from the first check (the model's build is start-up)."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def spent(self) -> bool:
        return self.left() <= 0


def write_report(args, report: dict) -> None:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "check.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    lines = ["| check | value | target | pass |", "| --- | --- | --- | --- |"]
    for item in report["checks"]:
        value = f"{item['value']:.3g}" if isinstance(item["value"], float) else str(item["value"])
        lines.append(f"| {item['name']} | {value} | {item['target']} | {'yes' if item['pass'] else '**no**'} |")
    lines += [f"| skipped at the time budget: {name} | | | |" for name in report["skipped"]]
    with open(os.path.join(args.out, "check.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    from transformers.utils import logging
    logging.disable_progress_bar()
    import accelerate
    import transformers

    device = torch.device(args.device)
    sections = args.sections.split(",")
    report = {"command": "python -m tools.gpu_check " + " ".join(args.argv), "commit": commit(),
              "device": device_name(device), "shape": args.shape, "budget_s": args.budget_s,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "accelerate": accelerate.__version__},
              "checks": [], "skipped": [], "train": [], "greedy": [], "teacher_cache": [], "estimate": []}
    with tempfile.TemporaryDirectory() as model_dir:
        start = time.perf_counter()
        bench.save_random_model(SimpleNamespace(shape=args.shape, vocab_size=None), model_dir)
        report["startup_s"] = time.perf_counter() - start
        budget = Budget(args.budget_s)
        for section in sections:
            if budget.spent() and section != "train":
                report["skipped"].append(section)
                continue
            print(f"gpu_check: {section} ({budget.left():.0f} s of the budget left)", flush=True)
            if section == "train":
                train_section(args, model_dir, budget, report)
            elif section in ("greedy", "teacher_cache"):
                tokenizer, model = load(model_dir, device, torch.float32)
                if section == "greedy":
                    for precision in args.precisions.split(","):
                        greedy_section(args, model, tokenizer, precision, report)
                else:
                    teacher_cache_section(args, model, tokenizer, report)
                del model
                bench.release_memory(device)
            elif section == "decode":
                decode_check(args, model_dir, report)
            elif section == "micro_step":
                micro_step_section(args, model_dir, report)
            else:
                estimate_section(args, model_dir, report)
        report["checks_s"] = time.perf_counter() - budget.start
    write_report(args, report)
    return 0 if all(item["pass"] for item in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
