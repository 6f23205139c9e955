"""The SDAR distillation term: a detached sigmoid gate on the teacher-student gap, and its token loss.

Self-contained (imports torch only). Shapes: B step samples, T response tokens.
The teacher is the same model given privileged skill text; its log-probs of the student's own sampled
tokens are computed once per iteration (see `opsd.py`) and enter here as constants.
"""

from __future__ import annotations

import torch

GATES = ("gap", "entropy", "soft_or", "gap_centred")


def gap_gate(teacher_logp: torch.Tensor, student_logp: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """g_t = sg(sigmoid(beta (teacher_logp_t - student_logp_t))); inputs and output `(B, T)`.

    Near 1 where the privileged teacher finds the sampled token more likely than the student does
    (a token worth reinforcing), near 0 where the teacher disagrees. beta = 0 gives 0.5 everywhere.
    """
    return torch.sigmoid(beta * (teacher_logp - student_logp)).detach()  # (B, T)


def centred_gap_gate(teacher_logp: torch.Tensor, student_logp: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """w_t = sg(sigmoid(beta (teacher_logp_t - student_logp_t))) - 1/2, in (-1/2, 1/2); `(B, T)`.

    Beyond the paper (an option of this project, not the released code). On-policy the gated term's
    gradient is a policy gradient with per-token reward g_t and no baseline; subtracting the constant 1/2
    is a baseline: E[sum_t grad log pi(y_t)] = 0 under the student's own samples, so the expected gradient
    is unchanged and its variance drops. beta = 0 gives w = 0: the term vanishes and the run is GRPO.
    """
    return gap_gate(teacher_logp, student_logp, beta) - 0.5          # (B, T)


def entropy_gate(entropy: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """g_t = sg(sigmoid(beta h_t)), h_t the student's full-vocabulary entropy `(B, T)` (ablation)."""
    return torch.sigmoid(beta * entropy).detach()                    # (B, T)


def soft_or_gate(entropy: torch.Tensor, gap: torch.Tensor, beta: float = 5.0) -> torch.Tensor:
    """g_t = sg(sigmoid(beta (1 - (1 - h_t)(1 - delta_t)))): high when the entropy OR the gap is high."""
    return torch.sigmoid(beta * (1.0 - (1.0 - entropy) * (1.0 - gap))).detach()  # (B, T)


def sdar_loss(student_logp: torch.Tensor, teacher_logp: torch.Tensor, beta: float = 5.0, gate: str = "gap",
              entropy: torch.Tensor | None = None, divergence: torch.Tensor | None = None):
    """l_t = g_t (sg(teacher_logp_t) - student_logp_t), g_t a detached gate; returns (l, g, gap), each `(B, T)`.

    student_logp `(B, T)` live log-probs of the sampled tokens (with grad); teacher_logp `(B, T)` the
    teacher's log-probs of the same tokens; entropy `(B, T)` the student's entropy, needed by the
    entropy and soft-OR gates; divergence `(B, T)` an optional per-token full-vocabulary divergence
    (`opsd.vocab_divergence`: reverse KL etc.) that replaces the sampled-token term, gated the same way.
    The loss is per token: reduce it over the response mask like every other term of the objective
    (`grpo.aggregate`, token mean by default), which keeps this file free of reductions.

    Gradient: the gate and the teacher are constants, so for a token mean over N tokens
        dL/d student_logp_t = -g_t * m_t / N,
    a gated push-up of the student's own sampled token. The teacher acts only through the gate: the
    loss never pulls the student towards tokens it did not sample. beta = 0 makes g_t = 0.5 for every
    token, which is the naive GRPO+OPSD baseline of the paper. `gate="gap_centred"` weighs by g_t - 1/2
    instead (`centred_gap_gate`, beyond the paper): same expected gradient, less variance.
    """
    gap = (teacher_logp - student_logp).detach()                     # (B, T) delta_t
    if gate == "gap":
        gate_values = gap_gate(teacher_logp, student_logp, beta)     # (B, T)
    elif gate == "gap_centred":
        gate_values = centred_gap_gate(teacher_logp, student_logp, beta)  # (B, T)
    elif gate in ("entropy", "soft_or"):
        if entropy is None:
            raise ValueError(f"gate={gate!r} needs the student's entropy")
        gate_values = (entropy_gate(entropy, beta) if gate == "entropy"
                       else soft_or_gate(entropy.detach(), gap, beta))  # (B, T)
    else:
        raise ValueError(f"gate={gate!r} is unknown; choose one of {GATES}")
    token_loss = teacher_logp.detach() - student_logp if divergence is None else divergence  # (B, T)
    return gate_values * token_loss, gate_values, gap               # (B, T) x 3
