"""GRPO vs GRPO+OPSD (beta 0) vs SDAR over several seeds, on one fixed evaluation panel.

    python compare.py                                   # embedded agent, CPU, 3 seeds (about 25 min on 2 cores)
    python compare.py --seeds 0,1,2,3,4 --jobs 4 -- --model Qwen/Qwen2.5-0.5B-Instruct --config configs/alfworld.yaml

Each (method, seed) is one `train.py` run in a subprocess (flags after `--` go to every run). All runs
evaluate the same panel (task indices 0..eval_tasks-1 of the eval split), so the methods differ only by
their updates. Writes, under `--out`:
    compare.md    a Markdown table: eval success at the start, at the end and at its best, per method,
                  mean and standard error over seeds, with the command and the commit that produced it
    compare.png   the mean eval-success curve of each method with a band of one standard error
    compare.json  every run's eval curve
and each run's metrics, log and model under `--runs`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.abspath(__file__))
LABELS = {"grpo": "GRPO", "grpo_opsd": "GRPO+OPSD (beta 0)", "sdar": "SDAR (beta 5)"}


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def eval_curve(output_dir: str) -> list[tuple[int, float]]:
    """(iteration, eval/success) rows of one run's metrics.jsonl."""
    with open(os.path.join(output_dir, "metrics.jsonl")) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return [(r["iteration"], r["eval/success"]) for r in rows if "eval/success" in r]


def run_one(method: str, seed: int, runs_dir: str, extra: list[str], threads: int) -> dict:
    output_dir = os.path.join(runs_dir, f"{method}-seed{seed}")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--method", method, "--seed", str(seed),
               "--output_dir", output_dir, "--overwrite", "true", "--plot", "false", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "log.txt"), "w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{method} seed {seed} failed (exit {result.returncode}); see {log.name}")
    curve = eval_curve(output_dir)
    print(f"{method:10s} seed {seed}: eval/success {curve[0][1]:.3f} -> {curve[-1][1]:.3f} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    return {"method": method, "seed": seed, "curve": curve, "seconds": time.perf_counter() - start}


def table(runs: list[dict], methods: list[str]) -> str:
    lines = ["| method | seeds | start | final | best | final - start |", "| --- | --- | --- | --- | --- | --- |"]
    for method in methods:
        curves = [r["curve"] for r in runs if r["method"] == method]
        cells = []
        for pick in (lambda c: c[0][1], lambda c: c[-1][1], lambda c: max(s for _, s in c),
                     lambda c: c[-1][1] - c[0][1]):
            mean, err = mean_stderr([pick(c) for c in curves])
            cells.append(f"{100 * mean:.1f} ± {100 * err:.1f}")
        lines.append(f"| {LABELS.get(method, method)} | {len(curves)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], methods: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        curves = [dict(r["curve"]) for r in runs if r["method"] == method]
        iterations = sorted(set.intersection(*(set(c) for c in curves)))
        stats = [mean_stderr([c[i] for c in curves]) for i in iterations]
        mean = [100 * m for m, _ in stats]
        ax.plot(iterations, mean, marker="o", label=LABELS.get(method, method))
        ax.fill_between(iterations, [m - 100 * e for m, (_, e) in zip(mean, stats)],
                        [m + 100 * e for m, (_, e) in zip(mean, stats)], alpha=0.2)
    ax.set_xlabel("iteration")
    ax.set_ylabel("eval success (%)")
    ax.set_title(f"fixed panel, mean ± s.e. over {len(runs) // len(methods)} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="grpo,grpo_opsd,sdar", help="comma-separated train.py methods")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at the same time (each gets cores/jobs threads)")
    parser.add_argument("--out", default="results", help="folder for the table and the plot")
    parser.add_argument("--runs", default="runs/compare", help="folder for the runs (metrics, logs, models)")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.out, exist_ok=True)
    if not any(a.split("=")[0] == "--model" for a in extra):
        from warmstart import embedded_model_path
        embedded_model_path("alfworld")         # build the shared model once, before the parallel runs
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [pool.submit(run_one, m, s, args.runs, extra, threads) for s in seeds for m in methods]
        runs = [job.result() for job in jobs]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    command = "python compare.py " + " ".join(argv)
    report = (f"# GRPO vs GRPO+OPSD vs SDAR\n\nEval success (%) on the fixed panel, mean ± standard error over "
              f"{len(seeds)} seeds.\n\n{table(runs, methods)}\n\nCommand: `{command}` at commit `{commit or 'unknown'}`, "
              f"{(time.perf_counter() - start) / 60:.1f} min wall time.\n")
    with open(os.path.join(args.out, "compare.md"), "w") as handle:
        handle.write(report)
    with open(os.path.join(args.out, "compare.json"), "w") as handle:
        json.dump({"command": command, "commit": commit, "runs": runs}, handle, indent=1)
    plot(runs, methods, os.path.join(args.out, "compare.png"))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
