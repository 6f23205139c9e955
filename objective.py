"""The SDAR objective on one batch of step samples, over tensors only (the paper's §2, Method):

    L = pg_coef * PG + kl_coef * KL - entropy_coef * H + sdar_coef * SDAR   (+ skill_sd_coef * SkillSD)

This is the function to read next to the paper's equation, and to copy: it needs `grpo.py` and
`gate.py` (torch only) and no config object. The baselines of the paper's table are coefficient
settings: GRPO `sdar_coef=0`, GRPO+OPSD `beta=0`, OPSD `pg_coef=0`, Skill-SD `skill_sd_coef>0`,
RLSD `rlsd_lam>0`. The keyword defaults (of `objective_terms`) are the paper's (SDAR on ALFWorld), the
same as config.TrainConfig's (tests/test_config.py compares them).
"""

from __future__ import annotations

import torch

from gate import sdar_loss
from grpo import aggregate, kl_k3, masked_mean, policy_loss, rlsd_advantages, skill_sd_loss


def objective_terms(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, teacher_logp: torch.Tensor,
                    advantages: torch.Tensor, mask: torch.Tensor, *, entropy: torch.Tensor | None = None,
                    divergence: torch.Tensor | None = None, pg_coef: float = 1.0, kl_coef: float = 0.01,
                    entropy_coef: float = 0.001, sdar_coef: float = 0.01, beta: float = 5.0, gate: str = "gap",
                    skill_sd_coef: float = 0.0, skill_sd_rho_grad: bool = True, rlsd_lam: float = 0.0,
                    clip_low: float = 0.2, clip_high: float = 0.2,
                    dual_clip: float | None = 3.0, agg: str = "token-mean",
                    denominator: float | torch.Tensor | None = None, norm_length: int | None = None):
    """Each weighted term of the objective as a scalar tensor, in the order they add up, and the metrics
    (floats): ({"pg": pg_coef*PG, "kl": kl_coef*KL, "entropy": -entropy_coef*H, "sdar": sdar_coef*SDAR,
    "skill_sd": ...}, metrics). A term that is off is absent. Apart from summing them, this is
    `sdar_objective`; separately they let `diagnostics.term_gradients` measure each term's gradient.

    Every log-prob is `(B, T)` over the response tokens: logp the live student's (with grad), old_logp the
    rollout policy's, ref_logp the initial model's, teacher_logp the same model's with the privileged skills
    in its prompt; advantages `(B,)`; mask `(B, T)`. entropy `(B, T)` is the student's entropy (given when
    `entropy_coef > 0` or a gate needs it); divergence `(B, T)` a full-vocabulary divergence that replaces
    the sampled-token SDAR term. Every term is reduced by `agg` over `mask`, divided by `denominator` when
    given (the token count of the whole mini-batch, so micro-batches and processes add up to one big batch).
    """
    def reduce(values: torch.Tensor) -> torch.Tensor:
        return aggregate(values, mask, agg, denominator, norm_length)

    if rlsd_lam > 0:
        advantages = rlsd_advantages(advantages, teacher_logp, old_logp, rlsd_lam)             # (B, T)
    pg, pg_metrics = policy_loss(logp, old_logp, advantages, mask, clip_low, clip_high, dual_clip,
                                 agg, denominator, norm_length)
    terms = {"pg": pg_coef * pg}
    metrics = {**{f"pg/{k}": v for k, v in pg_metrics.items()}, "loss/pg": pg.item()}
    if kl_coef > 0:
        kl = reduce(kl_k3(logp, ref_logp))
        terms["kl"] = kl_coef * kl
        metrics["loss/kl"] = kl.item()
    if entropy is not None:
        mean_entropy = reduce(entropy)
        terms["entropy"] = -entropy_coef * mean_entropy
        metrics["loss/entropy"] = mean_entropy.item()
    if sdar_coef > 0:
        token_loss, gate_values, gap = sdar_loss(logp, teacher_logp, beta, gate, entropy, divergence)  # (B, T) x 3
        sdar = reduce(token_loss)
        terms["sdar"] = sdar_coef * sdar
        metrics.update({"loss/sdar": sdar.item(), "sdar/gate_mean": masked_mean(gate_values, mask).item(),
                        "sdar/gate_active": masked_mean((gate_values > 0.5).to(gate_values.dtype), mask).item(),
                        "sdar/gap_mean": masked_mean(gap, mask).item()})
    if skill_sd_coef > 0:
        skill_sd = skill_sd_loss(logp, old_logp, teacher_logp, mask, agg, denominator, norm_length, skill_sd_rho_grad)
        terms["skill_sd"] = skill_sd_coef * skill_sd
        metrics["loss/skill_sd"] = skill_sd.item()
    return terms, metrics


def sdar_objective(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, teacher_logp: torch.Tensor,
                   advantages: torch.Tensor, mask: torch.Tensor, **coefficients):
    """The loss to minimise, L = pg_coef*PG + kl_coef*KL - entropy_coef*H + sdar_coef*SDAR (+ Skill-SD),
    and its metrics (floats). Arguments, shapes and keyword coefficients: `objective_terms`."""
    terms, metrics = objective_terms(logp, old_logp, ref_logp, teacher_logp, advantages, mask, **coefficients)
    loss = terms["pg"]
    for name in ("kl", "entropy", "sdar", "skill_sd"):
        if name in terms:
            loss = loss + terms[name]
    return loss, metrics
