"""metrics.py and the action-token mask: the gate's statistics against hand values, split into action
tokens and the rest, and which tokens count as choosing the action."""

import math

import pytest
import torch
from accelerate import Accelerator

from metrics import GAP_EDGES, GATE_EDGES, bin_counts, gate_statistics
from rollout import action_token_mask


def test_gate_statistics_by_hand():
    old = torch.zeros(2, 4)                                                     # (2, 4)
    teacher = torch.tensor([[0.4, -0.4, 12.0, 0.0], [0.0, -20.0, 0.0, 0.0]])   # gaps; padding beyond the mask
    response = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    action = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]])                          # the last 1 is padding: ignored
    metrics, histograms = gate_statistics(Accelerator(cpu=True), old, teacher, response, action, beta=5.0)
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))
    assert metrics["sdar/gap_mean/action"] == pytest.approx(0.0)
    assert metrics["sdar/gate_mean/action"] == pytest.approx((sigmoid(2.0) + sigmoid(-2.0)) / 2)
    assert metrics["sdar/gate_active/action"] == pytest.approx(0.5)
    assert metrics["sdar/gap_mean/other"] == pytest.approx((12.0 + 0.0 - 20.0) / 3)
    assert metrics["sdar/gate_mean/other"] == pytest.approx((sigmoid(60.0) + 0.5 + sigmoid(-100.0)) / 3, abs=1e-6)
    assert metrics["sdar/gate_active/other"] == pytest.approx(1 / 3)           # g = 0.5 is not active
    assert sum(histograms["gap_action"]) == 2 and sum(histograms["gap_other"]) == 3
    assert histograms["gap_other"][-1] == 1 and histograms["gap_other"][0] == 1  # 12 and -20 in the end bins
    assert histograms["gap_action"][GAP_EDGES.index(0.0)] == 1                  # 0.4 in [0, 0.5)
    assert histograms["gate_other"][GATE_EDGES.index(0.5)] == 1                 # g = 0.5 in [0.5, 0.55)
    assert histograms["gap_edges"] == GAP_EDGES and histograms["gate_edges"] == GATE_EDGES


def test_gate_statistics_without_action_tokens_leave_those_means_out():
    old, teacher = torch.zeros(1, 2), torch.ones(1, 2)
    metrics, histograms = gate_statistics(Accelerator(cpu=True), old, teacher, torch.ones(1, 2), torch.zeros(1, 2), 1.0)
    assert "sdar/gate_mean/action" not in metrics and metrics["sdar/gap_mean/other"] == pytest.approx(1.0)
    assert sum(histograms["gate_action"]) == 0 and sum(histograms["gate_other"]) == 2


def test_bin_counts_edges():
    counts = bin_counts(torch.tensor([-99.0, -10.0, -9.5, 0.0, 9.99, 10.0, 99.0]), GAP_EDGES)
    assert counts.shape == (40,) and counts.sum() == 7
    assert counts[0] == 2 and counts[1] == 1 and counts[20] == 1 and counts[39] == 3


def test_action_token_mask_marks_the_action_contents(tokenizer):
    text = "<think>go to fridge</think><action>go to fridge 1</action>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    mask = action_token_mask(tokenizer, ids, ("</action>",))
    chosen = "".join(tokenizer.decode([t]) for t, m in zip(ids, mask) if m)
    assert "go to fridge 1" in chosen and "think" not in chosen and "</action>" not in chosen
    assert mask[-1] == 0 and len(mask) == len(ids)
    search = tokenizer("<think>x</think><search>founder</search>", add_special_tokens=False)["input_ids"]
    marked = "".join(tokenizer.decode([t]) for t, m in zip(search, action_token_mask(tokenizer, search,
                                                                                   ("</search>", "</answer>"))) if m)
    assert "founder" in marked and "x" not in marked and "</search>" not in marked
    assert action_token_mask(tokenizer, search, ("</action>",)) == [0] * len(search)
    assert action_token_mask(tokenizer, [], ("</action>",)) == []
