"""Learning-curve figures from metrics.jsonl (matplotlib is optional: without it nothing is drawn)."""

from __future__ import annotations

import json

PANELS = (("eval/success", "train/success"), ("train/reward",), ("sdar/gate_mean", "sdar/gate_active"),
          ("loss/pg", "loss/sdar", "loss/kl"))


def plot_curves(metrics_path: str, png_path: str) -> bool:
    """One panel per metric family, x = iteration; returns False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [json.loads(line) for line in open(metrics_path) if line.strip()]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.2))
    for ax, keys in zip(axes, PANELS):
        for key in keys:
            points = [(r["iteration"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points), marker="o" if key.startswith("eval/") else None, label=key)
        ax.set_xlabel("iteration")
        if ax.lines:                            # a panel with nothing logged yet has no legend
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return True
