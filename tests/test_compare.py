"""tools/compare.py: its statistics by hand, and the real script end to end on a tiny model (in a subprocess)."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_train import FAST


def test_mean_stderr_matches_a_hand_computation():
    from tools.compare import mean_stderr
    mean, err = mean_stderr([0.2, 0.4, 0.9])
    # mean 0.5; deviations -0.3, -0.1, 0.4; sample variance (0.09 + 0.01 + 0.16) / 2 = 0.13; s.e. sqrt(0.13 / 3)
    assert mean == pytest.approx(0.5) and err == pytest.approx(math.sqrt(0.13 / 3))
    assert mean_stderr([0.7]) == (0.7, 0.0)


def test_table_reports_start_final_best_gain_and_teacher_gap_per_method():
    from tools.compare import table
    runs = [{"method": "grpo", "curve": [(0, 0.2), (2, 0.6), (4, 0.4)], "teacher_start": 0.5},
            {"method": "grpo", "curve": [(0, 0.4), (2, 0.4), (4, 0.8)], "teacher_start": 0.8}]
    row = table(runs, ["grpo"]).splitlines()[-1]
    # start (0.2, 0.4), final (0.4, 0.8), best (0.6, 0.8), gain (0.2, 0.4), teacher - student (0.3, 0.4):
    # the s.e. of two values is |a - b| / 2
    assert row == "| GRPO | 2 | 30.0 ± 10.0 | 60.0 ± 20.0 | 70.0 ± 10.0 | 30.0 ± 10.0 | 35.0 ± 5.0 |"
    for run in runs:
        run["teacher_start"] = None                 # a train.py that does not log the teacher
    assert table(runs, ["grpo"]).splitlines()[-1].endswith("| 30.0 ± 10.0 | n/a |")


def write_run(folder, start, final, teacher, gate_action, gate_other, hist_scale):
    """A synthetic run folder in train.py's formats: metrics.jsonl and gate_hist.jsonl."""
    os.makedirs(folder)
    rows = [{"iteration": 0, "eval/success": start, "eval/teacher_success": teacher}]
    for iteration, (action, other) in enumerate(zip(gate_action, gate_other), start=1):
        rows.append({"iteration": iteration, "sdar/gate_mean/action": action, "sdar/gate_mean/other": other,
                     "sdar/gap_mean/action": 2 * action, "sdar/gap_mean/other": -other,
                     "sdar/gate_active/action": action, "sdar/gate_active/other": other})
    rows[-1]["eval/success"] = final
    with open(os.path.join(folder, "metrics.jsonl"), "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    gap_edges = [-10 + 0.5 * k for k in range(41)]
    gate_edges = [0.05 * k for k in range(21)]
    with open(os.path.join(folder, "gate_hist.jsonl"), "w") as handle:
        for iteration in range(1, len(gate_action) + 1):
            row = {"iteration": iteration, "gap_edges": gap_edges, "gate_edges": gate_edges,
                   "gap_action": [hist_scale * iteration] * 40, "gap_other": [1] * 40,
                   "gate_action": [hist_scale] * 20, "gate_other": [2] * 20}
            handle.write(json.dumps(row) + "\n")


def test_grid_reads_teacher_gate_means_and_histograms_and_writes_table_and_figure(tmp_path):
    from tools.compare import grid_configs, grid_plot, grid_table, read_run
    runs = []
    for seed, (grpo_final, sdar_final) in enumerate([(0.5, 0.6), (0.4, 0.7)]):
        for key, final, gates in (("grpo", grpo_final, ([0.5], [0.5])), ("sdar-b5-l0.01", sdar_final, ([0.6, 0.8], [0.5, 0.3]))):
            folder = str(tmp_path / f"{key}-seed{seed}")
            write_run(folder, start=0.3, final=final, teacher=0.5 + 0.1 * seed, gate_action=gates[0],
                      gate_other=gates[1], hist_scale=3)
            runs.append({"config": key, "beta": 5.0 if key != "grpo" else None, "reliability": 0.9, "seed": seed,
                         **read_run(folder)})
    sdar = runs[1]
    assert sdar["teacher_start"] == 0.5 and sdar["curve"] == [(0, 0.3), (2, 0.6)]
    assert sdar["gate"]["sdar/gate_mean/action"] == pytest.approx(0.7)      # mean of 0.6 and 0.8
    assert sdar["gate"]["sdar/gap_mean/other"] == pytest.approx(-0.4)
    assert sdar["hist"]["gap_action"] == [3 + 6] * 40 and sdar["hist"]["gate_other"] == [4] * 20
    configs = grid_configs([5.0], [0.01])
    rows = grid_table(runs, configs, [0.9]).splitlines()
    assert rows[2].startswith("| 90 % | GRPO | 2 | 25.0 ± 5.0 | 30.0 ± 0.0 | 45.0 ± 5.0 | 15.0 ± 5.0 | — | — | — |")
    # SDAR: final (0.6, 0.7); paired gain over GRPO (0.1, 0.3); gate means 0.7 / 0.4 on both seeds
    assert rows[3] == ("| 90 % | SDAR (beta 5, lambda 0.01) | 2 | 25.0 ± 5.0 | 30.0 ± 0.0 | 65.0 ± 5.0 | 35.0 ± 5.0 "
                       "| 20.0 ± 10.0 | 0.70 ± 0.00 / 0.40 ± 0.00 | 1.40 ± 0.00 / -0.40 ± 0.00 |")
    grid_plot(runs, configs, [0.9], str(tmp_path / "grid.png"))
    assert (tmp_path / "grid.png").stat().st_size > 1000


def test_compare_runs_every_method_and_seed_and_writes_table_plot_and_curves(model_dir, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    command = [sys.executable, "-m", "tools.compare", "--methods", "grpo,sdar", "--seeds", "0,1",
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


def test_compare_grid_runs_every_reliability_config_and_seed(model_dir, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    command = [sys.executable, "-m", "tools.compare", "--grid", "--seeds", "0", "--betas", "0,5",
               "--coefs", "0.1", "--reliabilities", "0.9,0.2", "--jobs", "2", "--out", str(out), "--runs", str(runs),
               "--", *FAST, "--model", model_dir, "--iterations", "1"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    saved = json.load(open(out / "grid.json"))
    assert sorted((r["reliability"], r["config"]) for r in saved["runs"]) == [
        (0.2, "grpo"), (0.2, "sdar-b0-l0.1"), (0.2, "sdar-b5-l0.1"),
        (0.9, "grpo"), (0.9, "sdar-b0-l0.1"), (0.9, "sdar-b5-l0.1")]
    for run in saved["runs"]:            # the reliability reached the environment of every run
        config = json.load(open(runs / f"{run['config']}-p{run['reliability']:g}-seed0" / "config.json"))
        assert json.loads(config["env_kwargs"])["prior_strength"] == run["reliability"]
    report = (out / "grid.md").read_text()
    assert "| 20 % | GRPO+OPSD (beta 0, lambda 0.1) | 1 |" in report and "| 90 % | SDAR (beta 5, lambda 0.1) | 1 |" in report
    assert (out / "grid.png").stat().st_size > 1000
