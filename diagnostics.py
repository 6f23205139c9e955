"""Is the distillation term doing anything? What each iteration's batch offers GRPO and the SDAR term.

Three questions, each answered by metrics with stable names in every run's metrics.jsonl (README
"Reading the diagnostics"):

1. Does GRPO have a signal? `adv/all_equal_groups`: the share of groups whose episodes all ended with
   the same return (GRPO's advantage is zero there, up to penalties); `adv/penalty_only_mass`: the
   share of the advantage mass sum |A| that sits in those groups, i.e. comes from invalid-action
   penalties alone (divided by a tiny group std they can become full-scale advantages).
2. What does the teacher say, and where? The gap delta = teacher_logp - student_logp at the rollout
   weights, split into action tokens and the rest (`sdar/gap_mean/*`, `sdar/gate_mean/*`,
   `sdar/gate_active/*`, `sdar/gate_dev/*` = mean |g - 1/2|, the part of the gate that depends on the
   teacher at all), its tails per won / lost episode (`sdar/gap_q05/*`, `sdar/gap_q95/*`), each step
   sample's summed action-token gap in won and lost episodes (`sdar/action_gap_sum/{won,lost}`) and its
   correlation with the advantage (`sdar/gap_adv_corr`).
3. Does the term move the weights? `grad/{pg,kl,entropy,sdar}_norm`: the gradient norm of each weighted
   term of the objective on one micro-batch, `grad/sdar_to_pg` their ratio and `grad/cos_pg_sdar` the
   cosine between the PG and SDAR gradients (one extra forward and a backward per term: every
   `diagnostics_every` iterations).

With several processes each one measures its own share and the means of the per-process values are
logged (quantiles and correlations are then approximate); the histograms are summed exactly.
"""

from __future__ import annotations

import torch

from experience import Experience
from gate import gap_gate
from objective import objective_terms
from generation import STOP_TAGS, action_token_mask
from update import live_forward, objective_coefficients

GAP_EDGES = [-10.0 + 0.5 * k for k in range(41)]        # 40 bins over [-10, 10]; the outer ones catch the rest
GATE_EDGES = [0.05 * k for k in range(21)]             # 20 bins over [0, 1]
TERMS = ("pg", "kl", "entropy", "sdar")


def advantage_diagnostics(returns: torch.Tensor, advantages: torch.Tensor, group_ids: torch.Tensor,
                          traj_ids: torch.Tensor) -> dict:
    """`adv/all_equal_groups` and `adv/penalty_only_mass` of one batch of step samples.

    returns `(N,)` the episode return of each step sample's episode, advantages `(N,)`, group_ids and
    traj_ids `(N,)`. A group counts as all-equal when every one of its episodes has the same return:
    any advantage left there comes from the per-step penalties, not from the outcome.
    """
    equal_groups, groups = 0, torch.unique(group_ids)
    in_equal_group = torch.zeros_like(advantages, dtype=torch.bool)                  # (N,)
    for group in groups:
        members = group_ids == group                                                 # (N,) bool
        if torch.unique(returns[members]).numel() == 1:
            equal_groups += 1
            in_equal_group |= members
    mass = advantages.abs()                                                          # (N,)
    total = float(mass.sum())
    return {"adv/all_equal_groups": equal_groups / max(1, len(groups)),
            "adv/penalty_only_mass": float(mass[in_equal_group].sum()) / total if total > 0 else 0.0}


def action_masks(tokenizer, samples, env_name: str, width: int) -> torch.Tensor:
    """`(N, width)` bool: which response tokens belong to each sample's action (up to its closing tag)."""
    out = torch.zeros(len(samples), width, dtype=torch.bool)                          # (N, T)
    for row, sample in enumerate(samples):
        mask = action_token_mask(tokenizer, sample.response_ids, STOP_TAGS[env_name])[:width]
        out[row, :len(mask)] = torch.tensor(mask, dtype=torch.bool)
    return out


def gap_statistics(accelerator, old_logp: torch.Tensor, teacher_logp: torch.Tensor, response_mask: torch.Tensor,
                   action_mask: torch.Tensor, won: torch.Tensor, advantages: torch.Tensor,
                   beta: float) -> tuple[dict, dict]:
    """What the gap gate sees on this iteration's tokens, at the rollout weights (what the first update
    step gates; later steps move the student a little).

    old_logp, teacher_logp, response_mask, action_mask `(N, T)`; won `(N,)` bool (the sample's episode
    succeeded); advantages `(N,)`. Returns (metrics, histogram counts summed over processes: `gap_action`,
    `gap_other` over GAP_EDGES and `gate_action`, `gate_other` over GATE_EDGES).
    """
    gap = (teacher_logp - old_logp).float()                                  # (N, T) delta
    gate = gap_gate(teacher_logp.float(), old_logp.float(), beta)            # (N, T) g
    response, action = response_mask.bool(), action_mask.bool()              # (N, T) each
    parts = {"action": response & action, "other": response & ~action}      # (N, T) each
    sums, counts = [], []
    for part, mask in parts.items():
        sums += [gap[mask].sum(), gate[mask].sum(), (gate[mask] > 0.5).float().sum(),
                 (gate[mask] - 0.5).abs().sum(), mask.sum().float()]
        counts += [bin_counts(gap[mask], GAP_EDGES), bin_counts(gate[mask], GATE_EDGES)]
    totals = torch.cat([torch.stack(sums)] + counts)                         # (10 + 2 * (40 + 20),)
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="sum")
    totals = totals.tolist()
    metrics, histograms, offset = {}, {"gap_edges": GAP_EDGES, "gate_edges": GATE_EDGES}, 10
    for index, part in enumerate(parts):
        gap_sum, gate_sum, active, deviation, tokens = totals[5 * index:5 * index + 5]
        if tokens:
            metrics.update({f"sdar/gap_mean/{part}": gap_sum / tokens, f"sdar/gate_mean/{part}": gate_sum / tokens,
                            f"sdar/gate_active/{part}": active / tokens, f"sdar/gate_dev/{part}": deviation / tokens})
        for name, edges in (("gap", GAP_EDGES), ("gate", GATE_EDGES)):
            histograms[f"{name}_{part}"] = [int(c) for c in totals[offset:offset + len(edges) - 1]]
            offset += len(edges) - 1
    metrics.update(gap_tails(gap, parts, won))
    metrics.update(gap_and_outcome(gap, parts["action"], won, advantages))
    return metrics, histograms


def gap_tails(gap: torch.Tensor, parts: dict, won: torch.Tensor) -> dict:
    """The 5th and 95th percentiles of the gap `(N, T)` over each part's tokens `(N, T)`, per won / lost
    episode (`won` `(N,)`): where the teacher strongly disagrees (q05) or strongly agrees (q95)."""
    metrics = {}
    for part, mask in parts.items():
        for outcome, rows in (("won", won), ("lost", ~won)):
            values = gap[mask & rows[:, None]]                                   # (n,)
            if values.numel():
                low, high = torch.quantile(values, torch.tensor([0.05, 0.95])).tolist()
                metrics[f"sdar/gap_q05/{part}_{outcome}"] = low
                metrics[f"sdar/gap_q95/{part}_{outcome}"] = high
    return metrics


def gap_and_outcome(gap: torch.Tensor, action: torch.Tensor, won: torch.Tensor, advantages: torch.Tensor) -> dict:
    """Each step sample's summed action-token gap `(N,)`: its mean in won and lost episodes, and its
    Pearson correlation with the advantage `(N,)` (does the teacher agree with the outcome?)."""
    summed = (gap * action).sum(-1)                                          # (N,)
    metrics = {}
    for outcome, rows in (("won", won), ("lost", ~won)):
        if rows.any():
            metrics[f"sdar/action_gap_sum/{outcome}"] = summed[rows].mean().item()
    x, y = summed.double(), advantages.double().cpu()                         # (N,) each
    if x.numel() > 1 and x.std() > 0 and y.std() > 0:
        metrics["sdar/gap_adv_corr"] = torch.corrcoef(torch.stack([x, y]))[0, 1].item()
    return metrics


def bin_counts(values: torch.Tensor, edges: list[float]) -> torch.Tensor:
    """Counts `(len(edges) - 1,)` of 1-D `values` in the bins between `edges`; values outside fall in the end bins."""
    inner = torch.tensor(edges[1:-1], dtype=values.dtype, device=values.device)  # (K-1,)
    index = torch.bucketize(values.contiguous(), inner, right=True)          # (n,) in 0..K-1
    return torch.bincount(index, minlength=len(edges) - 1).float()           # (K,)


def term_gradients(model, logp: torch.Tensor, entropy: torch.Tensor | None, divergence: torch.Tensor | None,
                   batch, coefficients: dict) -> dict:
    """The gradient norm of each weighted term of the objective on one micro-batch, and the cosine between
    the PG and SDAR gradients: is the distillation term large enough, and aligned enough, to matter?

    logp, entropy, divergence `(b, T)` come from a live forward of `model` on `batch` (with grad; see
    `update.live_forward`); `coefficients` are `objective_terms`'s keyword arguments.
    The terms are token means over this micro-batch (ratios and cosines do not depend on that choice).
    Uses torch.autograd.grad: nothing is written to the parameters' .grad. One term's gradient at a time,
    besides PG's (kept for the cosine): two parameter-sized buffers at most, not one per term (at 0.5B four
    terms held at once were 7.4 GiB).
    """
    terms, _ = objective_terms(logp, batch.old_logp, batch.ref_logp, batch.teacher_logp, batch.advantages,
                               batch.response_mask, entropy=entropy, divergence=divergence,
                               **{**coefficients, "denominator": None})
    params = [p for p in model.parameters() if p.requires_grad]
    names = [name for name in TERMS if name in terms and terms[name].requires_grad]    # PG before SDAR
    zero = torch.zeros((), device=params[0].device)
    norms, pg_grads, pg_dot_sdar = {}, None, zero
    for index, name in enumerate(names):
        grads = torch.autograd.grad(terms[name], params, retain_graph=index < len(names) - 1,
                                    allow_unused=True)            # None where the term does not reach a parameter
        norms[name] = torch.sqrt(sum(((g.float() ** 2).sum() for g in grads if g is not None), zero))
        if name == "pg":
            pg_grads = grads                    # kept for the cosine; every other term's is dropped at once
        elif name == "sdar" and pg_grads is not None:
            pg_dot_sdar = sum(((a.float() * b.float()).sum() for a, b in zip(pg_grads, grads)
                               if a is not None and b is not None), zero)
        del grads                               # at most two parameter-sized gradients alive: PG's and this term's
    metrics = {f"grad/{name}_norm": norm.item() for name, norm in norms.items()}
    pg_norm, sdar_norm = (norms.get(name, 0.0) for name in ("pg", "sdar"))
    if pg_norm > 0 and sdar_norm > 0:                            # both terms on and moving the weights
        metrics["grad/sdar_to_pg"] = (sdar_norm / pg_norm).item()
        metrics["grad/cos_pg_sdar"] = (pg_dot_sdar / (pg_norm * sdar_norm)).item()
    return metrics


def measure_term_gradients(model, experience: Experience, cfg, generator: torch.Generator, iteration: int) -> dict:
    """`term_gradients` on `micro_batch_size` rows drawn with `generator` (its own seed stream,
    so the training draws do not change), at the current weights. `model` is the unwrapped policy."""
    rows = torch.randperm(len(experience), generator=generator)[:cfg.micro_batch_size].tolist()
    batch = experience[rows]
    logp, entropy, divergence = live_forward(model, batch, cfg)                              # (b, T) each
    return term_gradients(model, logp, entropy, divergence, batch, objective_coefficients(cfg, iteration))
