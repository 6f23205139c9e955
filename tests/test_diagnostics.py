"""diagnostics.py on hand-built batches: GRPO's signal (all-equal groups, advantage mass from penalties
alone), the gap split by action / other tokens and won / lost episodes, and each term's gradient."""

import math

import pytest
import torch
from accelerate import Accelerator

from diagnostics import (GAP_EDGES, GATE_EDGES, advantage_diagnostics, bin_counts, gap_and_outcome, gap_statistics,
                         gap_tails, term_gradients)
from grpo import group_advantages

sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))
WON2 = torch.tensor([True, False])


def test_a_group_whose_only_advantages_come_from_the_penalty():
    # Group 0: both episodes failed (return 0), one step of trajectory 1 was invalid (penalty 0.1).
    # Group 1: one success (return 10) and one failure: a real outcome signal.
    returns = torch.tensor([0.0, 0.0, 0.0, 10.0, 0.0], dtype=torch.float64)        # (N,)
    scores = returns - torch.tensor([0.0, 0.0, 0.1, 0.0, 0.0], dtype=torch.float64)  # (N,)
    groups, trajs = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 1, 2, 3])
    advantages = group_advantages(scores, groups, trajs)                             # (N,)
    assert advantages[:3].abs().max() > 0.5          # the penalty divided by a tiny std: full-scale advantages
    found = advantage_diagnostics(returns, advantages, groups, trajs)
    assert found["adv/all_equal_groups"] == 0.5
    expected = advantages[:3].abs().sum() / advantages.abs().sum()
    assert found["adv/penalty_only_mass"] == pytest.approx(expected.item())
    none = advantage_diagnostics(returns, torch.zeros(5), groups, trajs)
    assert none["adv/penalty_only_mass"] == 0.0


def test_gap_statistics_by_hand():
    old = torch.zeros(2, 4)                                                     # (2, 4)
    teacher = torch.tensor([[0.4, -0.4, 12.0, 0.0], [0.0, -20.0, 0.0, 0.0]])   # gaps; padding beyond the mask
    response = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    action = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 1]])                          # the last 1 is padding: ignored
    metrics, histograms = gap_statistics(Accelerator(cpu=True), old, teacher, response, action, WON2, torch.zeros(2), beta=5.0)
    sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))
    assert metrics["sdar/gap_mean/action"] == pytest.approx(0.0)
    assert metrics["sdar/gate_mean/action"] == pytest.approx((sigmoid(2.0) + sigmoid(-2.0)) / 2)
    assert metrics["sdar/gate_active/action"] == pytest.approx(0.5)
    assert metrics["sdar/gap_mean/other"] == pytest.approx((12.0 + 0.0 - 20.0) / 3)
    assert metrics["sdar/gate_mean/other"] == pytest.approx((sigmoid(60.0) + 0.5 + sigmoid(-100.0)) / 3, abs=1e-6)
    assert metrics["sdar/gate_active/other"] == pytest.approx(1 / 3)           # g = 0.5 is not active
    assert metrics["sdar/gate_dev/action"] == pytest.approx(sigmoid(2.0) - 0.5)  # |g - 1/2| of 0.4 and -0.4
    assert metrics["sdar/gate_dev/other"] == pytest.approx((sigmoid(60.0) - 0.5 + 0 + 0.5 - sigmoid(-100.0)) / 3)
    assert sum(histograms["gap_action"]) == 2 and sum(histograms["gap_other"]) == 3
    assert histograms["gap_other"][-1] == 1 and histograms["gap_other"][0] == 1  # 12 and -20 in the end bins
    assert histograms["gap_action"][GAP_EDGES.index(0.0)] == 1                  # 0.4 in [0, 0.5)
    assert histograms["gate_other"][GATE_EDGES.index(0.5)] == 1                 # g = 0.5 in [0.5, 0.55)
    assert histograms["gap_edges"] == GAP_EDGES and histograms["gate_edges"] == GATE_EDGES


def test_gap_statistics_without_action_tokens_leave_those_means_out():
    old, teacher = torch.zeros(1, 2), torch.ones(1, 2)
    metrics, histograms = gap_statistics(Accelerator(cpu=True), old, teacher, torch.ones(1, 2), torch.zeros(1, 2),
                                         torch.tensor([True]), torch.zeros(1), 1.0)
    assert "sdar/gate_mean/action" not in metrics and metrics["sdar/gap_mean/other"] == pytest.approx(1.0)
    assert sum(histograms["gate_action"]) == 0 and sum(histograms["gate_other"]) == 2


def test_bin_counts_edges():
    counts = bin_counts(torch.tensor([-99.0, -10.0, -9.5, 0.0, 9.99, 10.0, 99.0]), GAP_EDGES)
    assert counts.shape == (40,) and counts.sum() == 7
    assert counts[0] == 2 and counts[1] == 1 and counts[20] == 1 and counts[39] == 3



def test_gap_tails_and_outcome_by_hand():
    gap = torch.tensor([[1.0, -2.0, 0.0], [-4.0, 0.5, 0.0], [3.0, 0.0, 0.0]])      # (3, 3)
    action = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 0, 0]]).bool()                # (3, 3)
    won = torch.tensor([True, False, False])                                         # (3,)
    tails = gap_tails(gap, {"action": action}, won)
    assert tails["sdar/gap_q05/action_won"] == pytest.approx(torch.quantile(torch.tensor([1.0, -2.0]), 0.05).item())
    assert tails["sdar/gap_q95/action_lost"] == pytest.approx(torch.quantile(torch.tensor([-4.0, 0.5, 3.0]), 0.95).item())
    advantages = torch.tensor([1.0, -1.0, 0.5])                                      # (3,)
    out = gap_and_outcome(gap, action, won, advantages)
    assert out["sdar/action_gap_sum/won"] == pytest.approx(-1.0)                   # 1 - 2
    assert out["sdar/action_gap_sum/lost"] == pytest.approx((-3.5 + 3.0) / 2)
    x, y = [-1.0, -3.5, 3.0], [1.0, -1.0, 0.5]
    mx, my = sum(x) / 3, sum(y) / 3
    r = sum((a - mx) * (b - my) for a, b in zip(x, y)) / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))
    assert out["sdar/gap_adv_corr"] == pytest.approx(r)
    assert "sdar/gap_adv_corr" not in gap_and_outcome(gap, action, won, torch.zeros(3))   # constant advantage


def test_bin_counts_edges():
    counts = bin_counts(torch.tensor([-99.0, -10.0, -9.5, 0.0, 9.99, 10.0, 99.0]), GAP_EDGES)
    assert counts.shape == (40,) and counts.sum() == 7
    assert counts[0] == 2 and counts[1] == 1 and counts[20] == 1 and counts[39] == 3


class Batch:
    """The fields of an `Experience` that `term_gradients` reads."""
    def __init__(self, old_logp, teacher_logp, advantages, mask):
        self.old_logp, self.ref_logp, self.teacher_logp = old_logp, old_logp, teacher_logp
        self.advantages, self.response_mask = advantages, mask


def test_term_gradients_match_autograd_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4, dtype=torch.float64)                             # a stand-in policy
    features = torch.randn(2, 3, 3, dtype=torch.float64)                           # (B, T, 3)
    logp = torch.log_softmax(model(features), -1)[..., 0]                           # (B, T) log pi(y_t)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)   # (B, T) ragged
    teacher = logp.detach() + torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.0, -0.3]], dtype=torch.float64)
    batch = Batch(logp.detach(), teacher, torch.tensor([1.0, -0.5], dtype=torch.float64), mask)
    coefficients = dict(pg_coef=1.0, kl_coef=0.0, entropy_coef=0.0, sdar_coef=0.1, beta=5.0)
    # By hand: at old = live, PG = -token-mean(A) -> grad -sum(A_t grad logp_t)/N; SDAR = token-mean(g (T - S)).
    n = mask.sum()
    pg = -(batch.advantages[:, None] * logp * mask).sum() / n
    gate = torch.sigmoid(5.0 * (teacher - logp.detach()))
    sdar = 0.1 * (gate * (teacher - logp) * mask).sum() / n
    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(term, list(model.parameters()), retain_graph=True)])
             for term in (pg, sdar)]
    found = term_gradients(model, logp, None, None, batch, coefficients)
    assert found["grad/pg_norm"] == pytest.approx(grads[0].norm().item(), rel=1e-6)
    assert found["grad/sdar_norm"] == pytest.approx(grads[1].norm().item(), rel=1e-6)
    assert found["grad/sdar_to_pg"] == pytest.approx((grads[1].norm() / grads[0].norm()).item(), rel=1e-6)
    cosine = grads[0] @ grads[1] / (grads[0].norm() * grads[1].norm())
    assert found["grad/cos_pg_sdar"] == pytest.approx(cosine.item(), rel=1e-6)
    assert "grad/kl_norm" not in found and all(p.grad is None for p in model.parameters())   # nothing written


def test_term_gradients_without_a_policy_gradient_report_no_ratio():
    model = torch.nn.Linear(2, 2, dtype=torch.float64)
    logp = torch.log_softmax(model(torch.ones(1, 2, 2, dtype=torch.float64)), -1)[..., 0]   # (1, 2)
    batch = Batch(logp.detach(), logp.detach() + 1.0, torch.ones(1, dtype=torch.float64), torch.ones(1, 2))
    found = term_gradients(model, logp, None, None, batch, dict(pg_coef=0.0, kl_coef=0.0, entropy_coef=0.0,
                                                                sdar_coef=1.0, beta=5.0))
    assert found["grad/pg_norm"] == 0.0 and found["grad/sdar_norm"] > 0
    assert "grad/cos_pg_sdar" not in found and "grad/sdar_to_pg" not in found
