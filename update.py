"""From step samples to a policy update: the experience batch, the scoring passes and the mini-batch loop.

Old, reference and teacher log-probs are computed once per iteration, before any update (with the
rollout weights), and stored in an `Experience`; the student's are live. Every loss is normalised by
the token (or sequence) count of the whole mini-batch over all processes and accumulation steps, so
1 and N processes make the same update on the same samples; the exception is `micro-token-mean` (the
released code's weighting), where each micro-batch is normalised by its own token count. The objective
itself is `objective.sdar_objective`.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch

from objective import sdar_objective
from opsd import (logprobs_from_hidden, pack_batch, response_hidden, teacher_prompt_ids, token_logprobs, unwrap,
                  vocab_divergence)
from teacher_cache import cached_teacher_logprobs


def take_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor, rows: list[int]):
    """Rows of a packed batch trimmed to their own longest prompt and response: exactly what `pack_batch`
    builds for those rows alone. Returns input_ids `(b, P+T)`, attention_mask `(b, P+T)`, response_mask `(b, T)`."""
    full_T = response_mask.shape[1]
    T = max(1, int(response_mask[rows].sum(-1).max()))                   # longest response of these rows
    prompt_width = input_ids.shape[1] - full_T
    P = int(attention_mask[rows, :prompt_width].sum(-1).max())            # longest prompt of these rows
    columns = slice(prompt_width - P, prompt_width + T)
    return input_ids[rows, columns], attention_mask[rows, columns], response_mask[rows, :T]


@dataclass
class Experience:
    """One iteration's step samples as padded tensors, built once after the scoring passes.

    Every row is [ left-padded prompt | right-padded response ], the response in the last T columns
    (`opsd.pack_batch`); the teacher's rows hold its privileged prompt and the same response. Log-probs
    are 0 past each response's end. `experience[rows]` is the micro-batch of those rows trimmed to their
    own longest prompts and response (`take_rows`), so under a global normalisation (token-mean, the seq
    modes) how samples are grouped into micro-batches never changes a number; under `micro-token-mean`
    it sets each sample's weight (`update_policy`).
    """
    input_ids: torch.Tensor               # (N, P+T)
    attention_mask: torch.Tensor          # (N, P+T)
    response_mask: torch.Tensor           # (N, T)
    teacher_input_ids: torch.Tensor       # (N, Q+T) privileged prompt | the same response
    teacher_attention_mask: torch.Tensor  # (N, Q+T)
    advantages: torch.Tensor              # (N,)
    old_logp: torch.Tensor                # (N, T) rollout policy
    ref_logp: torch.Tensor                # (N, T) initial model
    teacher_logp: torch.Tensor            # (N, T) same weights, skills in the prompt

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, rows: list[int]) -> Experience:
        input_ids, attention_mask, response_mask = take_rows(self.input_ids, self.attention_mask,
                                                             self.response_mask, rows)              # (b, P+T), (b, T)
        teacher_ids, teacher_mask, _ = take_rows(self.teacher_input_ids, self.teacher_attention_mask,
                                                 self.response_mask, rows)                          # (b, Q+T)
        T = response_mask.shape[1]
        return Experience(input_ids, attention_mask, response_mask, teacher_ids, teacher_mask, self.advantages[rows],
                          self.old_logp[rows, :T], self.ref_logp[rows, :T], self.teacher_logp[rows, :T])

    def to(self, device) -> Experience:
        return Experience(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@torch.no_grad()
def score_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor,
                 order: list[int], micro_batch_size: int, chunk_size: int | None) -> torch.Tensor:
    """log pi(sampled token) `(N, T)` of every row's response (0 past its end), `micro_batch_size` rows at
    a time in `order` (rows of similar length together: less padding), each batch trimmed by `take_rows`."""
    device = next(model.parameters()).device
    out = torch.zeros(response_mask.shape)                                         # (N, T)
    for start in range(0, len(order), micro_batch_size):
        rows = order[start:start + micro_batch_size]
        ids, attn, mask = take_rows(input_ids, attention_mask, response_mask, rows)  # (b, P+t), (b, t)
        logp, _ = token_logprobs(model, ids.to(device), attn.to(device), mask.shape[1], chunk_size=chunk_size)
        out[rows, :mask.shape[1]] = torch.where(mask.bool(), logp.float().cpu(), 0.0)  # (b, t)
    return out


def build_experience(model, reference, tokenizer, samples, advantages: torch.Tensor, cfg) -> tuple[Experience, dict]:
    """Pack the step samples, run the old / reference / teacher scoring passes (no grad, rollout weights)
    and return (experience on the model's device, their seconds as perf/* metrics).

    `reference` is the frozen initial model, or None under LoRA, where the initial model is the same
    network with its adapters switched off. The reference pass is skipped when `kl_coef` is 0, and the
    teacher's inputs and pass when no term uses them (the student's stand in). With `teacher_prefix_cache`
    the prompt prefix that samples with the same skills share is encoded once (`teacher_cache.py`)."""
    prompts, responses = [s.prompt_ids for s in samples], [s.response_ids for s in samples]
    skills = [s.skill_text for s in samples]
    input_ids, attention_mask, response_mask = pack_batch(prompts, responses, tokenizer.pad_token_id)  # (N, P+T)
    teacher_ids, teacher_mask = input_ids, attention_mask
    needs_teacher = cfg.sdar_coef > 0 or cfg.skill_sd_coef > 0 or cfg.rlsd_lam > 0
    if needs_teacher:
        teacher_prompts = teacher_prompt_ids(tokenizer, [s.user_message for s in samples], skills,
                                             cfg.teacher_context, cfg.max_prompt_length)
        teacher_ids, teacher_mask, _ = pack_batch(teacher_prompts, responses, tokenizer.pad_token_id)  # (N, Q+T)

    def score(net, teacher: bool = False) -> torch.Tensor:
        if teacher and cfg.teacher_prefix_cache:
            return cached_teacher_logprobs(net, teacher_prompts, responses, skills, tokenizer.pad_token_id,
                                           cfg.micro_batch_size, cfg.logprob_chunk_size).cpu()        # (N, T)
        if teacher:   # rows sharing a skill text side by side
            order = sorted(range(len(samples)), key=lambda i: (len(samples[i].skill_text), len(prompts[i])))
            return score_tokens(net, teacher_ids, teacher_mask, response_mask, order, cfg.micro_batch_size,
                                cfg.logprob_chunk_size)
        order = sorted(range(len(samples)), key=lambda i: len(prompts[i]))
        return score_tokens(net, input_ids, attention_mask, response_mask, order, cfg.micro_batch_size,
                            cfg.logprob_chunk_size)

    timings, start = {}, time.perf_counter()
    old_logp = score(model)                                                                    # (N, T)
    timings["perf/old_s"], start = time.perf_counter() - start, time.perf_counter()
    if cfg.kl_coef == 0:
        ref_logp = old_logp
    else:
        with model.disable_adapter() if reference is None else nullcontext():
            ref_logp = score(reference or model)                                               # (N, T)
    timings["perf/ref_s"], start = time.perf_counter() - start, time.perf_counter()
    teacher_logp = score(model, teacher=True) if needs_teacher else old_logp                   # (N, T)
    timings["perf/teacher_s"] = time.perf_counter() - start
    experience = Experience(input_ids, attention_mask, response_mask, teacher_ids, teacher_mask,
                            advantages, old_logp, ref_logp, teacher_logp)
    return experience.to(next(model.parameters()).device), timings


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


def micro_step_loss(model, batch: Experience, mask: torch.Tensor, cfg, denominator: float, iteration: int = 0):
    """The live forward of one micro-batch and its SDAR objective; returns (loss, metrics).

    mask `(b, T)` is the batch's response mask, zeroed on dummy rows. Only the student's forward carries
    gradients; with a full-vocabulary divergence the teacher's hidden states are recomputed without them.
    """
    T = mask.shape[1]
    need_entropy = cfg.entropy_coef > 0 or cfg.gate != "gap"
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
    return sdar_objective(logp, batch.old_logp, batch.ref_logp, batch.teacher_logp, batch.advantages, mask,
                          entropy=entropy if need_entropy else None, divergence=divergence,
                          denominator=denominator, **objective_coefficients(cfg, iteration))


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


def minibatch_rows(num_rows: int, num_minibatches: int, size: int, generator: torch.Generator | None = None,
                   sort_key=None) -> list[list[int]]:
    """The rows of each of `num_minibatches` mini-batches of one epoch; micro-batches are consecutive runs
    of a mini-batch's rows, so this order also decides which samples share a micro-batch.

    This project (`generator` given): a random permutation cut into nearly equal parts, each sorted by
    `sort_key` so rows of similar length share a micro-batch (less padding; under a global token mean the
    grouping changes no number). The released code (`generator` None): verl's `split(size)` of the rows in
    the order the trainer built them (`shuffle: False`, no sorting), with `size` the per-process
    mini-batch: fixed blocks of consecutive rows, the last one shorter and any further ones empty. Under
    the released per-micro-batch token mean that order decides every sample's weight.
    """
    if generator is None:
        return [list(range(min(k * size, num_rows), min((k + 1) * size, num_rows))) for k in range(num_minibatches)]
    order = torch.randperm(num_rows, generator=generator)                      # (num_rows,)
    parts = [part.tolist() for part in torch.tensor_split(order, num_minibatches)]
    return [sorted(part, key=sort_key) if sort_key else part for part in parts]


def update_policy(model, optimizer, accelerator, experience: Experience, cfg, generator: torch.Generator,
                  state: dict, iteration: int = 0) -> dict:
    """Mini-batch updates over this process's experience at training iteration `iteration`; returns the
    averaged metrics.

    The rows are split into K = ceil(N / per-process mini-batch) nearly equal mini-batches (K and the
    micro-batch counts agree over processes; a process with nothing left runs a zero-weight dummy row so
    collective operations stay in step). A non-finite gradient skips the step (counted in `state`).
    Logged losses are each micro-batch's own mean, averaged with its token (or row) count as weight.
    `micro-token-mean` (the released code's weighting) normalises each micro-batch by its own token count
    times the number of accumulation steps instead of by the mini-batch's count. `--parity released` takes
    the rows in the trainer's order in fixed blocks (`minibatch_rows`) and counts the accumulation steps a
    full mini-batch has (a shorter last one weighs less), as the released code (verl's dp_actor) does.
    """
    world, micro = accelerator.num_processes, cfg.micro_batch_size
    per_process = cfg.mini_batch_size // world
    sizes = accelerator.gather(torch.tensor([len(experience)], device=accelerator.device)).tolist()
    num_minibatches = max(1, max(math.ceil(n / per_process) for n in sizes))
    lengths = (experience.attention_mask.sum(-1)).tolist()                        # prompt + response tokens
    response_lengths = experience.response_mask.sum(-1).tolist()
    per_token = cfg.loss_agg in ("token-mean", "micro-token-mean")
    sums, weight, grad_norms = {}, 0.0, []
    released_order = cfg.parity == "released"
    for _ in range(cfg.ppo_epochs):
        splits = (minibatch_rows(len(experience), num_minibatches, per_process) if released_order
                  else minibatch_rows(len(experience), num_minibatches, per_process, generator, lambda i: lengths[i]))
        for rows in splits:
            count = sum(response_lengths[i] if per_token else int(response_lengths[i] > 0) for i in rows)
            counts = accelerator.gather(torch.tensor([count, len(rows)], device=accelerator.device).view(1, 2))
            shared = max(1, counts[:, 0].sum().item()) / world                    # DDP averages over processes
            num_micro = max(1, math.ceil(counts[:, 1].max().item() / micro))
            accumulation = per_process // micro if released_order else num_micro   # verl: the configured count
            step_sums, step_weight = {}, 0.0
            for k in range(num_micro):
                micro_rows = rows[k * micro:(k + 1) * micro]
                batch = experience[micro_rows or [0]]
                mask = batch.response_mask * torch.tensor(1.0 if micro_rows else 0.0)  # (b, T) dummy row: all 0
                own_count = float(mask.sum() if per_token else (mask.sum(-1) > 0).sum())
                denominator = max(own_count, 1.0) * accumulation if cfg.loss_agg == "micro-token-mean" else shared
                sync = nullcontext() if k == num_micro - 1 else accelerator.no_sync(model)
                with sync:
                    with accelerator.autocast():
                        loss, metrics = micro_step_loss(model, batch, mask, cfg, denominator, iteration)
                    accelerator.backward(loss)
                scale = denominator / max(own_count, 1.0)                          # global-normalised -> own mean
                for key, value in metrics.items():
                    value = value * scale if key.startswith("loss/") else value
                    step_sums[key] = step_sums.get(key, 0.0) + value * own_count
                step_weight += own_count
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
    out["grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
    out["train/optimizer_steps"] = len(grad_norms)
    out["train/skipped_steps"] = state.get("skipped_steps", 0)
    return out
