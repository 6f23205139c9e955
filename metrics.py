"""What a run records: metrics.jsonl and the trackers (the `Logger`), means over processes, and curves.png
(matplotlib is optional: without it nothing is drawn).

Metric names are stable (README "Metrics"): `train/*` from the rollout, `loss/*`, `pg/*`, `sdar/*` from
the update, `perf/*` timings and peak memory, `eval/*` from the fixed panel.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource

import torch


def _status_bytes(field: str) -> int | None:
    """A byte count from /proc/self/status (Linux), e.g. VmRSS or VmHWM; None elsewhere."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_memory(device: torch.device) -> int:
    """Open a peak-memory window; returns the bytes in use now. CUDA: the allocator's peak counter. CPU:
    torch's CPU allocator keeps no statistics, so the process's resident-set high-water mark, reset to the
    current resident set through /proc/self/clear_refs where Linux allows it (else it keeps the process's peak).
    No garbage collection here: with a model loaded a full collection takes about 0.2 s on a CPU, too much for
    every phase of every iteration (tools/benchlib.py collects before its own windows)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    with contextlib.suppress(OSError):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    return _status_bytes("VmRSS") or 0


def peak_memory(device: torch.device) -> int:
    """Peak bytes since `reset_peak_memory`: allocated tensors on CUDA, the resident set on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def phase_peak_gib(device: torch.device) -> float:
    """The peak memory (GiB) since the last call, then a new window: called after each phase of an iteration,
    it gives that phase's peak (`perf/peak_gib/*`)."""
    peak = peak_memory(device) / 2**30
    reset_peak_memory(device)
    return peak

class Logger:
    """metrics.jsonl always (main process), accelerate trackers when asked, curves.png after evaluations,
    gate_hist.jsonl when the gate's histograms are logged; keeps the evaluation history and the best
    evaluation for the checkpoint. On resume, rows past the checkpoint are dropped first."""

    def __init__(self, cfg, accelerator, state: dict):
        self.cfg, self.accelerator = cfg, accelerator
        self.path = os.path.join(cfg.output_dir, "metrics.jsonl")
        self.best = state.get("best", {"eval/success": -1.0, "iteration": -1})
        self.history = state.get("eval_history", [])
        if accelerator.is_main_process:
            for name in ("metrics.jsonl", "gate_hist.jsonl"):
                path = os.path.join(cfg.output_dir, name)
                if os.path.exists(path):
                    rows = [json.loads(line) for line in open(path) if line.strip()]
                    with open(path, "w") as handle:
                        handle.writelines(json.dumps(r) + "\n" for r in rows if r["iteration"] <= state["iteration"])
        if cfg.report_to != "none":
            accelerator.init_trackers("sdar", config=vars(cfg))

    def log(self, iteration: int, metrics: dict, histograms: dict | None = None) -> None:
        """Write one row; an evaluation in it joins the history (and may be the best) and redraws the curves."""
        evaluation = {k: v for k, v in metrics.items() if k.startswith("eval/")}
        if evaluation:
            self.history.append({"iteration": iteration, **evaluation})
            if evaluation["eval/success"] > self.best["eval/success"]:
                self.best = {"eval/success": evaluation["eval/success"], "iteration": iteration}
        if self.accelerator.is_main_process:
            with open(self.path, "a") as handle:
                handle.write(json.dumps({"iteration": iteration, **metrics}) + "\n")
            if histograms:
                with open(os.path.join(self.cfg.output_dir, "gate_hist.jsonl"), "a") as handle:
                    handle.write(json.dumps({"iteration": iteration, **histograms}) + "\n")
        if self.cfg.report_to != "none":
            self.accelerator.log(metrics, step=iteration)
        if evaluation:
            self.plot()

    def plot(self) -> None:
        if self.accelerator.is_main_process and self.cfg.plot:
            plot_curves(self.path, os.path.join(self.cfg.output_dir, "curves.png"))

    def state_dict(self) -> dict:
        return {"best": self.best, "eval_history": self.history}

    def finish(self) -> dict:
        """Draw the curves, close the trackers and the process group (processes that exit with it still open
        can abort in its threads' teardown), and return the final and best evaluations."""
        self.plot()
        self.accelerator.end_training()
        return {"final": self.history[-1] if self.history else {}, "best": self.best}


def reduce_mean(accelerator, metrics: dict) -> dict:
    """Average each numeric metric over processes (every process reports the same keys)."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], device=accelerator.device)
    values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


def iteration_metrics(accelerator, roll: dict, num_samples: int, extra: dict) -> dict:
    """The rollout's train/* metrics and `extra` (losses, timings), averaged over processes, and
    `rollout/truncated_prompts`, the student prompts cut to `max_prompt_length` summed over processes (never
    silent: the released code stops there). Success per task type is kept on one process only: the task
    types differ between processes."""
    metrics = {"train/reward": roll["return"], "train/success": roll["success"], "train/score": roll["score"],
               "train/invalid_rate": roll["invalid_rate"], "train/episode_length": roll["episode_length"],
               "train/step_samples": num_samples, "perf/rollout_tok_s": roll["tokens_per_s"], **extra}
    metrics = reduce_mean(accelerator, metrics)
    truncated = torch.tensor([float(roll["truncated_prompts"])], device=accelerator.device)   # (1,)
    if accelerator.num_processes > 1:
        truncated = accelerator.reduce(truncated, reduction="sum")
    metrics["rollout/truncated_prompts"] = int(truncated.item())    # a count over all processes, not a mean
    if accelerator.num_processes == 1:
        metrics.update({f"train/{k}": v for k, v in roll.items() if k.startswith("success/")})
    return metrics


# (title, y label, metrics) of each panel of curves.png; the teacher's start-up score is drawn as a line.
PANELS = (("Success on the fixed panel", "success rate", ("eval/success", "train/success")),
          ("Training reward", "episode return", ("train/reward",)),
          ("SDAR gate", "gate value / share of tokens", ("sdar/gate_mean", "sdar/gate_active")),
          ("Losses", "loss", ("loss/pg", "loss/sdar", "loss/kl")))
LABELS = {"eval/success": "student, eval panel", "train/success": "student, training rollouts",
          "train/reward": "mean return", "sdar/gate_mean": "mean gate g", "sdar/gate_active": "share with g > 0.5",
          "loss/pg": "policy (GRPO)", "loss/sdar": "self-distillation", "loss/kl": "KL to initial"}


def plot_curves(metrics_path: str, png_path: str) -> bool:
    """One titled panel per metric family, x = iteration (integer ticks), y labelled, and on the success
    panel the teacher's start-up score as a dashed line (the skills' worth, SDAR's premise); returns
    False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    for ax, (title, ylabel, keys) in zip(axes, PANELS):
        for key in keys:
            points = [(r["iteration"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), marker="o" if key.startswith("eval/") else None, label=f"{LABELS[key]} ({key})")
        teacher = [r["eval/teacher_success"] for r in rows if isinstance(r.get("eval/teacher_success"), (int, float))]
        if "eval/success" in keys and teacher:
            ax.axhline(teacher[0], color="tab:green", linestyle="--",
                       label="teacher at start, skills shown (eval/teacher_success)")
        ax.set_title(title, fontsize=10)
        ax.set(xlabel="iteration", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:                            # a panel with nothing logged yet has no legend
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged in this run", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True
