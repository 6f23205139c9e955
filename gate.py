"""The SDAR distillation term: a detached sigmoid gate on the teacher-student gap, and its token loss.

Self-contained (imports torch only). Shapes: B step samples, T response tokens, `mask` `(B, T)`.
The teacher is the same model given privileged skill text; its log-probs of the student's own sampled
tokens are computed once per iteration (see `opsd.py`) and enter here as constants.
"""

from __future__ import annotations

import torch

GATES = ("gap", "entropy", "soft_or")


def _aggregate(values: torch.Tensor, mask: torch.Tensor, agg: str,
               denominator: float | torch.Tensor | None, norm_length: int | None = None) -> torch.Tensor:
    """Same reductions as `grpo.aggregate` (kept here so this file stands alone)."""
    mask = mask.to(values.dtype)                                     # (B, T)
    if agg == "token-mean":
        total, count = (values * mask).sum(), mask.sum()             # (), ()
    elif agg in ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        seq_tokens = mask.sum(-1)                                    # (B,)
        seq_value = (values * mask).sum(-1)                          # (B,)
        if agg == "seq-mean-token-mean":
            seq_value = seq_value / seq_tokens.clamp(min=1)          # (B,)
        elif agg == "seq-mean-token-sum-norm":
            seq_value = seq_value / (norm_length or values.shape[-1])  # (B,)
        total, count = seq_value.sum(), (seq_tokens > 0).to(values.dtype).sum()  # (), ()
    else:
        raise ValueError(f"agg={agg!r} is unknown")
    if denominator is not None:
        count = torch.as_tensor(denominator, dtype=values.dtype, device=values.device)
    return total / count.clamp(min=1)


def gap_gate(teacher_logp: torch.Tensor, student_logp: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """g_t = sg(sigmoid(beta (teacher_logp_t - student_logp_t))); inputs and output `(B, T)`.

    Near 1 where the privileged teacher finds the sampled token more likely than the student does
    (a token worth reinforcing), near 0 where the teacher disagrees. beta = 0 gives 0.5 everywhere.
    """
    return torch.sigmoid(beta * (teacher_logp - student_logp)).detach()  # (B, T)


def entropy_gate(entropy: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """g_t = sg(sigmoid(beta h_t)), h_t the student's full-vocabulary entropy `(B, T)` (ablation)."""
    return torch.sigmoid(beta * entropy).detach()                    # (B, T)


def soft_or_gate(entropy: torch.Tensor, gap: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """g_t = sg(sigmoid(beta (1 - (1 - h_t)(1 - delta_t)))): high when the entropy OR the gap is high."""
    return torch.sigmoid(beta * (1.0 - (1.0 - entropy) * (1.0 - gap))).detach()  # (B, T)


def sdar_loss(student_logp: torch.Tensor, teacher_logp: torch.Tensor, mask: torch.Tensor, beta: float = 5.0,
              gate: str = "gap", entropy: torch.Tensor | None = None, agg: str = "token-mean",
              divergence: torch.Tensor | None = None, denominator: float | torch.Tensor | None = None,
              norm_length: int | None = None):
    """L = agg_t( g_t (sg(teacher_logp_t) - student_logp_t) ), g_t a detached gate; returns (loss, metrics).

    student_logp `(B, T)` live log-probs of the sampled tokens (with grad); teacher_logp `(B, T)` the
    teacher's log-probs of the same tokens; mask `(B, T)`; entropy `(B, T)` student entropy, needed by
    the entropy and soft-OR gates; divergence `(B, T)` an optional per-token full-vocabulary divergence
    (`opsd.reverse_kl` etc.) that replaces the sampled-token term, gated the same way.

    Gradient: the gate and the teacher are constants, so for token-mean over N tokens
        dL/d student_logp_t = -g_t * m_t / N,
    a gated push-up of the student's own sampled token. The teacher acts only through the gate: the
    loss never pulls the student towards tokens it did not sample. beta = 0 makes g_t = 0.5 for every
    token, which is the naive GRPO+OPSD baseline of the paper.
    """
    gap = (teacher_logp - student_logp).detach()                     # (B, T) delta_t
    if gate == "gap":
        g = gap_gate(teacher_logp, student_logp, beta)               # (B, T)
    elif gate in ("entropy", "soft_or"):
        if entropy is None:
            raise ValueError(f"gate={gate!r} needs the student's entropy")
        g = entropy_gate(entropy, beta) if gate == "entropy" else soft_or_gate(entropy.detach(), gap, beta)
    else:
        raise ValueError(f"gate={gate!r} is unknown; choose one of {GATES}")
    if divergence is None:
        token_loss = teacher_logp.detach() - student_logp            # (B, T)
    else:
        token_loss = divergence                                      # (B, T)
    loss = _aggregate(g * token_loss, mask, agg, denominator, norm_length)  # ()
    with torch.no_grad():
        metrics = {
            "gate_mean": _aggregate(g, mask, "token-mean", None).item(),
            "gate_active": _aggregate((g > 0.5).to(g.dtype), mask, "token-mean", None).item(),
            "gap_mean": _aggregate(gap, mask, "token-mean", None).item(),
        }
    return loss, metrics


def skill_sd_loss(student_logp: torch.Tensor, old_logp: torch.Tensor, teacher_logp: torch.Tensor,
                  mask: torch.Tensor, agg: str = "token-mean",
                  denominator: float | torch.Tensor | None = None, norm_length: int | None = None) -> torch.Tensor:
    """Skill-SD baseline term: agg_t( rho_t k3(student, teacher)_t ), rho_t = sg(exp(min(logp - old_logp, 10))).

    All inputs `(B, T)`. k3 = exp(d) - d - 1 with d = teacher_logp - student_logp estimates
    KL(student || teacher) from the student's samples; rho_t corrects for the samples coming from the
    rollout policy and is a constant weight.
    """
    rho = torch.exp((student_logp - old_logp).clamp(max=10.0)).detach()  # (B, T)
    d = (teacher_logp.detach() - student_logp).clamp(-20.0, 20.0)   # (B, T)
    k3 = torch.exp(d) - d - 1.0                                      # (B, T)
    return _aggregate(rho * k3, mask, agg, denominator, norm_length)
