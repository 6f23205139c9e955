"""Stage 4 of an iteration, the update: mini-batches of the SDAR objective, one optimizer step each.

Reads like cleanrl's PPO update: for each epoch, for each mini-batch, for each micro-batch, the live
forward, `loss = objective(...)`, backward; then clip and step. The experience (old, reference and
teacher log-probs) was built once before (`experience.py`); the objective is
`objective.sdar_objective`. What keeps 1 and N processes, and any micro-batch size, on the same update
sits in one helper, `Normaliser`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from experience import Experience
from objective import sdar_objective
from opsd import logprobs_from_hidden, response_hidden, unwrap, vocab_divergence


def objective_coefficients(cfg, iteration: int = 0) -> dict:
    """The keyword arguments of `sdar_objective` that come from the config, at training iteration `iteration`
    (from 0). RLSD's strength decays linearly to 0 over `rlsd_decay_iterations`: lam (1 - step / 100). The
    released code (`rlsd_ray_trainer._get_rlsd_lambda`) counts verl's `global_steps` from 1, so under
    `--parity released` step = iteration + 1 (0.495 at the first update, 0 at the 100th); here step =
    iteration (0.5 at the first update)."""
    names = ("pg_coef", "kl_coef", "entropy_coef", "sdar_coef", "beta", "gate", "skill_sd_coef",
             "skill_sd_rho_grad", "clip_low", "clip_high", "dual_clip")
    step = iteration + 1 if cfg.parity == "released" else iteration
    decay = max(0.0, 1.0 - step / cfg.rlsd_decay_iterations) if cfg.rlsd_decay_iterations > 0 else 1.0
    return {**{name: getattr(cfg, name) for name in names}, "rlsd_lam": cfg.rlsd_lam * decay, "agg": cfg.loss_agg,
            "norm_length": cfg.max_new_tokens}


def live_forward(model, batch: Experience, cfg):
    """The student's live forward on one micro-batch: (logp, entropy or None, divergence or None), each
    `(b, T)`. Only the student's forward carries gradients; with a full-vocabulary divergence the teacher's
    hidden states are recomputed without them."""
    T = batch.response_mask.shape[1]
    need_entropy = cfg.entropy_coef > 0 or cfg.gate in ("entropy", "soft_or")
    hidden = response_hidden(model, batch.input_ids, batch.attention_mask, T)                # (b, T, H)
    head = unwrap(model).get_output_embeddings()
    logp, entropy = logprobs_from_hidden(head, hidden, batch.input_ids[:, -T:], 1.0, cfg.logprob_chunk_size,
                                         need_entropy)                                       # (b, T), (b, T)
    divergence = None
    if cfg.sdar_coef > 0 and cfg.divergence != "sampled":
        with torch.no_grad():
            teacher_hidden = response_hidden(model, batch.teacher_input_ids, batch.teacher_attention_mask, T)
        divergence = vocab_divergence(head, hidden, teacher_hidden, cfg.divergence,
                                      chunk_size=cfg.logprob_chunk_size)                     # (b, T)
    return logp, entropy if need_entropy else None, divergence


def micro_step_loss(model, batch: Experience, mask: torch.Tensor, cfg, denominator: float, iteration: int = 0):
    """The live forward of one micro-batch and its SDAR objective; returns (loss, metrics).
    mask `(b, T)` is the batch's response mask, zeroed on dummy rows."""
    logp, entropy, divergence = live_forward(model, batch, cfg)                              # (b, T) each
    return sdar_objective(logp, batch.old_logp, batch.ref_logp, batch.teacher_logp, batch.advantages, mask,
                          entropy=entropy, divergence=divergence, denominator=denominator,
                          **objective_coefficients(cfg, iteration))


class Normaliser:
    """The bookkeeping that makes one mini-batch's update independent of how it is cut up.

    Why: a loss averaged per micro-batch, per process, would weigh a token in a short micro-batch more
    than one in a long micro-batch, and the result would change with the micro-batch size and the number
    of processes. So every micro-batch's loss is divided by the token (or sequence) count of the whole
    mini-batch over all processes, and DDP's gradient average over processes is undone by multiplying
    that count by 1/world: the sum over micro-batches and processes is then one big batch's mean.
    `micro-token-mean` (the released code's weighting) divides by each micro-batch's own count times the
    number of accumulation steps instead, which does depend on the grouping; under `--parity released` that
    number is the one a full mini-batch has (a shorter last mini-batch weighs less), as verl's dp_actor does.
    Every process runs the same number of micro-batches (the collective operations must stay in step);
    a process with fewer rows runs zero-weight dummy rows.
    """

    def __init__(self, accelerator, experience: Experience, rows: list[int], cfg):
        self.per_token = cfg.loss_agg in ("token-mean", "micro-token-mean")
        self.micro_token_mean = cfg.loss_agg == "micro-token-mean"
        response_lengths = experience.response_mask.sum(-1).tolist()
        count = sum(response_lengths[i] if self.per_token else int(response_lengths[i] > 0) for i in rows)
        counts = accelerator.gather(torch.tensor([count, len(rows)], device=accelerator.device).view(1, 2))
        self.shared = max(1, counts[:, 0].sum().item()) / accelerator.num_processes
        self.num_micro = max(1, math.ceil(counts[:, 1].max().item() / cfg.micro_batch_size))
        per_process = cfg.mini_batch_size // accelerator.num_processes
        self.accumulation = per_process // cfg.micro_batch_size if cfg.parity == "released" else self.num_micro

    def own_count(self, mask: torch.Tensor) -> float:
        """Tokens (or sequences) of one micro-batch's mask `(b, T)`."""
        return float(mask.sum() if self.per_token else (mask.sum(-1) > 0).sum())

    def denominator(self, mask: torch.Tensor) -> float:
        """What this micro-batch's summed loss is divided by."""
        return max(self.own_count(mask), 1.0) * self.accumulation if self.micro_token_mean else self.shared


def minibatch_rows(num_rows: int, num_minibatches: int, size: int, generator: torch.Generator | None = None,
                   sort_key=None) -> list[list[int]]:
    """The rows of each of `num_minibatches` mini-batches of one epoch; micro-batches are consecutive runs
    of a mini-batch's rows, so this order also decides which samples share a micro-batch.

    This project (`generator` given): a random permutation cut into nearly equal parts, each sorted by
    `sort_key` so rows of similar length share a micro-batch (less padding; under a global token mean the
    grouping changes no number). The released code (`generator` None): verl's split of the rows in the
    order the trainer built them (`shuffle: False`, no sorting) into blocks of `size` (the per-process
    mini-batch), the last one shorter and any further ones empty. Under the released per-micro-batch token
    mean that order decides every sample's weight.
    """
    if generator is None:
        return [list(range(min(k * size, num_rows), min((k + 1) * size, num_rows))) for k in range(num_minibatches)]
    order = torch.randperm(num_rows, generator=generator)                      # (num_rows,)
    parts = [part.tolist() for part in torch.tensor_split(order, num_minibatches)]
    return [sorted(part, key=sort_key) if sort_key else part for part in parts]


def split_minibatches(experience: Experience, accelerator, cfg, generator: torch.Generator) -> list[list[int]]:
    """One epoch's mini-batches of this process's rows (`minibatch_rows`): K = ceil(N / per-process
    mini-batch) of them, K agreeing over processes; shuffled and length-sorted, or in the trainer's order
    under `--parity released`."""
    per_process = cfg.mini_batch_size // accelerator.num_processes
    sizes = accelerator.gather(torch.tensor([len(experience)], device=accelerator.device)).tolist()
    num_minibatches = max(1, max(math.ceil(n / per_process) for n in sizes))
    if cfg.parity == "released":
        return minibatch_rows(len(experience), num_minibatches, per_process)
    lengths = experience.attention_mask.sum(-1).tolist()                            # prompt + response tokens
    return minibatch_rows(len(experience), num_minibatches, per_process, generator, lambda i: lengths[i])


def skip_step(optimizer, state: dict, step_sums: dict, max_bad_steps: int, print_fn) -> None:
    """Drop a step whose loss or gradient is not finite (its metrics too: NaN would poison the means);
    raise FloatingPointError after `max_bad_steps` in a row, before the weights can be damaged."""
    optimizer.zero_grad(set_to_none=True)
    state["bad_steps"] = state.get("bad_steps", 0) + 1
    state["skipped_steps"] = state.get("skipped_steps", 0) + 1
    culprits = ", ".join(k for k, v in step_sums.items() if k.startswith("loss/") and not math.isfinite(v))
    culprits = culprits or "the gradient"
    print_fn(f"warning: non-finite loss or gradient ({culprits}), optimizer step skipped "
             f"({state['bad_steps']} in a row)")
    if state["bad_steps"] >= max_bad_steps:
        raise FloatingPointError(f"{state['bad_steps']} non-finite updates in a row ({culprits}): stopped "
                                 f"before the weights are damaged; lower lr or check the data "
                                 f"(max_bad_steps={max_bad_steps})")


def update_policy(model, optimizer, accelerator, experience: Experience, cfg, generator: torch.Generator,
                  state: dict, iteration: int = 0) -> dict:
    """Mini-batch updates over this process's experience at training iteration `iteration`; returns the
    metrics averaged over steps. Logged losses are each micro-batch's own mean, weighted by its token (or
    row) count. A non-finite gradient skips the step (counted in `state`). Shuffled mini-batches; in the
    trainer's order under `--parity released` (`split_minibatches`).

    `pg/first_minibatch_approx_kl` and `pg/first_minibatch_clip_frac` are the first mini-batch's alone: it
    runs at the rollout weights, so its live log-probs should equal the old ones up to rounding (ratio 1,
    nothing clipped). A larger value means the scoring and training forwards disagree numerically (precision,
    padding, a kernel), which biases every update."""
    sums, weight, grad_norms, first = {}, 0.0, [], {}
    for _ in range(cfg.ppo_epochs):
        for rows in split_minibatches(experience, accelerator, cfg, generator):
            norm = Normaliser(accelerator, experience, rows, cfg)
            step_sums, step_weight = {}, 0.0
            for k in range(norm.num_micro):
                micro_rows = rows[k * cfg.micro_batch_size:(k + 1) * cfg.micro_batch_size]
                batch = experience[micro_rows or [0]]
                mask = batch.response_mask * torch.tensor(1.0 if micro_rows else 0.0)  # (b, T) dummy row: all 0
                denominator = norm.denominator(mask)
                # DDP averages gradients over processes at the backward of the last micro-batch only.
                with nullcontext() if k == norm.num_micro - 1 else accelerator.no_sync(model):
                    with accelerator.autocast():
                        loss, metrics = micro_step_loss(model, batch, mask, cfg, denominator, iteration)
                    accelerator.backward(loss)
                own_count = norm.own_count(mask)
                for key, value in metrics.items():                # loss/*: back from the shared to its own mean
                    value = value * denominator / max(own_count, 1.0) if key.startswith("loss/") else value
                    step_sums[key] = step_sums.get(key, 0.0) + value * own_count
                step_weight += own_count
            if not first:
                first = {f"pg/first_minibatch_{key}": step_sums.get(f"pg/{key}", 0.0) / max(step_weight, 1.0)
                         for key in ("approx_kl", "clip_frac")}
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            if not math.isfinite(grad_norm):
                skip_step(optimizer, state, step_sums, cfg.max_bad_steps, accelerator.print)
                continue
            state["bad_steps"] = 0
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            grad_norms.append(grad_norm)
            for key, value in step_sums.items():
                sums[key] = sums.get(key, 0.0) + value
            weight += step_weight
    out = {key: value / max(weight, 1.0) for key, value in sums.items()}
    out.update(first)
    out["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
    out["train/optimizer_steps"] = len(grad_norms)
    out["train/skipped_steps"] = state.get("skipped_steps", 0)
    return out

