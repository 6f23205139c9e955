"""gate.py: the detached gates, the SDAR token loss and its gradient, the Skill-SD term."""

import math

import pytest
import torch

from gate import entropy_gate, gap_gate, sdar_loss, skill_sd_loss, soft_or_gate

F64 = torch.float64
sigmoid = lambda x: 1.0 / (1.0 + math.exp(-x))


def test_gap_gate_reference_values():
    student = torch.zeros(1, 3, dtype=F64)
    teacher = torch.tensor([[-0.5, 0.0, 0.5]], dtype=F64)
    g = gap_gate(teacher, student, beta=5.0)
    torch.testing.assert_close(g, torch.tensor([[0.0759, 0.5, 0.9241]], dtype=F64), atol=1e-4, rtol=0)


def test_gap_gate_monotone_constant_at_beta_zero_and_detached():
    gaps = torch.linspace(-3, 3, 61, dtype=F64)[None]
    student = torch.zeros_like(gaps, requires_grad=True)
    g = gap_gate(gaps, student, beta=5.0)
    assert (g[0, 1:] > g[0, :-1]).all()
    assert not g.requires_grad
    torch.testing.assert_close(gap_gate(gaps, student, beta=0.0), torch.full_like(gaps, 0.5))


def test_entropy_and_soft_or_gates():
    h = torch.tensor([[0.0, 0.2, 1.0]], dtype=F64, requires_grad=True)
    gap = torch.tensor([[0.0, 0.5, -1.0]], dtype=F64)
    torch.testing.assert_close(entropy_gate(h, 2.0)[0], torch.tensor([sigmoid(0), sigmoid(0.4), sigmoid(2)], dtype=F64))
    expected = [sigmoid(2 * (1 - (1 - 0.0) * (1 - 0.0))), sigmoid(2 * (1 - 0.8 * 0.5)), sigmoid(2 * (1 - 0.0 * 2.0))]
    torch.testing.assert_close(soft_or_gate(h, gap, 2.0)[0], torch.tensor(expected, dtype=F64))
    assert not entropy_gate(h, 2.0).requires_grad and not soft_or_gate(h, gap, 2.0).requires_grad


def _ragged():
    torch.manual_seed(0)
    student = torch.randn(3, 4, dtype=F64).clamp(max=0).requires_grad_()
    teacher = torch.randn(3, 4, dtype=F64).clamp(max=0)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]])
    return student, teacher, mask


def test_sdar_loss_value_gradient_and_metrics():
    student, teacher, mask = _ragged()
    loss, metrics = sdar_loss(student, teacher, mask, beta=5.0)
    g = torch.sigmoid(5.0 * (teacher - student.detach()))
    n = mask.sum()
    expected = (g * (teacher - student.detach()) * mask).sum() / n
    torch.testing.assert_close(loss, expected)
    loss.backward()
    torch.testing.assert_close(student.grad, -g * mask / n)      # dL/ds = -g m / N
    m = mask.bool()
    assert metrics["gate_mean"] == pytest.approx(g[m].mean().item())
    assert metrics["gate_active"] == pytest.approx((g[m] > 0.5).double().mean().item())
    assert metrics["gap_mean"] == pytest.approx((teacher - student.detach())[m].mean().item())


def test_sdar_beta_zero_is_half_weighted_distillation():
    student, teacher, mask = _ragged()
    loss, metrics = sdar_loss(student, teacher, mask, beta=0.0)
    loss.backward()
    torch.testing.assert_close(student.grad, -0.5 * mask.double() / mask.sum())
    assert metrics["gate_mean"] == pytest.approx(0.5)


def test_sdar_loss_gradcheck_and_variants():
    student, teacher, mask = _ragged()
    x = student.detach().clone().requires_grad_()
    # the gap gate is a stop-gradient, so finite differences (which see the gate move) only agree with
    # autograd when the gate is constant: beta = 0
    assert torch.autograd.gradcheck(lambda s: sdar_loss(s, teacher, mask, beta=0.0)[0], (x,))
    entropy = torch.rand(3, 4, dtype=F64)
    for gate in ("entropy", "soft_or"):
        loss, _ = sdar_loss(x, teacher, mask, gate=gate, entropy=entropy)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError):
        sdar_loss(x, teacher, mask, gate="entropy")
    divergence = torch.rand(3, 4, dtype=F64)
    loss, _ = sdar_loss(x, teacher, mask, divergence=divergence)
    g = torch.sigmoid(5.0 * (teacher - x.detach()))
    torch.testing.assert_close(loss, (g * divergence * mask).sum() / mask.sum())


def test_skill_sd_loss_value_and_gradient():
    student, teacher, mask = _ragged()
    old = student.detach() - 0.3
    loss = skill_sd_loss(student, old, teacher, mask)
    rho = math.exp(0.3)
    d = teacher - student.detach()
    n = mask.sum()
    torch.testing.assert_close(loss, (rho * (d.exp() - d - 1) * mask).sum() / n)
    loss.backward()
    torch.testing.assert_close(student.grad, rho * (1 - d.exp()) * mask / n)


def test_bfloat16_is_finite():
    student, teacher, mask = _ragged()
    s = student.detach().bfloat16().requires_grad_()
    loss, metrics = sdar_loss(s, teacher.bfloat16(), mask)
    loss.backward()
    assert torch.isfinite(loss.float()) and torch.isfinite(s.grad.float()).all()
    assert all(math.isfinite(v) for v in metrics.values())
    assert torch.isfinite(skill_sd_loss(s, s.detach(), teacher.bfloat16(), mask).float())


def test_sum_norm_divides_by_the_given_length():
    student = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], dtype=F64)   # (B, T)
    teacher = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], dtype=F64)   # (B, T) equal: gap 0, g = 0.5
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    loss, _ = sdar_loss(student.requires_grad_(), teacher, mask, beta=5.0, agg="seq-mean-token-sum-norm", norm_length=8)
    loss.backward()
    # l = 0.5 * (teacher - student) = 0 in value; d l / d student = -0.5 per token, / 8 per row, / 2 rows
    assert loss.item() == pytest.approx(0.0)
    assert torch.allclose(student.grad, -0.5 / 8 / 2 * mask.to(F64))
