"""tools/gate_grid.py and tools/gap_view.py: the paired statistics by hand, and both real scripts end to end
on a tiny model (subprocesses)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_train import FAST

SMALL = [flag for pair in zip(FAST[::2], FAST[1::2]) if pair[0] not in ("--iterations", "--max_turns", "--eval_every")
         for flag in pair]                              # the regime sets the turn budget, the grid the evaluations


def test_paired_differences_and_the_two_standard_error_verdict():
    from tools.gate_grid import paired_differences, verdict

    runs = [{"regime": "sparse", "row": row, "seed": seed, "curve": [(0, 0.1), (8, final)]}
            for row, finals in (("grpo", (0.30, 0.40, 0.50)), ("b5-l1", (0.40, 0.52, 0.58)))
            for seed, final in enumerate(finals)]
    differences = paired_differences(runs, "sparse", "b5-l1")
    assert differences == pytest.approx([0.10, 0.12, 0.08])
    assert verdict(differences) == "above GRPO"              # mean 0.10, s.e. 0.0115: clears 2 s.e.
    assert verdict([0.10, -0.05, 0.02]) == "within 2 s.e."
    assert verdict([-0.10, -0.11, -0.12]) == "below GRPO"
    assert verdict([0.05]) == "n/a"                          # one seed has no standard error


def test_gate_grid_and_gap_view_end_to_end(model_dir, tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    command = [sys.executable, "-m", "tools.gate_grid", "--regimes", "sparse", "--rows", "grpo,centred-b5",
               "--seeds", "0,1", "--iterations", "1", "--jobs", "2", "--out", str(out), "--runs", str(runs),
               "--", *SMALL, "--model", model_dir]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    saved = json.load(open(out / "gate_grid.json"))
    assert sorted((r["row"], r["seed"]) for r in saved["runs"]) == [("centred-b5", 0), ("centred-b5", 1),
                                                                   ("grpo", 0), ("grpo", 1)]
    by_key = {(r["row"], r["seed"]): r for r in saved["runs"]}
    for seed in (0, 1):                 # the centred run evaluated at the end only: its start is GRPO's
        assert by_key["centred-b5", seed]["curve"][0] == by_key["grpo", seed]["curve"][0]
        assert [i for i, _ in by_key["centred-b5", seed]["curve"]] == [0, 1]
        config = json.load(open(runs / f"sparse-centred-b5-seed{seed}" / "config.json"))
        assert config["max_turns"] == 5 and config["gate"] == "gap_centred" and config["sdar_coef"] == 1.0
        assert json.loads(config["env_kwargs"])["prior_strength"] == 0.9
    rows = [json.loads(line) for line in open(runs / "sparse-centred-b5-seed0" / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [1]                              # no start-up evaluation row
    assert "adv/all_equal_groups" in rows[0] and "grad/pg_norm" in rows[0]     # diagnostics at iteration 0
    report = (out / "gate_grid.md").read_text()
    assert "| sparse | centred weight g - 1/2 (beta 5, lambda 1; beyond the paper) | 2 |" in report
    assert "--iterations 1" in report and (out / "gate_grid.png").stat().st_size > 1000

    page = tmp_path / "view.html"
    result = subprocess.run([sys.executable, "-m", "tools.gap_view", str(runs / "sparse-centred-b5-seed0"),
                             "--episodes", "2", "--out", str(page)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = page.read_text()
    assert text.count("class='episode") == 2 and 'title="gap ' in text and "gate" in text


def test_the_counterpart_column_pairs_the_gate_with_no_gate():
    from tools.gate_grid import counterpart_cell

    runs = [{"regime": "sparse", "row": row, "seed": seed, "curve": [(0, 0.1), (8, final)]}
            for row, finals in (("b0-l1", (0.30, 0.40, 0.50)), ("b5-l1", (0.40, 0.52, 0.58)), ("grpo", (0.3, 0.3, 0.3)))
            for seed, final in enumerate(finals)]
    assert counterpart_cell(runs, "sparse", "b5-l1") == "vs beta 0 lambda 1: 10.0 ± 1.2 (above)"
    assert counterpart_cell(runs, "sparse", "b0-l1") == "—"                 # beta 0 has no counterpart
    assert counterpart_cell(runs, "default", "b5-l1") == "—"                # nothing run there
