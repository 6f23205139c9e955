"""objective.sdar_objective: the whole loss against a hand composition of its terms, its gradient, the
baselines as coefficient settings, and bfloat16."""

import math

import pytest
import torch

from objective import sdar_objective

F64 = torch.float64


def _case(dtype=F64):
    """logp at the rollout weights (ratio 1), a reference 0.5 nats below, a teacher 0.2 nats above."""
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -4.0, -1.5]], dtype=dtype, requires_grad=True)  # (2, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])                                                 # ragged, N = 5
    advantages = torch.tensor([1.5, -0.5], dtype=dtype)                                         # (2,)
    entropy = torch.tensor([[2.0, 1.0, 9.0], [0.5, 0.5, 0.5]], dtype=dtype, requires_grad=True)  # (2, 3)
    return logp, logp.detach(), logp.detach() - 0.5, logp.detach() + 0.2, advantages, mask, entropy


def test_the_objective_is_the_sum_of_its_terms_by_hand():
    logp, old, ref, teacher, advantages, mask, entropy = _case()
    loss, metrics = sdar_objective(logp, old, ref, teacher, advantages, mask, entropy=entropy, kl_coef=0.01,
                                   entropy_coef=0.001, sdar_coef=0.01, beta=5.0)
    m, n = mask.to(F64), 5.0
    pg = (-advantages[:, None] * m).sum() / n                     # ratio 1: -A per token
    kl = (math.exp(-0.5) + 0.5 - 1.0) * 1.0                        # every token: d = -0.5
    mean_entropy = (entropy.detach() * m).sum() / n
    g = 1.0 / (1.0 + math.exp(-5.0 * 0.2))                         # gap 0.2 everywhere
    sdar = g * 0.2
    expected = pg + 0.01 * kl - 0.001 * mean_entropy + 0.01 * sdar
    torch.testing.assert_close(loss, expected)
    loss.backward()
    # d/dlogp: PG -A/N, KL 0.01 (1 - e^d)/N, SDAR -0.01 g/N; d/dentropy: -0.001/N
    grad = (-advantages[:, None] + 0.01 * (1.0 - math.exp(-0.5)) - 0.01 * g) * m / n
    torch.testing.assert_close(logp.grad, grad)
    torch.testing.assert_close(entropy.grad, -0.001 * m / n)
    assert metrics["loss/pg"] == pytest.approx(pg.item())
    assert metrics["loss/kl"] == pytest.approx(kl)
    assert metrics["loss/entropy"] == pytest.approx(mean_entropy.item())
    assert metrics["loss/sdar"] == pytest.approx(sdar)
    assert metrics["sdar/gate_mean"] == pytest.approx(g) and metrics["sdar/gate_active"] == 1.0
    assert metrics["sdar/gap_mean"] == pytest.approx(0.2)
    assert metrics["pg/clip_frac"] == 0.0 and metrics["pg/ratio_mean"] == pytest.approx(1.0)


def test_baselines_are_coefficient_settings():
    logp, old, ref, teacher, advantages, mask, entropy = _case()
    _, grpo = sdar_objective(logp, old, ref, teacher, advantages, mask, sdar_coef=0.0)
    assert "loss/sdar" not in grpo and "loss/entropy" not in grpo and "loss/kl" in grpo
    _, naive = sdar_objective(logp, old, ref, teacher, advantages, mask, beta=0.0)
    assert naive["sdar/gate_mean"] == 0.5                          # GRPO+OPSD: constant gate
    opsd_only, _ = sdar_objective(logp, old, ref, teacher, advantages, mask, pg_coef=0.0, kl_coef=0.0)
    torch.testing.assert_close(opsd_only, torch.tensor(0.01 * 0.2 / (1 + math.exp(-1.0)), dtype=F64))
    with_skill_sd, metrics = sdar_objective(logp, old, ref, teacher, advantages, mask, sdar_coef=0.0,
                                            kl_coef=0.0, skill_sd_coef=0.5)
    k3 = math.exp(0.2) - 0.2 - 1.0                                 # rho = 1 at the rollout weights
    pg = (-advantages[:, None] * mask).sum() / 5.0
    torch.testing.assert_close(with_skill_sd, pg + 0.5 * k3)
    assert metrics["loss/skill_sd"] == pytest.approx(k3)
    rlsd, _ = sdar_objective(logp, old, ref, teacher, advantages, mask, sdar_coef=0.0, kl_coef=0.0, rlsd_lam=0.5)
    # A > 0: exp(+0.2) = 1.22 is clipped to 1.2; A < 0: exp(-0.2) = 0.82 stays inside [0.8, 1.2]
    weight = torch.tensor([0.5 + 0.5 * 1.2, 0.5 + 0.5 * math.exp(-0.2)], dtype=F64)
    torch.testing.assert_close(rlsd, (-(advantages * weight)[:, None] * mask).sum() / 5.0)


def test_denominator_and_bfloat16():
    logp, old, ref, teacher, advantages, mask, entropy = _case()
    own, _ = sdar_objective(logp, old, ref, teacher, advantages, mask)
    shared, _ = sdar_objective(logp, old, ref, teacher, advantages, mask, denominator=10.0)
    torch.testing.assert_close(shared, own * 5.0 / 10.0)          # a mini-batch of 10 tokens, 5 of them here
    logp, old, ref, teacher, advantages, mask, entropy = _case(torch.bfloat16)
    loss, metrics = sdar_objective(logp, old, ref, teacher, advantages, mask, entropy=entropy, gate="soft_or")
    loss.backward()
    assert torch.isfinite(loss.float()) and torch.isfinite(logp.grad.float()).all()
    assert all(math.isfinite(v) for v in metrics.values())


def test_the_centred_gate_at_beta_zero_is_exactly_grpo():
    """gate="gap_centred" weighs by g - 1/2, which is 0 at beta 0: the loss and gradient are GRPO's, bit for bit
    (while the released gate at beta 0 still adds -1/2 grad log pi of every sampled token)."""
    results = {}
    for name, settings in {"grpo": dict(sdar_coef=0.0), "centred": dict(sdar_coef=1.0, beta=0.0, gate="gap_centred"),
                           "released": dict(sdar_coef=1.0, beta=0.0)}.items():
        logp, old, ref, teacher, advantages, mask, entropy = _case()
        loss, _ = sdar_objective(logp, old, ref, teacher, advantages, mask, entropy=entropy, **settings)
        loss.backward()
        results[name] = (loss.detach(), logp.grad.clone())
    assert torch.equal(results["centred"][0], results["grpo"][0])
    assert torch.equal(results["centred"][1], results["grpo"][1])
    assert not torch.equal(results["released"][1], results["grpo"][1])
