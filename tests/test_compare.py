"""compare.py: its statistics by hand, and the real script end to end on a tiny model (in a subprocess)."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_train import FAST


def test_mean_stderr_matches_a_hand_computation():
    from compare import mean_stderr
    mean, err = mean_stderr([0.2, 0.4, 0.9])
    # mean 0.5; deviations -0.3, -0.1, 0.4; sample variance (0.09 + 0.01 + 0.16) / 2 = 0.13; s.e. sqrt(0.13 / 3)
    assert mean == pytest.approx(0.5) and err == pytest.approx(math.sqrt(0.13 / 3))
    assert mean_stderr([0.7]) == (0.7, 0.0)


def test_table_reports_start_final_best_and_gain_per_method():
    from compare import table
    runs = [{"method": "grpo", "curve": [(0, 0.2), (2, 0.6), (4, 0.4)]},
            {"method": "grpo", "curve": [(0, 0.4), (2, 0.4), (4, 0.8)]}]
    row = table(runs, ["grpo"]).splitlines()[-1]
    # start (0.2, 0.4), final (0.4, 0.8), best (0.6, 0.8), gain (0.2, 0.4): s.e. of two values = |a - b| / 2
    assert row == "| GRPO | 2 | 30.0 ± 10.0 | 60.0 ± 20.0 | 70.0 ± 10.0 | 30.0 ± 10.0 |"


def test_compare_runs_every_method_and_seed_and_writes_table_plot_and_curves(model_dir, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    command = [sys.executable, os.path.join(ROOT, "compare.py"), "--methods", "grpo,sdar", "--seeds", "0,1",
               "--jobs", "2", "--out", str(out), "--runs", str(runs),
               "--", *FAST, "--model", model_dir, "--iterations", "1"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(2):            # the second one replaces the first one's runs (train.py --overwrite)
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    saved = json.load(open(out / "compare.json"))
    assert sorted((r["method"], r["seed"]) for r in saved["runs"]) == [("grpo", 0), ("grpo", 1), ("sdar", 0), ("sdar", 1)]
    for run in saved["runs"]:
        assert [iteration for iteration, _ in run["curve"]] == [0, 1]      # the start and the one iteration
        assert all(0.0 <= success <= 1.0 for _, success in run["curve"])
    report = (out / "compare.md").read_text()
    assert "| GRPO | 2 |" in report and "| SDAR (beta 5) | 2 |" in report and "--iterations 1" in report
    assert (out / "compare.png").stat().st_size > 1000
