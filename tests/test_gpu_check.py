"""The real-size checks (tools/gpu_check.py) run end to end at the tiny shape on the CPU, so the one command
a GPU machine runs cannot rot; and the first mini-batch's approx_kl / clip_frac that it reads (logged by
update.update_policy) against hand-computed values."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator

from conftest import ROOT
from config import TrainConfig, resolve
from experience import score_tokens
from tools.tinymodel import tiny_model
from update import update_policy
from update_check import synthetic_experience

SMALL = ["--device", "cpu", "--shape", "tiny", "--budget_s", "600", "--precisions", "bf16", "--fast_decode", "on",
         "--sections", "train,greedy,teacher_cache,decode,micro_step,estimate", "--micro_rows", "2",
         "--micro_len", "256", "--estimate_lengths", "256,512", "--decode_batches", "2", "--decode_prompt", "16",
         "--decode_tokens", "4", "--greedy_tokens", "8"]


def test_gpu_check_runs_every_section_at_the_tiny_shape(tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "tools.gpu_check", *SMALL, "--out", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads((out / "check.json").read_text())
    assert report["command"].startswith("python -m tools.gpu_check --device cpu")
    assert len(report["commit"].split("+")[0]) == 40 and "CPU" in report["device"]
    assert report["skipped"] == []
    train = report["train"][0]
    assert train["precision"] == "bf16" and train["fast_decode"] == "on" and train["iterations"] == 1
    first = train["first_iteration"]
    for phase in ("rollout", "scoring", "update"):
        assert first[f"perf/peak_gib/{phase}"] > 0.05                  # at least the process's own resident set
    assert first["perf/rollout_tok_s"] > 0 and first["train/step_samples"] > 0
    assert {(row["variant"], row["rows_equal"] == row["rows"]) for row in report["greedy"]} == \
        {("static", True), ("compiled", True)}
    cache = report["teacher_cache"]
    assert [row["precision"] for row in cache] == ["no", "bf16"] and cache[0]["max_abs_diff"] < 1e-4
    assert {row["variant"] for row in report["decode"]} == {"hf_generate", "rollout_compiled"}
    assert report["micro_step"]["tok_s"] > 0 and report["micro_step"]["peak_mib"] > 0
    estimate = {row["checkpointing"]: row for row in report["estimate"]}
    assert set(estimate) == {"off", "on"}
    for row in estimate.values():
        assert row["tokens"] == 2 * 256 and math.isfinite(row["estimate_gib"]) and row["estimate_gib"] > row["weights_gib"]
    names = [item["name"] for item in report["checks"]]
    assert any("first mini-batch approx_kl" in name for name in names)
    assert all(item["pass"] for item in report["checks"]), report["checks"]
    assert (out / "check.md").read_text().startswith("| check | value | target | pass |")


def test_an_unknown_section_is_refused():
    result = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--out", "/tmp/unused", "--device", "cpu",
                             "--sections", "train,warp"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown warp" in result.stderr


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_first_minibatch_metrics_by_hand(tokenizer, shift):
    """Old log-probs = the model's own (shift 0) or 0.3 above them on every response token. The first
    mini-batch runs at those weights, so approx_kl = mean(old - live) = shift, and with ratio e^-0.3 = 0.74
    below 1 - 0.2 exactly the tokens of rows with a negative advantage are clipped. The second epoch runs
    after an SGD step, so the mean over both steps differs from the first mini-batch's."""
    torch.set_num_threads(1)
    model = tiny_model(tokenizer, seed=0)
    experience = synthetic_experience(tokenizer)
    rows = list(range(len(experience)))
    live = score_tokens(model, experience.input_ids, experience.attention_mask, experience.response_mask, rows,
                        8, None)                                                         # (N, T)
    experience.old_logp = (live + shift) * experience.response_mask                     # (N, T)
    cfg = resolve(TrainConfig(mini_batch_size=8, micro_batch_size=4, ppo_epochs=2, max_new_tokens=8, kl_coef=0.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=10.0)
    model.train()
    metrics = update_policy(model, optimizer, Accelerator(cpu=True), experience, cfg, torch.Generator().manual_seed(0), {})
    mask = experience.response_mask.bool()                                              # (N, T)
    negative = (experience.advantages < 0)[:, None].expand_as(mask)                     # (N, T)
    expected_clip = float(negative[mask].float().mean()) if shift else 0.0
    assert metrics["pg/first_minibatch_approx_kl"] == pytest.approx(shift, abs=1e-6)
    assert metrics["pg/first_minibatch_clip_frac"] == pytest.approx(expected_clip, abs=1e-6)
    assert 0 < expected_clip < 1 or shift == 0
    assert metrics["pg/approx_kl"] != pytest.approx(metrics["pg/first_minibatch_approx_kl"], abs=1e-4)
