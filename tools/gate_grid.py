"""Does the gate help? GRPO against the distillation term where GRPO is short of signal, over paired seeds.

    python -m tools.gate_grid                                  # embedded agent, CPU, 3 seeds, 3 regimes
    python -m tools.gate_grid --regimes sparse --seeds 0,1,2,3,4 --rows grpo,b0-l1,b5-l1
    python -m tools.gate_grid --seeds 0 --iterations 1 -- --eval_tasks 8     # flags after -- go to every run

Regimes (the built-in ALFWorld of the embedded default run, `python train.py`):
    sparse        a 5-turn budget instead of 8: the student starts near 10 % and its teacher (the same
                  weights with the skills in front) near 50 %; many groups fail every episode, so GRPO
                  has no signal there and the teacher's dense signal is all there is (the paper's case)
    sparse_wrong  the same budget with the skills right 10 % of the time (`prior_strength` 0.1): does the
                  gate protect against a teacher that is wrong?
    default       the embedded default run (8 turns, skills right 90 %)
Rows: GRPO; GRPO+OPSD (beta 0) and SDAR (beta 5) at lambda (`sdar_coef`) 0.01, 0.1, 1; the distillation
term alone (`pg_coef 0`) at beta 0 and 5; the full-vocabulary reverse KL (`--divergence reverse_kl`); the
centred weight g - 1/2 (`--gate gap_centred`, beyond the paper). Each run is one `train.py` in a
subprocess for `--iterations` iterations; every run of a seed evaluates the same panel with the same
sampling seeds, so differences to GRPO are paired by seed. Writes gate_grid.md (the table, the command
and the commit), gate_grid.png (curves and the paired differences) and gate_grid.json under `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from tools.compare import curve_band, mean_stderr, pm, read_jsonl, read_run, run_one
from tools.warmstart import source_commit

REGIMES = {
    "sparse": dict(max_turns=5, prior_strength=0.9),
    "sparse_wrong": dict(max_turns=5, prior_strength=0.1),
    "default": dict(max_turns=8, prior_strength=0.9),
}
ROWS = {   # key: (label, train.py flags)
    "grpo": ("GRPO", ["--method", "grpo"]),
    **{f"b{beta}-l{lam:g}": (f"{'GRPO+OPSD' if beta == 0 else 'SDAR'} (beta {beta}, lambda {lam:g})",
                             ["--method", "sdar", "--beta", str(beta), "--sdar_coef", str(lam)])
       for beta in (0, 5) for lam in (0.01, 0.1, 1.0)},     # lambda 0.01 is the paper's
    **{f"opsd-b{beta}": (f"distillation alone (pg_coef 0, beta {beta}, lambda 1)",
                         ["--method", "sdar", "--pg_coef", "0", "--beta", str(beta), "--sdar_coef", "1.0"])
       for beta in (0, 5)},
    "rkl-b5": ("reverse KL, full vocabulary (beta 5, lambda 1)",
               ["--method", "sdar", "--beta", "5", "--sdar_coef", "1.0", "--divergence", "reverse_kl"]),
    "centred-b5": ("centred weight g - 1/2 (beta 5, lambda 1; beyond the paper)",
                   ["--method", "sdar", "--beta", "5", "--sdar_coef", "1.0", "--gate", "gap_centred"]),
}
PLAN = {   # the rows each regime runs by default
    "sparse": [row for row in ROWS if not row.endswith("-l0.01")],   # at 0.01 the term's gradient is ~1 % of PG's
    "sparse_wrong": ["grpo", "b0-l1", "b5-l1"],
    "default": ["grpo", "b0-l1", "b5-l1", "centred-b5"],
}
# The row each row is compared with besides GRPO: the gate against no gate (beta 5 against beta 0 at the same
# lambda), and the two variants of the gated term against the released one.
COUNTERPART = {"b5-l0.01": "b0-l0.01", "b5-l0.1": "b0-l0.1", "b5-l1": "b0-l1", "opsd-b5": "opsd-b0",
               "centred-b5": "b5-l1", "rkl-b5": "b5-l1"}
DIAGNOSTICS = ("adv/all_equal_groups", "grad/sdar_to_pg", "grad/cos_pg_sdar", "sdar/gate_dev/action",
               "sdar/gap_adv_corr")


def run_flags(regime: str, row: str, seed: int, iterations: int) -> list[str]:
    """train.py flags of one regime on the embedded default (its env kwargs, with this regime's changes).

    The start-up evaluation (student and teacher) is the same for every row of a (regime, seed): the same
    initial weights on the same panel with the same sampling seeds. So only the GRPO run makes it; the other
    rows evaluate once, at the end, and their start is GRPO's. The term gradients are measured every 2nd
    iteration (they cost an extra forward and a backward per term)."""
    from config import EMBEDDED_DEFAULTS

    settings = REGIMES[regime]
    env_kwargs = {**json.loads(EMBEDDED_DEFAULTS["env_kwargs"]), "prior_strength": settings["prior_strength"]}
    return ["--seed", str(seed), "--iterations", str(iterations), "--max_turns", str(settings["max_turns"]),
            "--env_kwargs", json.dumps(env_kwargs), "--eval_teacher", str(row == "grpo").lower(),
            "--eval_every", str(iterations if row == "grpo" else 0), "--diagnostics_every", "2"]


def diagnostic_means(output_dir: str) -> dict:
    """Each diagnostic of `DIAGNOSTICS` averaged over the run's training iterations (None if never logged)."""
    rows = [r for r in read_jsonl(os.path.join(output_dir, "metrics.jsonl")) if r["iteration"] > 0]
    means = {}
    for key in DIAGNOSTICS:
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        means[key] = sum(values) / len(values) if values else None
    return means


def collect(runs_dir: str, jobs: list[tuple[str, str, int]], iterations: int) -> list[dict]:
    """The planned runs that finished (their last metrics row is the final evaluation at `iterations`)."""
    runs = []
    for regime, row, seed in jobs:
        name = f"{regime}-{row}-seed{seed}"
        path = os.path.join(runs_dir, name, "metrics.jsonl")
        if os.path.isfile(path):
            summary = read_run(os.path.dirname(path))
            if summary["curve"] and summary["curve"][-1][0] == iterations:
                runs.append({"regime": regime, "row": row, "seed": seed, "name": name, **summary})
    return runs


def paired_differences(runs: list[dict], regime: str, row: str, reference: str = "grpo") -> list[float]:
    """Final eval success of `row` minus the `reference` row's, seed by seed, in one regime."""
    base = {r["seed"]: r["curve"][-1][1] for r in runs if r["regime"] == regime and r["row"] == reference}
    return [r["curve"][-1][1] - base[r["seed"]] for r in runs
            if r["regime"] == regime and r["row"] == row and r["seed"] in base]


def verdict(differences: list[float], reference: str = "GRPO") -> str:
    """Whether a paired difference clears two standard errors (needs at least two seeds)."""
    if len(differences) < 2:
        return "n/a"
    mean, err = mean_stderr(differences)
    name = f" {reference}" if reference else ""
    if err == 0:
        return "no difference" if mean == 0 else f"{'above' if mean > 0 else 'below'}{name} (s.e. 0)"
    return f"above{name}" if mean > 2 * err else f"below{name}" if mean < -2 * err else "within 2 s.e."


def counterpart_cell(runs: list[dict], regime: str, row: str) -> str:
    """'<counterpart>: mean ± s.e. (verdict)' of the paired difference to the row's COUNTERPART."""
    other = COUNTERPART.get(row)
    differences = paired_differences(runs, regime, row, other) if other else []
    if not differences:
        return "—"
    short = other.replace("-l", " lambda ").replace("b0", "beta 0").replace("b5", "beta 5").replace("opsd-", "alone, ")
    return f"vs {short}: {pm(differences)} ({verdict(differences, '')})"


def table(runs: list[dict], plan: dict) -> str:
    """One line per (regime, row): start, final, final - GRPO paired by seed and whether it clears 2 s.e.,
    and the diagnostics averaged over iterations and seeds."""
    header = ["regime", "method", "seeds", "teacher - student (start)", "start", "final", "final - GRPO (paired)",
              "vs GRPO", "final - counterpart (paired)", "all-equal groups", "|grad SDAR| / |grad PG|", "cos(PG, SDAR)", "mean abs(g - 1/2), action",
              "corr(action gap, A)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for regime, rows in plan.items():
        for row in rows:
            chosen = [r for r in runs if r["regime"] == regime and r["row"] == row]
            if not chosen:
                continue
            differences = paired_differences(runs, regime, row)
            seeds = {r["seed"] for r in chosen}
            teacher = [r["teacher_start"] - r["curve"][0][1] for r in runs          # measured in the GRPO runs
                       if r["regime"] == regime and r["row"] == "grpo" and r["seed"] in seeds
                       and r["teacher_start"] is not None]
            cells = [regime, ROWS[row][0], str(len(chosen)), pm(teacher), pm([r["curve"][0][1] for r in chosen]),
                     pm([r["curve"][-1][1] for r in chosen]),
                     "—" if row == "grpo" else pm(differences), "—" if row == "grpo" else verdict(differences),
                     counterpart_cell(runs, regime, row)]
            for key in DIAGNOSTICS:
                values = [r["diagnostics"][key] for r in chosen if r["diagnostics"][key] is not None]
                scale, digits = (100.0, 1) if key == "adv/all_equal_groups" else (1.0, 3)
                cells.append(pm(values, scale=scale, digits=digits) if values else "—")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def short_label(row: str) -> str:
    """A row's name short enough for an axis: "b5-l1" -> "beta 5, lambda 1", "opsd-b0" -> "alone, beta 0"."""
    if row.startswith("b"):
        beta, lam = row[1:].split("-l")
        return f"beta {beta}, lambda {lam}"
    kind, beta = row.split("-b")
    return {"opsd": "alone", "rkl": "reverse KL", "centred": "centred"}[kind] + f", beta {beta}"


def plot(runs: list[dict], plan: dict, path: str) -> None:
    """Per regime (a column): the mean eval curves of every row; each row's final success minus GRPO's and
    minus its counterpart's (`COUNTERPART`), paired by seed, with error bars of two standard errors."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(plan), figsize=(6.5 * len(plan), 10), squeeze=False)
    for column, (regime, rows) in enumerate(plan.items()):
        curves_ax, diff_ax = axes[:, column]
        for row in rows:
            chosen = [r["curve"] for r in runs if r["regime"] == regime and r["row"] == row]
            if chosen:
                curve_band(curves_ax, chosen, "GRPO" if row == "grpo" else short_label(row))
        curves_ax.set(title=f"{regime}: eval success, mean ± s.e. over seeds", xlabel="iteration",
                      ylabel="eval success (%)")
        curves_ax.grid(alpha=0.3)
        if curves_ax.lines:
            curves_ax.legend(fontsize=7)
        others = [row for row in rows if row != "grpo" and paired_differences(runs, regime, row)]
        series = (("minus GRPO", "tab:blue", 0.15, lambda row: "grpo"),
                  ("minus its counterpart (beta 0; for the variants the released term)", "tab:orange", -0.15,
                   lambda row: COUNTERPART.get(row)))
        for label, colour, shift, reference in series:
            points = [(k, mean_stderr(paired_differences(runs, regime, row, reference(row))))
                      for k, row in enumerate(others) if paired_differences(runs, regime, row, reference(row))]
            if points:
                diff_ax.errorbar([100 * m for _, (m, _) in points], [k + shift for k, _ in points],
                                 xerr=[200 * e for _, (_, e) in points], fmt="o", capsize=3, color=colour, label=label)
        diff_ax.axvline(0, color="grey", lw=1)
        diff_ax.set_yticks(range(len(others)), [short_label(row) for row in others], fontsize=8)
        diff_ax.set(title=f"{regime}: final success differences, paired by seed (bars: 2 s.e.)",
                    xlabel="points of eval success")
        diff_ax.grid(alpha=0.3)
        diff_ax.set_ylim(-0.6, len(others) - 0.4)
        if diff_ax.lines:
            diff_ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regimes", default="sparse,sparse_wrong,default", help=f"comma-separated: {', '.join(REGIMES)}")
    parser.add_argument("--rows", default=None, help=f"comma-separated rows for every regime (default: each "
                        f"regime's plan); any of {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--iterations", type=int, default=8, help="training iterations per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at the same time (each gets cores/jobs threads)")
    parser.add_argument("--out", default="results", help="folder for gate_grid.md / .png / .json")
    parser.add_argument("--runs", default=os.path.join("runs", "gate_grid"), help="folder for the runs")
    parser.add_argument("--collect", action="store_true", help="run nothing: report the finished runs already in "
                        "--runs (e.g. of a grid stopped early); runs missing from the plan are left out")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    regimes, seeds = args.regimes.split(","), [int(s) for s in args.seeds.split(",")]
    unknown = [name for name in regimes if name not in REGIMES] + \
              [name for name in (args.rows.split(",") if args.rows else []) if name not in ROWS]
    if unknown:
        parser.error(f"unknown regime or row {', '.join(unknown)}")
    plan = {regime: args.rows.split(",") if args.rows else PLAN[regime] for regime in regimes}
    if any("grpo" not in rows for rows in plan.values()):
        parser.error("every regime needs the grpo row: the differences are paired against it")
    jobs = [(regime, row, seed) for seed in seeds for regime in regimes for row in plan[regime]]
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    start = time.perf_counter()
    if args.collect:
        runs = collect(args.runs, jobs, args.iterations)
        print(f"gate grid: {len(runs)} of the {len(jobs)} planned runs are finished in {args.runs}", flush=True)
    else:
        print(f"gate grid: {len(jobs)} runs, {args.jobs} at a time", flush=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [(regime, row, seed, pool.submit(run_one, f"{regime}-{row}-seed{seed}",
                                                       [*ROWS[row][1], *run_flags(regime, row, seed, args.iterations),
                                                        *extra], args.runs, threads))
                       for regime, row, seed in jobs]
            runs = [{"regime": regime, "row": row, "seed": seed, **future.result()}
                    for regime, row, seed, future in futures]
    for run in runs:
        run["diagnostics"] = diagnostic_means(os.path.join(args.runs, run["name"]))
    starts = {(r["regime"], r["seed"]): r["curve"][0] for r in runs if r["row"] == "grpo"}
    runs = [r for r in runs if (r["regime"], r["seed"]) in starts]       # (collect: a seed without its GRPO run)
    for run in runs:
        if run["curve"][0][0] > 0:                      # evaluated at the end only: the start is GRPO's
            run["curve"] = [starts[run["regime"], run["seed"]], *run["curve"]]
    command = "python -m tools.gate_grid " + " ".join(argv)
    wall = "" if args.collect else f", {(time.perf_counter() - start) / 60:.1f} min wall time ({args.jobs} runs at a time, {threads} thread(s) each)"
    report = (f"# Does the gate help?\n\nEval success (%) on the fixed 128-task panel after {args.iterations} "
              f"iterations, mean ± standard error over seeds; *final - GRPO* is paired by seed, and *vs GRPO* says "
              f"whether it clears two standard errors; *final - counterpart* compares the gate with no gate (beta 5 with beta 0 "
              f"at the same lambda) and the variants with the released term, paired the same way. Diagnostics (`diagnostics.py`) are per-iteration means: the "
              f"share of groups whose episodes all had the same return, the SDAR term's gradient norm over the PG "
              f"term's and their cosine on one micro-batch, the mean |g - 1/2| on action tokens, and the correlation "
              f"of a step's summed action-token gap with its advantage.\n\n{table(runs, plan)}\n\n"
              f"Command: `{command}` at commit `{source_commit()}`{wall}.\n")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gate_grid.md"), "w") as handle:
        handle.write(report)
    with open(os.path.join(args.out, "gate_grid.json"), "w") as handle:
        json.dump({"command": command, "commit": source_commit(), "runs": runs}, handle)
    plot(runs, plan, os.path.join(args.out, "gate_grid.png"))
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
