"""grpo.py against hand-computed values, on ragged masks, in float64 and bfloat16."""

import math

import pytest
import torch

from grpo import aggregate, group_advantages, kl_k3, policy_loss, rlsd_advantages, skill_sd_loss

F64 = torch.float64


def test_group_advantages_hand_values():
    scores = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 7.0], dtype=F64)
    groups = torch.tensor([0, 0, 0, 1, 1, 2])
    adv = group_advantages(scores, groups)
    # group 0: mean 2, unbiased std 1; group 1: std 0 -> 0/(0+eps) = 0; group 2: singleton -> 0
    expected = torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=F64) / torch.tensor([1 + 1e-6] * 3 + [1] * 3, dtype=F64)
    torch.testing.assert_close(adv, expected)
    assert adv.dtype == F64
    plain = group_advantages(scores, groups, norm_by_std=False)
    torch.testing.assert_close(plain, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=F64))


def test_group_advantages_one_value_per_trajectory():
    scores = torch.tensor([1.0, 1.9, 3.0, 4.0], dtype=F64)  # trajectory 0 has two step samples
    groups = torch.tensor([0, 0, 0, 0])
    trajs = torch.tensor([0, 0, 1, 2])
    adv = group_advantages(scores, groups, trajs, cross_steps=False)
    mean, std = 8.0 / 3.0, math.sqrt(7.0 / 3.0)               # over [1, 3, 4]
    expected = (scores - mean) / (std + 1e-6)
    torch.testing.assert_close(adv, expected)
    pooled = group_advantages(scores, groups, trajs, cross_steps=True)
    assert not torch.allclose(pooled, adv)
    with pytest.raises(ValueError):
        group_advantages(scores, groups, cross_steps=False)


# Five tokens covering both signs of A, ratios inside and outside the clip range and the dual-clip region:
# (A, ratio) -> per-token loss
CASES = [
    (+1.0, 1.5, -1.2),   # A>0, ratio above 1+eps: clipped
    (+1.0, 0.5, -0.5),   # A>0, ratio below 1-eps: unclipped term is larger
    (-1.0, 1.5, 1.5),    # A<0, ratio above: unclipped (1.5 > 1.2), below the dual bound 3
    (-1.0, 4.0, 3.0),    # A<0, ratio 4: max gives 4, dual clip caps at -A*c = 3
    (-1.0, 0.5, 0.8),    # A<0, ratio below 1-eps: clipped term 0.8
    (+2.0, 1.0, -2.0),   # ratio 1: -A
]


def _case_tensors(dtype):
    adv = torch.tensor([[a for a, _, _ in CASES]], dtype=dtype)
    ratio = torch.tensor([[r for _, r, _ in CASES]], dtype=F64)
    old = torch.zeros_like(ratio, dtype=dtype) - 1.0
    logp = (old.double() + ratio.log()).to(dtype)
    expected = torch.tensor([[e for _, _, e in CASES]], dtype=F64)
    return logp, old, adv, expected


def test_policy_loss_hand_values_ragged():
    logp, old, adv, expected = _case_tensors(F64)
    # two rows: row 0 has all six tokens, row 1 none (an empty response)
    logp = torch.cat([logp, logp]); old = torch.cat([old, old]); adv2 = torch.cat([adv, adv])
    mask = torch.tensor([[1] * 6, [0] * 6])
    loss, metrics = policy_loss(logp, old, adv2, mask)
    torch.testing.assert_close(loss, expected.sum() / 6)
    # clipped > unclipped on tokens 0 and 4 only
    assert metrics["clip_frac"] == pytest.approx(2 / 6)
    assert metrics["dual_clip_frac"] == pytest.approx(1 / 6)
    assert metrics["ratio_mean"] == pytest.approx((1.5 + 0.5 + 1.5 + 4.0 + 0.5 + 1.0) / 6)
    # a partially masked row only counts its own tokens
    mask = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]])
    loss, _ = policy_loss(logp, old, adv2, mask)
    torch.testing.assert_close(loss, (expected[0, 0] + expected[0, 1] + expected[0, 3]) / 3)


def test_policy_loss_without_dual_clip():
    logp, old, adv, _ = _case_tensors(F64)
    mask = torch.zeros_like(logp, dtype=torch.long); mask[0, 3] = 1
    loss, _ = policy_loss(logp, old, adv, mask, dual_clip=None)
    torch.testing.assert_close(loss, torch.tensor(4.0, dtype=F64))


def test_policy_loss_sequence_advantages_broadcast():
    logp = torch.randn(3, 4, dtype=F64); old = logp + 0.01 * torch.randn(3, 4, dtype=F64)
    adv = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    a, _ = policy_loss(logp, old, adv, mask)
    b, _ = policy_loss(logp, old, adv[:, None].expand(3, 4), mask)
    torch.testing.assert_close(a, b)


def test_policy_loss_gradient_at_ratio_one():
    logp = torch.randn(2, 5, dtype=F64, requires_grad=True)
    old = logp.detach().clone()
    adv = torch.tensor([0.7, -1.3], dtype=F64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    loss, _ = policy_loss(logp, old, adv, mask)
    loss.backward()
    expected = -adv[:, None] * mask / mask.sum()
    torch.testing.assert_close(logp.grad, expected)


def test_policy_loss_gradcheck():
    torch.manual_seed(0)
    old = torch.randn(2, 4, dtype=F64)
    logp = (old + 0.05 * torch.randn(2, 4, dtype=F64)).requires_grad_()  # away from clip boundaries
    adv = torch.tensor([1.0, -2.0], dtype=F64)
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 1]])
    assert torch.autograd.gradcheck(lambda x: policy_loss(x, old, adv, mask)[0], (logp,))


def test_kl_k3_values_and_clamps():
    logp = torch.tensor([[0.0, -1.0, -30.0, 0.0]], dtype=F64)
    ref = torch.tensor([[math.log(0.5), -1.0, -1.0, -5.0]], dtype=F64)
    kl = kl_k3(logp, ref)
    d0 = math.log(0.5)
    assert kl[0, 0].item() == pytest.approx(math.exp(d0) - d0 - 1)
    assert kl[0, 1].item() == pytest.approx(0.0)
    assert kl[0, 2].item() == pytest.approx(10.0)                  # d = 29 -> clamp 20 -> kl clamp 10
    assert kl[0, 3].item() == pytest.approx(math.exp(-5) + 5 - 1)  # d = -5: inside both clamps
    assert (kl >= 0).all()
    x = torch.randn(3, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: kl_k3(v, torch.zeros(3, 3, dtype=F64)), (x,))


def test_aggregate_modes_hand_values():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum").item() == pytest.approx((6 + 4) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum-norm").item() == pytest.approx((6 / 3 + 4 / 3) / 2)
    assert aggregate(values, mask, "seq-mean-token-sum-norm", norm_length=10).item() == pytest.approx((6 + 4) / 10 / 2)
    assert aggregate(values, mask, "token-mean", denominator=8).item() == pytest.approx(10 / 8)
    assert aggregate(values, torch.zeros_like(mask), "token-mean").item() == 0.0
    with pytest.raises(ValueError):
        aggregate(values, mask, "mean")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                                  "seq-mean-token-sum-norm"])
def test_global_denominator_reproduces_the_full_batch(mode):
    """Micro-batches summed with the whole batch's count give the full-batch loss and gradient."""
    torch.manual_seed(1)
    x = torch.randn(6, 5, dtype=F64, requires_grad=True)
    mask = (torch.rand(6, 5) > 0.4).long(); mask[2] = 0
    full = aggregate(x, mask, mode)
    (grad_full,) = torch.autograd.grad(full, x)
    count = mask.sum() if mode == "token-mean" else (mask.sum(-1) > 0).sum()
    parts = sum(aggregate(x[i:i + 2], mask[i:i + 2], mode, denominator=count) for i in range(0, 6, 2))
    (grad_parts,) = torch.autograd.grad(parts, x)
    torch.testing.assert_close(parts, full)
    torch.testing.assert_close(grad_parts, grad_full)


def test_rlsd_advantages_hand_values():
    adv = torch.tensor([2.0, -1.0], dtype=F64)
    teacher = torch.tensor([[0.0, -1.0], [0.0, -1.0]], dtype=F64)
    old = torch.tensor([[-0.1, -0.5], [-0.1, -0.5]], dtype=F64)
    out = rlsd_advantages(adv, teacher, old, lam=0.5, clip=0.2)
    w = lambda s, gap: min(max(math.exp(s * gap), 0.8), 1.2)
    expected = torch.tensor([[2 * (0.5 + 0.5 * w(1, 0.1)), 2 * (0.5 + 0.5 * w(1, -0.5))],
                             [-1 * (0.5 + 0.5 * w(-1, 0.1)), -1 * (0.5 + 0.5 * w(-1, -0.5))]], dtype=F64)
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad


def test_bfloat16_is_finite():
    logp, old, adv, _ = _case_tensors(torch.bfloat16)
    mask = torch.ones_like(logp, dtype=torch.long)
    loss, _ = policy_loss(logp.requires_grad_(), old, adv, mask)
    loss.backward()
    assert torch.isfinite(loss.float()) and torch.isfinite(logp.grad.float()).all()
    assert torch.isfinite(kl_k3(logp.detach(), old).float()).all()
    scores = torch.tensor([1.0, 0.0, 10.0, 10.0], dtype=torch.bfloat16)
    assert torch.isfinite(group_advantages(scores, torch.tensor([0, 0, 1, 1])).float()).all()


def test_skill_sd_loss_value_and_gradient():
    torch.manual_seed(0)
    student = (torch.randn(3, 4, dtype=F64).clamp(max=0) - 3.0).requires_grad_()
    teacher = torch.randn(3, 4, dtype=F64).clamp(max=0)               # gaps of ~3 nats: k3 above 10, unclamped
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]])
    old = student.detach() - 0.3
    rho = math.exp(0.3)
    d = teacher - student.detach()
    k3 = d.exp() - d - 1
    n = mask.sum()
    assert k3[mask.bool()].max() > 10
    for rho_grad in (True, False):
        student.grad = None
        loss = skill_sd_loss(student, old, teacher, mask, rho_grad=rho_grad)
        torch.testing.assert_close(loss, (rho * k3 * mask).sum() / n)
        loss.backward()
        # d(rho k3)/ds = rho k3 (released: through rho, d rho/ds = rho) + rho (1 - e^d) (through k3)
        expected = rho * ((k3 if rho_grad else 0.0) + 1 - d.exp()) * mask / n
        torch.testing.assert_close(student.grad, expected)
    s = student.detach().bfloat16().requires_grad_()
    assert torch.isfinite(skill_sd_loss(s, s.detach(), teacher.bfloat16(), mask).float())


def test_skill_sd_clamps_one_side_as_released():
    """l = student - teacher = 29 and rho = e^-1 (student - old = -1): the released clamp (-l <= 20 only)
    keeps the whole gradient rho (k3 + 1 - e^-l) = e^-1 (28 + e^-29 + 1 - e^-29) = 29 / e = 10.67; a clamp
    of d to [-20, 20] would leave rho (19 + e^-20) = 6.99. The other side stays clamped: at l = -29,
    d = 20 and only rho's own gradient rho k3 remains, finite."""
    student = torch.tensor([[-1.0, -31.0]], dtype=F64, requires_grad=True)
    teacher = torch.tensor([[-30.0, -2.0]], dtype=F64)                # l = 29 and l = -29
    old = torch.tensor([[0.0, -30.0]], dtype=F64)                     # rho = e^-1 on both
    mask = torch.ones(1, 2)
    loss = skill_sd_loss(student, old, teacher, mask, agg="seq-mean-token-sum")
    loss.backward()
    e = math.exp(-1.0)
    expected = e * (math.exp(-29.0) + 28.0) + e * (math.exp(20.0) - 21.0)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(student.grad, torch.tensor([[29.0 * e, e * (math.exp(20.0) - 21.0)]], dtype=F64))
    assert student.grad[0, 0].item() == pytest.approx(10.668, abs=1e-3)
