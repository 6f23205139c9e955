"""GRPO for step-wise agent rollouts: group advantages, the clipped policy loss, the k3 KL, aggregation,
and the two GRPO-based baselines of the paper (RLSD's advantage reweighting, the Skill-SD term).

Self-contained (imports torch only) so it can be copied into another codebase.
Shapes: B step samples (one per agent turn), T response tokens; `mask` is 1 on real response tokens.
"""

from __future__ import annotations

import torch

AGG_MODES = ("token-mean", "micro-token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean",
              denominator: float | torch.Tensor | None = None, norm_length: int | None = None) -> torch.Tensor:
    """Reduce per-token values `(B, T)` to a scalar under `mask` `(B, T)`.

    token-mean:               sum_bt m*x / sum_bt m                  (verl default; verl-agent and the
                                                                      SDAR code; TRL's "dapo")
    micro-token-mean:         the same over one micro-batch, divided by the number of accumulation steps
                              K (pass denominator = its own token count x K); data-parallel training
                              then averages over the G GPUs. This is how the released code (verl)
                              applies token-mean: L = 1/G sum_g 1/K sum_k [sum_{bt in k,g} m*x / sum m],
                              so a micro-batch with few tokens weighs as much as one with many.
    seq-mean-token-mean:      mean_b [ sum_t m*x / sum_t m ]         (DeepSeekMath GRPO; TRL's "grpo")
    seq-mean-token-sum:       mean_b [ sum_t m*x ]                   (verl option)
    seq-mean-token-sum-norm:  mean_b [ sum_t m*x / L ]               (Dr.GRPO, TRL's "dr_grpo"; verl's
                                                                      version divides the plain sum by L)
    For token-mean and the seq modes, pass denominator = the count of the whole mini-batch (tokens or
    rows) over all accumulation steps and GPUs: micro-batches and processes then add up to exactly the
    loss of one big batch (this project's default).
    L is `norm_length`, a constant such as the generation budget (max_new_tokens); it defaults to this
    batch's width T, which makes the result depend on how samples are grouped into batches.
    Rows with no response token are left out of the sequence means.

    `denominator` replaces this batch's own count (tokens for token-mean, non-empty rows for the seq
    modes) by one the caller computed. That is how micro-batches and processes reproduce one big
    batch: pass the count of the whole mini-batch over all accumulation steps, divided by the number
    of processes when the gradients are averaged across processes (DDP), and sum the micro-batch
    losses instead of averaging them.
    """
    mask = mask.to(values.dtype)                                     # (B, T)
    if mode in ("token-mean", "micro-token-mean"):
        total = (values * mask).sum()                                # ()
        count = mask.sum()                                           # ()
    elif mode in ("seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"):
        seq_tokens = mask.sum(-1)                                    # (B,)
        seq_sum = (values * mask).sum(-1)                            # (B,)
        if mode == "seq-mean-token-mean":
            seq_value = seq_sum / seq_tokens.clamp(min=1)            # (B,)
        elif mode == "seq-mean-token-sum":
            seq_value = seq_sum                                      # (B,)
        else:
            seq_value = seq_sum / (norm_length or values.shape[-1])  # (B,)
        total = seq_value.sum()                                      # () rows without tokens add 0
        count = (seq_tokens > 0).to(values.dtype).sum()              # ()
    else:
        raise ValueError(f"agg={mode!r} is unknown; choose one of {AGG_MODES}")
    if denominator is not None:
        count = torch.as_tensor(denominator, dtype=values.dtype, device=values.device)
    return total / count.clamp(min=1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token mean of `(B, T)` values for metrics (0 when the mask is empty)."""
    return aggregate(values, mask, "token-mean")


def group_advantages(scores: torch.Tensor, group_ids: torch.Tensor, traj_ids: torch.Tensor | None = None,
                     norm_by_std: bool = True, eps: float = 1e-6, cross_steps: bool = True) -> torch.Tensor:
    """A_i = (R_i - mean_g) / (std_g + eps), statistics over the group of sample i; returns `(N,)`.

    scores `(N,)`: outcome score of each step sample (episode return minus its own penalty).
    group_ids `(N,)`: the group (same task, G rollouts) of each sample.
    traj_ids `(N,)`: the trajectory of each sample; needed when `cross_steps=False`.
    cross_steps=True pools every step sample of the group (the released code's default: long
    episodes contribute more samples and so weigh more in the statistics); cross_steps=False uses one
    value per trajectory, the score of the first step sample met, as the released code does.
    std is unbiased (n-1); a group with a single value gets advantage 0; `norm_by_std=False` skips the
    division (Dr.GRPO).
    """
    if not cross_steps and traj_ids is None:
        raise ValueError("cross_steps=False needs traj_ids")
    out_dtype = scores.dtype if scores.is_floating_point() else torch.get_default_dtype()
    scores = scores.double()                                         # (N,) statistics in float64
    advantages = torch.zeros_like(scores)                            # (N,)
    for group in torch.unique(group_ids):
        members = group_ids == group                                 # (N,) bool
        if cross_steps:
            stats = scores[members]                                  # (n_g,)
        else:
            first = {}
            for index in members.nonzero().flatten().tolist():
                first.setdefault(int(traj_ids[index]), scores[index])
            stats = torch.stack(list(first.values()))                # (n_traj,)
        if stats.numel() < 2:
            continue                                                 # singleton group: A = 0
        centred = scores[members] - stats.mean()                     # (n_g,)
        advantages[members] = centred / (stats.std() + eps) if norm_by_std else centred
    return advantages.to(out_dtype)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float | None = 3.0,
                agg: str = "token-mean", denominator: float | torch.Tensor | None = None,
                norm_length: int | None = None):
    """PPO/GRPO clipped surrogate with dual clip: l = max(-A r, -A clip(r, 1-el, 1+eh)), and for A < 0
    l = min(l, -A c), with r = exp(logp - old_logp).

    logp `(B, T)` live student log-probs (with grad); old_logp `(B, T)` rollout-policy log-probs;
    advantages `(B,)` or `(B, T)`; mask `(B, T)`. Returns (loss, metrics).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logp)             # (B, T)
    advantages = advantages.to(logp.dtype)                           # (B, T)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)                 # (B, T) avoid exp overflow
    ratio = torch.exp(log_ratio)                                     # (B, T)
    loss_unclipped = -advantages * ratio                             # (B, T)
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)  # (B, T)
    loss = torch.maximum(loss_unclipped, loss_clipped)               # (B, T)
    dual_region = torch.zeros_like(mask, dtype=torch.bool)           # (B, T)
    if dual_clip is not None:
        dual_bound = -advantages * dual_clip                         # (B, T)
        dual_region = (advantages < 0) & (loss > dual_bound)         # (B, T)
        loss = torch.where(advantages < 0, torch.minimum(loss, dual_bound), loss)  # (B, T)
    with torch.no_grad():
        metrics = {
            "clip_frac": masked_mean((loss_clipped > loss_unclipped).to(logp.dtype), mask).item(),
            "dual_clip_frac": masked_mean(dual_region.to(logp.dtype), mask).item(),
            "approx_kl": masked_mean(-log_ratio, mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return aggregate(loss, mask, agg, denominator, norm_length), metrics


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, clamp: float | None = 10.0,
          low: float | None = -20.0) -> torch.Tensor:
    """k3 estimate of KL(policy || reference) per sampled token: exp(d) - d - 1, d = ref_logp - logp.

    logp, ref_logp `(B, T)`; returns `(B, T)`. d is clamped to [low, 20] and the result to
    [-clamp, clamp] (10 in the released code's KL penalty), so one very unlikely token cannot blow up
    the loss; `clamp=None` leaves the result unclamped and `low=None` clamps d above only (both: the
    Skill-SD term). The upper bound alone keeps exp(d) finite; below it k3 grows like -d, linearly.
    """
    d = (ref_logp - logp).clamp(low, 20.0)                           # (B, T)
    k3 = torch.exp(d) - d - 1.0                                      # (B, T)
    return k3 if clamp is None else k3.clamp(-clamp, clamp)          # (B, T)


def skill_sd_loss(student_logp: torch.Tensor, old_logp: torch.Tensor, teacher_logp: torch.Tensor,
                  mask: torch.Tensor, agg: str = "token-mean", denominator: float | torch.Tensor | None = None,
                  norm_length: int | None = None, rho_grad: bool = True) -> torch.Tensor:
    """Skill-SD baseline term: agg_t( rho_t k3(student, teacher)_t ), rho_t = exp(min(logp - old_logp, 10)).

    All inputs `(B, T)`. k3 with d = teacher_logp - student_logp estimates KL(student || teacher) from
    the student's own samples; rho_t corrects for the samples coming from the rollout policy. In the
    released code the gradient also flows through rho_t (`rho_grad=True`), which adds rho_t k3_t to
    each token's gradient; `rho_grad=False` treats rho_t as a constant weight. As released, d is clamped
    on one side only (d <= 20, i.e. -l <= 20 with l = student_logp - teacher_logp): a token the student
    likes far more than the teacher (l > 20) keeps its gradient rho_t (1 - e^-l + k3_t), which a clamp of
    d to [-20, 20] would cut to rho_t k3_t with k3_t frozen at 19 + e^-20.
    """
    rho = torch.exp((student_logp - old_logp).clamp(max=10.0))      # (B, T)
    rho = rho if rho_grad else rho.detach()                          # (B, T)
    k3 = kl_k3(student_logp, teacher_logp.detach(), clamp=None, low=None)  # (B, T)
    return aggregate(rho * k3, mask, agg, denominator, norm_length)


def rlsd_advantages(advantages: torch.Tensor, teacher_logp: torch.Tensor, old_logp: torch.Tensor,
                    lam: float = 0.5, clip: float = 0.2) -> torch.Tensor:
    """RLSD baseline: A_t = A ((1-lam) + lam clip(exp(sign(A) (teacher_logp_t - old_logp_t)), 1-c, 1+c)).

    advantages `(B,)`; teacher_logp, old_logp `(B, T)`; returns detached `(B, T)`. Tokens the teacher
    likes more than the rollout policy get a larger share of a positive advantage (and a smaller
    share of a negative one); the clip keeps the reweighting within +-20%.
    """
    sign = torch.sign(advantages)[:, None]                           # (B, 1)
    weight = torch.exp(sign * (teacher_logp - old_logp).clamp(-20.0, 20.0))  # (B, T)
    weight = weight.clamp(1.0 - clip, 1.0 + clip)                    # (B, T)
    return (advantages[:, None] * ((1.0 - lam) + lam * weight)).detach()  # (B, T)
