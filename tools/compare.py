"""GRPO vs GRPO+OPSD (beta 0) vs SDAR over several seeds, on one fixed evaluation panel; and a grid
over the paper's ablations at toy scale.

    python -m tools.compare                                   # embedded agent, CPU, 3 seeds
    python -m tools.compare --grid                            # beta x lambda x skill reliability, 3 seeds
    python -m tools.compare --seeds 0,1,2,3,4 --jobs 4 -- --model Qwen/Qwen2.5-0.5B-Instruct --config configs/alfworld.yaml

Each run is one `train.py` run in a subprocess (flags after `--` go to every run). All runs evaluate
the same panel (task indices 0..eval_tasks-1 of the eval split), so the methods differ only by their
updates. Writes, under `--out`:
    compare.md / grid.md    a Markdown table (mean ± standard error over seeds) with the command and
                            the commit that produced it
    compare.png / grid.png  the mean eval-success curves; the grid adds what the gate did: the
                            distribution of the gap and of the gate over tokens, action tokens vs the rest
    compare.json / grid.json  every run's summary
and each run's metrics, log and model under `--runs`.

The grid (`--grid`): for each skill reliability (the built-in ALFWorld's `prior_strength`, how often an
object is where the skills say), GRPO as the reference and SDAR at every beta x lambda (`sdar_coef`);
beta 0 is GRPO+OPSD. It reads, from each run's output_dir, row 0's `eval/teacher_success` (the same
weights with the skills shown), the per-iteration `sdar/{gate_mean,gap_mean,gate_active}/{action,other}`
means and the histograms in `gate_hist.jsonl`.
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

from tools.warmstart import source_commit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository
LABELS = {"grpo": "GRPO", "grpo_opsd": "GRPO+OPSD (beta 0)", "sdar": "SDAR (beta 5)"}
GATE_KEYS = tuple(f"sdar/{stat}/{part}" for stat in ("gate_mean", "gap_mean", "gate_active")
                  for part in ("action", "other"))
HIST_KEYS = ("gap_action", "gap_other", "gate_action", "gate_other")


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n); 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def read_jsonl(path: str) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def eval_curve(output_dir: str) -> list[tuple[int, float]]:
    """(iteration, eval/success) rows of one run's metrics.jsonl."""
    rows = read_jsonl(os.path.join(output_dir, "metrics.jsonl"))
    return [(r["iteration"], r["eval/success"]) for r in rows if "eval/success" in r]


def sum_histograms(rows: list[dict]) -> dict | None:
    """The gate_hist.jsonl rows of a run added up over iterations (edges from the first row)."""
    if not rows:
        return None
    total = {"gap_edges": rows[0]["gap_edges"], "gate_edges": rows[0]["gate_edges"]}
    for key in HIST_KEYS:
        total[key] = [sum(counts) for counts in zip(*(r[key] for r in rows))]
    return total


def read_run(output_dir: str) -> dict:
    """What the tables and figures need from one run: the eval curve, the teacher's success at the
    start (None if not logged), each gate statistic averaged over iterations, the summed histograms."""
    rows = read_jsonl(os.path.join(output_dir, "metrics.jsonl"))
    start = next((r for r in rows if r["iteration"] == 0 and "eval/success" in r), {})
    gate = {}
    for key in GATE_KEYS:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        gate[key] = sum(values) / len(values) if values else None
    hist_path = os.path.join(output_dir, "gate_hist.jsonl")
    return {"curve": [(r["iteration"], r["eval/success"]) for r in rows if "eval/success" in r],
            "teacher_start": start.get("eval/teacher_success"), "gate": gate,
            "hist": sum_histograms(read_jsonl(hist_path)) if os.path.isfile(hist_path) else None}


def run_one(name: str, args: list[str], runs_dir: str, threads: int) -> dict:
    """One train.py run into runs_dir/name (replacing an earlier one); its `read_run` summary."""
    output_dir = os.path.join(runs_dir, name)
    command = [sys.executable, os.path.join(ROOT, "train.py"), *args, "--output_dir", output_dir,
               "--overwrite", "true", "--plot", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "log.txt"), "w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {result.returncode}); see {log.name}")
    summary = {"name": name, **read_run(output_dir), "seconds": time.perf_counter() - start}
    curve = summary["curve"]
    print(f"{name}: eval/success {curve[0][1]:.3f} -> {curve[-1][1]:.3f} ({summary['seconds']:.0f} s)", flush=True)
    return summary


def pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± s.e.' of values times scale; 'n/a' when there are none."""
    if not values:
        return "n/a"
    mean, err = mean_stderr(values)
    return f"{scale * mean:.{digits}f} ± {scale * err:.{digits}f}"


def table(runs: list[dict], methods: list[str]) -> str:
    """One row per method: eval success at the start, at the end, at its best, the gain, and the
    teacher's success at the start (the same weights with the skills shown) minus the student's."""
    lines = ["| method | seeds | start | final | best | final - start | teacher - student (start) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method in methods:
        chosen = [r for r in runs if r["method"] == method]
        curves = [r["curve"] for r in chosen]
        cells = [pm([pick(c) for c in curves]) for pick in (
            lambda c: c[0][1], lambda c: c[-1][1], lambda c: max(s for _, s in c), lambda c: c[-1][1] - c[0][1])]
        cells.append(pm([r["teacher_start"] - r["curve"][0][1] for r in chosen if r.get("teacher_start") is not None]))
        lines.append(f"| {LABELS.get(method, method)} | {len(curves)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], methods: list[str], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        curve_band(ax, [r["curve"] for r in runs if r["method"] == method], LABELS.get(method, method))
    ax.set_xlabel("iteration")
    ax.set_ylabel("eval success (%)")
    ax.set_title(f"fixed panel, mean ± s.e. over {len(runs) // len(methods)} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def curve_band(ax, curves: list[list[tuple[int, float]]], label: str) -> None:
    """Mean eval-success curve (%) over runs with a band of one standard error."""
    curves = [dict(c) for c in curves]
    iterations = sorted(set.intersection(*(set(c) for c in curves)))
    stats = [mean_stderr([c[i] for c in curves]) for i in iterations]
    mean = [100 * m for m, _ in stats]
    ax.plot(iterations, mean, marker="o", label=label)
    ax.fill_between(iterations, [m - 100 * e for m, (_, e) in zip(mean, stats)],
                    [m + 100 * e for m, (_, e) in zip(mean, stats)], alpha=0.2)


# ---------------------------------------------------------------- the grid


def grid_configs(betas: list[float], coefs: list[float]) -> list[dict]:
    """GRPO, then SDAR at every (beta, lambda); beta 0 is GRPO+OPSD."""
    configs = [{"label": "GRPO", "key": "grpo", "beta": None, "coef": None, "args": ["--method", "grpo"]}]
    for beta in betas:
        for coef in coefs:
            label = f"{'GRPO+OPSD' if beta == 0 else 'SDAR'} (beta {beta:g}, lambda {coef:g})"
            configs.append({"label": label, "key": f"sdar-b{beta:g}-l{coef:g}", "beta": beta, "coef": coef,
                            "args": ["--method", "sdar", "--beta", str(beta), "--sdar_coef", str(coef)]})
    return configs


def base_env_kwargs(extra: list[str]) -> tuple[dict, list[str]]:
    """The env kwargs every grid run starts from (an `--env_kwargs` after `--`, else the embedded
    default's when no --model is given) and the extra flags without it."""
    from config import EMBEDDED_DEFAULTS

    if "--env_kwargs" in extra:
        at = extra.index("--env_kwargs")
        return json.loads(extra[at + 1]), extra[:at] + extra[at + 2:]
    embedded = not any(a.split("=")[0] == "--model" for a in extra)
    return (json.loads(EMBEDDED_DEFAULTS["env_kwargs"]) if embedded else {}), extra


def paired_gain(chosen: list[dict], reference: list[dict]) -> list[float]:
    """Final success minus GRPO's final success, seed by seed (same start, same evaluation draws)."""
    by_seed = {r["seed"]: r["curve"][-1][1] for r in reference}
    return [r["curve"][-1][1] - by_seed[r["seed"]] for r in chosen if r["seed"] in by_seed]


def split_cells(chosen: list[dict], stat: str) -> str:
    """'action / other' of one gate statistic, each mean ± s.e. over the runs that logged it."""
    parts = []
    for part in ("action", "other"):
        values = [r["gate"][f"sdar/{stat}/{part}"] for r in chosen if r["gate"][f"sdar/{stat}/{part}"] is not None]
        parts.append(pm(values, scale=1.0, digits=2))
    return " / ".join(parts)


def grid_table(runs: list[dict], configs: list[dict], reliabilities: list[float]) -> str:
    """One row per (reliability, config): teacher - student at the start, start, final, gain, gain
    over GRPO (paired by seed), and the gate and gap means on action tokens / the other tokens."""
    lines = ["| skills right | method | seeds | teacher - student (start) | start | final | final - start "
             "| final - GRPO | gate action / other | gap action / other |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for reliability in reliabilities:
        reference = [r for r in runs if r["reliability"] == reliability and r["config"] == "grpo"]
        for config in configs:
            chosen = [r for r in runs if r["reliability"] == reliability and r["config"] == config["key"]]
            if not chosen:
                continue
            curves = [r["curve"] for r in chosen]
            teacher = [r["teacher_start"] - r["curve"][0][1] for r in chosen if r["teacher_start"] is not None]
            gate, gap = (split_cells(chosen, stat) for stat in ("gate_mean", "gap_mean"))
            gains = "—" if config["key"] == "grpo" else pm(paired_gain(chosen, reference))
            cells = [f"{100 * reliability:.0f} %", config["label"], str(len(chosen)), pm(teacher),
                     pm([c[0][1] for c in curves]), pm([c[-1][1] for c in curves]),
                     pm([c[-1][1] - c[0][1] for c in curves]), gains,
                     "—" if config["key"] == "grpo" else gate, "—" if config["key"] == "grpo" else gap]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_plot(runs: list[dict], configs: list[dict], reliabilities: list[float], path: str) -> None:
    """Per reliability (a column): the eval curves of every config; the gap and the gate histograms of
    the SDAR runs (beta > 0, all lambdas, all iterations), action tokens vs the other tokens."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, len(reliabilities), figsize=(5.5 * len(reliabilities), 10), squeeze=False)
    for column, reliability in enumerate(reliabilities):
        curves_ax, gap_ax, gate_ax = axes[:, column]
        for config in configs:
            chosen = [r["curve"] for r in runs if r["reliability"] == reliability and r["config"] == config["key"]]
            if chosen:
                curve_band(curves_ax, chosen, config["label"])
        curves_ax.set_title(f"skills right {100 * reliability:.0f} % of the time")
        curves_ax.set_xlabel("iteration")
        curves_ax.set_ylabel("eval success (%)")
        curves_ax.grid(alpha=0.3)
        curves_ax.legend(fontsize=7)
        hists = [r["hist"] for r in runs if r["reliability"] == reliability and r["hist"]
                 and (r["beta"] or 0) > 0]
        total = sum_histograms(hists)
        for ax, name in ((gap_ax, "gap"), (gate_ax, "gate")):
            ax.set_xlabel("teacher_logp - student_logp (nats)" if name == "gap" else "gate g")
            ax.set_ylabel("share of tokens")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if total is None:
                ax.set_title(f"{name}: no gate_hist.jsonl")
                continue
            edges = total[f"{name}_edges"]
            for part in ("action", "other"):
                counts = total[f"{name}_{part}"]
                shares = [c / max(1, sum(counts)) for c in counts]
                ax.stairs(shares, edges, label=f"{part} tokens ({sum(counts):,})")
            ax.set_title(f"SDAR (beta > 0): the {name} over tokens")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def run_grid(args, extra: list[str], seeds: list[int], threads: int, argv: list[str]) -> str:
    """Every (reliability, config, seed) run, then grid.md, grid.png and grid.json; returns the report."""
    reliabilities, configs = floats(args.reliabilities), grid_configs(floats(args.betas), floats(args.coefs))
    env_kwargs, extra = base_env_kwargs(extra)
    plan = []
    for reliability in reliabilities:
        kwargs = json.dumps({**env_kwargs, "prior_strength": reliability})
        for seed in seeds:
            for config in configs:
                name = f"{config['key']}-p{reliability:g}-seed{seed}"
                plan.append(({"config": config["key"], "beta": config["beta"], "coef": config["coef"],
                              "reliability": reliability, "seed": seed},
                             [*config["args"], "--seed", str(seed), *extra, "--env_kwargs", kwargs], name))
    print(f"grid: {len(plan)} runs ({len(reliabilities)} reliabilities x {len(configs)} configs x {len(seeds)} seeds), "
          f"{args.jobs} at a time", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [(meta, pool.submit(run_one, name, run_args, args.runs, threads)) for meta, run_args, name in plan]
        runs = [{**meta, **job.result()} for meta, job in jobs]
    command = "python -m tools.compare " + " ".join(argv)
    report = (f"# Ablation grid: beta x lambda x skill reliability\n\nEval success (%) on the fixed panel, "
              f"mean ± standard error over {len(seeds)} seeds. *skills right*: the built-in ALFWorld's "
              f"`prior_strength`, how often an object starts where the skills say. *teacher - student*: "
              f"row 0's `eval/teacher_success - eval/success` (the same weights with the skills shown). "
              f"*final - GRPO*: paired by seed. *gate* / *gap*: per-iteration means of "
              f"`sdar/gate_mean/*` and `sdar/gap_mean/*` (nats), over action tokens / the other tokens.\n\n"
              f"{grid_table(runs, configs, reliabilities)}\n\nCommand: `{command}` at commit `{source_commit()}`, "
              f"{(time.perf_counter() - start) / 60:.1f} min wall time.\n")
    with open(os.path.join(args.out, "grid.md"), "w") as handle:
        handle.write(report)
    with open(os.path.join(args.out, "grid.json"), "w") as handle:
        json.dump({"command": command, "commit": source_commit(), "runs": runs}, handle)
    grid_plot(runs, configs, reliabilities, os.path.join(args.out, "grid.png"))
    return report


def run_methods(args, extra: list[str], seeds: list[int], threads: int, argv: list[str]) -> str:
    """Every (method, seed) run, then compare.md, compare.png and compare.json; returns the report."""
    methods = args.methods.split(",")
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        jobs = [(m, s, pool.submit(run_one, f"{m}-seed{s}", ["--method", m, "--seed", str(s), *extra], args.runs, threads))
                for s in seeds for m in methods]
        runs = [{"method": m, "seed": s, **job.result()} for m, s, job in jobs]
    command = "python -m tools.compare " + " ".join(argv)
    report = (f"# GRPO vs GRPO+OPSD vs SDAR\n\nEval success (%) on the fixed panel, mean ± standard error over "
              f"{len(seeds)} seeds.\n\n{table(runs, methods)}\n\nCommand: `{command}` at commit `{source_commit()}`, "
              f"{(time.perf_counter() - start) / 60:.1f} min wall time.\n")
    with open(os.path.join(args.out, "compare.md"), "w") as handle:
        handle.write(report)
    with open(os.path.join(args.out, "compare.json"), "w") as handle:
        json.dump({"command": command, "commit": source_commit(), "runs": runs}, handle, indent=1)
    plot(runs, methods, os.path.join(args.out, "compare.png"))
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="grpo,grpo_opsd,sdar", help="comma-separated train.py methods")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at the same time (each gets cores/jobs threads)")
    parser.add_argument("--out", default="results", help="folder for the table and the plot")
    parser.add_argument("--runs", default=None, help="folder for the runs (default runs/compare, runs/grid)")
    parser.add_argument("--grid", action="store_true", help="the ablation grid instead of --methods")
    parser.add_argument("--betas", default="0,5", help="grid: gate sharpness values (0 = GRPO+OPSD)")
    parser.add_argument("--coefs", default="0.01,0.1", help="grid: sdar_coef (lambda) values")
    parser.add_argument("--reliabilities", default="0.9,0.1",
                        help="grid: prior_strength values, how often objects are where the skills say")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.runs = args.runs or os.path.join("runs", "grid" if args.grid else "compare")
    seeds = [int(s) for s in args.seeds.split(",")]
    os.makedirs(args.out, exist_ok=True)
    if not any(a.split("=")[0] == "--model" for a in extra):
        from embedded import embedded_model_path
        embedded_model_path("alfworld")         # a damaged shipped model fails here, once, not in every run
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    run = run_grid if args.grid else run_methods
    print(run(args, extra, seeds, threads, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
