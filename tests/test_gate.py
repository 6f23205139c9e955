"""gate.py: the detached gates, the SDAR token loss and its gradient."""

import math

import pytest
import torch

from gate import centred_gap_gate, entropy_gate, gap_gate, sdar_loss, soft_or_gate
from grpo import aggregate

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


def test_sdar_loss_value_and_gradient_under_the_token_mean():
    student, teacher, mask = _ragged()
    token_loss, g, gap = sdar_loss(student, teacher, beta=5.0)
    expected_g = torch.sigmoid(5.0 * (teacher - student.detach()))
    torch.testing.assert_close(g, expected_g)
    torch.testing.assert_close(gap, teacher - student.detach())
    torch.testing.assert_close(token_loss, expected_g * (teacher - student.detach()))
    assert not g.requires_grad and not gap.requires_grad
    n = mask.sum()
    loss = aggregate(token_loss, mask)                           # the objective's token mean
    torch.testing.assert_close(loss, (expected_g * (teacher - student.detach()) * mask).sum() / n)
    loss.backward()
    torch.testing.assert_close(student.grad, -expected_g * mask / n)      # dL/ds = -g m / N


def test_sdar_beta_zero_is_half_weighted_distillation():
    student, teacher, mask = _ragged()
    token_loss, g, _ = sdar_loss(student, teacher, beta=0.0)
    aggregate(token_loss, mask).backward()
    torch.testing.assert_close(student.grad, -0.5 * mask.double() / mask.sum())
    torch.testing.assert_close(g, torch.full_like(g, 0.5))


def test_sdar_loss_gradcheck_and_variants():
    student, teacher, mask = _ragged()
    x = student.detach().clone().requires_grad_()
    # the gap gate is a stop-gradient, so finite differences (which see the gate move) only agree with
    # autograd when the gate is constant: beta = 0
    assert torch.autograd.gradcheck(lambda s: aggregate(sdar_loss(s, teacher, beta=0.0)[0], mask), (x,))
    entropy = torch.rand(3, 4, dtype=F64)
    torch.testing.assert_close(sdar_loss(x, teacher, gate="entropy", entropy=entropy)[1], entropy_gate(entropy))
    gap = teacher - x.detach()
    torch.testing.assert_close(sdar_loss(x, teacher, gate="soft_or", entropy=entropy)[1], soft_or_gate(entropy, gap))
    with pytest.raises(ValueError):
        sdar_loss(x, teacher, gate="entropy")
    with pytest.raises(ValueError):
        sdar_loss(x, teacher, gate="margin")
    divergence = torch.rand(3, 4, dtype=F64)
    token_loss, g, _ = sdar_loss(x, teacher, divergence=divergence)
    torch.testing.assert_close(token_loss, torch.sigmoid(5.0 * gap) * divergence)


def test_bfloat16_is_finite():
    student, teacher, mask = _ragged()
    s = student.detach().bfloat16().requires_grad_()
    token_loss, g, gap = sdar_loss(s, teacher.bfloat16())
    loss = aggregate(token_loss, mask)
    loss.backward()
    assert torch.isfinite(loss.float()) and torch.isfinite(s.grad.float()).all()
    assert torch.isfinite(g.float()).all() and torch.isfinite(gap.float()).all()
    assert g.dtype == torch.bfloat16


def test_sum_norm_divides_by_the_given_length():
    student = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], dtype=F64)   # (B, T)
    teacher = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]], dtype=F64)   # (B, T) equal: gap 0, g = 0.5
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    token_loss, _, _ = sdar_loss(student.requires_grad_(), teacher, beta=5.0)
    loss = aggregate(token_loss, mask, "seq-mean-token-sum-norm", norm_length=8)
    loss.backward()
    # l = 0.5 * (teacher - student) = 0 in value; d l / d student = -0.5 per token, / 8 per row, / 2 rows
    assert loss.item() == pytest.approx(0.0)
    assert torch.allclose(student.grad, -0.5 / 8 / 2 * mask.to(F64))


@pytest.mark.parametrize("dtype", [F64, torch.bfloat16])
def test_centred_gate_value_and_gradient_on_a_ragged_mask(dtype):
    student, teacher, mask = _ragged()
    s = student.detach().to(dtype).requires_grad_()
    t = teacher.to(dtype)
    token_loss, w, _ = sdar_loss(s, t, beta=5.0, gate="gap_centred")
    expected_w = torch.sigmoid(5.0 * (t - s.detach())) - 0.5                    # (B, T) in (-1/2, 1/2)
    torch.testing.assert_close(w, expected_w)
    torch.testing.assert_close(centred_gap_gate(t, s, 5.0), gap_gate(t, s, 5.0) - 0.5)
    assert not w.requires_grad
    aggregate(token_loss, mask).backward()
    tolerance = {} if dtype == F64 else dict(atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(s.grad, -expected_w * mask / mask.sum(), **tolerance)   # dL/ds = -(g - 1/2) m / N
    assert token_loss.dtype == dtype


def test_centred_gate_at_beta_zero_has_no_gradient_and_no_value():
    student, teacher, mask = _ragged()
    token_loss, w, _ = sdar_loss(student, teacher, beta=0.0, gate="gap_centred")
    loss = aggregate(token_loss, mask)
    loss.backward()
    assert loss.item() == 0.0 and (w == 0).all() and (student.grad == 0).all()


def test_centred_and_released_weights_differ_by_a_zero_mean_term_on_policy():
    """E_y~pi[grad log pi(y)] = 0: subtracting 1/2 from the weight leaves the expected gradient unchanged.
    Exact over a categorical policy: sum_y pi(y) * 1/2 * grad log pi(y) = 1/2 grad sum_y pi(y) = 0."""
    logits = torch.randn(5, dtype=F64, requires_grad=True)
    logp = torch.log_softmax(logits, -1)                                         # (V,) every token once
    half = (logp.exp().detach() * 0.5 * logp).sum()                             # expectation of the 1/2 part
    (grad,) = torch.autograd.grad(half, logits)
    torch.testing.assert_close(grad, torch.zeros(5, dtype=F64), atol=1e-12, rtol=0)
