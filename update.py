"""The policy update: per-sample log-prob passes and the mini-batch optimisation of the SDAR objective.

    L = pg_coef*PG + kl_coef*KL - entropy_coef*H + sdar_coef*SDAR   (+ Skill-SD / RLSD for baselines)

Old, reference and teacher log-probs are computed once per iteration, before any update (with the
rollout weights); the student's are live. Every loss is normalised by the token (or sequence) count of
the whole mini-batch over all processes and accumulation steps, so 1 and N processes make the same
update on the same samples.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from gate import sdar_loss, skill_sd_loss
from grpo import aggregate, kl_k3, policy_loss, rlsd_advantages
from opsd import (cached_teacher_logprobs, logprobs_from_hidden, pack_batch, response_hidden, teacher_inputs,
                  teacher_prompt_ids, teacher_response_hidden, token_logprobs, vocab_divergence)


@torch.no_grad()
def score_tokens(model, tokenizer, samples, cfg, teacher: bool = False) -> list[torch.Tensor]:
    """Log-probs of each sample's sampled response `(len(response),)`, seen by the student or the teacher.

    The teacher is the same model on the privileged prompt followed by the identical response tokens;
    with `teacher_prefix_cache` the prompt prefix that samples with the same skills share is encoded once.
    """
    if teacher and cfg.teacher_prefix_cache:
        skills = [s.skill_text for s in samples]
        prompts = teacher_prompt_ids(tokenizer, [s.user_message for s in samples], skills, cfg.teacher_context,
                                     cfg.max_prompt_length)
        logp = cached_teacher_logprobs(model, prompts, [s.response_ids for s in samples], skills,
                                       tokenizer.pad_token_id, cfg.micro_batch_size, cfg.logprob_chunk_size)  # (N, T)
        return [logp[i, :len(s.response_ids)].cpu() for i, s in enumerate(samples)]
    device = next(model.parameters()).device
    # similar lengths share a micro-batch (less padding); the teacher's prompt also holds the skill text
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].skill_text) if teacher else 0,
                                                       len(samples[i].prompt_ids)))
    out = [None] * len(samples)
    for start in range(0, len(samples), cfg.micro_batch_size):
        rows = order[start:start + cfg.micro_batch_size]
        chunk = [samples[i] for i in rows]
        responses = [s.response_ids for s in chunk]
        if teacher:
            ids, attn, mask = teacher_inputs(tokenizer, [s.user_message for s in chunk], responses,
                                             [s.skill_text for s in chunk], cfg.teacher_context, cfg.max_prompt_length)
        else:
            ids, attn, mask = pack_batch([s.prompt_ids for s in chunk], responses, tokenizer.pad_token_id)
        logp, _ = token_logprobs(model, ids.to(device), attn.to(device), mask.shape[1],
                                 chunk_size=cfg.logprob_chunk_size)              # (b, T)
        for row, (i, s) in enumerate(zip(rows, chunk)):
            out[i] = logp[row, :len(s.response_ids)].float().cpu()
    return out


def _pad(rows: list[torch.Tensor], T: int) -> torch.Tensor:
    out = torch.zeros(len(rows), T)                                  # (B, T)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def micro_step_loss(model, tokenizer, batch: dict, cfg, denominator: float):
    """The full SDAR objective on one micro-batch; returns (loss, metrics, weight). Shapes: B samples, T tokens.

    The loss is normalised by `denominator` (the whole mini-batch's count); the logged loss values are
    rescaled to this micro-batch's own mean, and `weight` is its own count for averaging them.
    """
    device = next(model.parameters()).device
    ids, attn, mask = (t.to(device) for t in pack_batch(batch["prompt_ids"], batch["response_ids"], tokenizer.pad_token_id))
    mask = mask * batch["row_mask"].to(device)[:, None]              # (B, T) dummy rows contribute nothing
    T = mask.shape[1]
    old, ref, teacher = (_pad(batch[k], T).to(device) for k in ("old_logp", "ref_logp", "teacher_logp"))  # (B, T)
    advantages = batch["advantages"].to(device)                      # (B,)
    need_entropy = cfg.entropy_coef > 0 or cfg.gate != "gap"
    hidden = response_hidden(model, ids, attn, T)                    # (B, T, H)
    head = getattr(model, "module", model).get_output_embeddings()
    logp, entropy = logprobs_from_hidden(head, hidden, ids[:, -T:], 1.0, cfg.logprob_chunk_size, need_entropy)  # (B, T)
    agg = dict(mode=cfg.loss_agg, denominator=denominator, norm_length=cfg.max_new_tokens)
    own_count = float(mask.sum() if cfg.loss_agg == "token-mean" else (mask.sum(-1) > 0).sum())
    scale = denominator / max(own_count, 1.0)                        # global-normalised -> own mean
    if cfg.rlsd_lam > 0:
        advantages = rlsd_advantages(advantages, teacher, old, cfg.rlsd_lam)  # (B, T)
    pg, metrics = policy_loss(logp, old, advantages, mask, cfg.clip_low, cfg.clip_high, cfg.dual_clip,
                              cfg.loss_agg, denominator, cfg.max_new_tokens)
    metrics = {f"pg/{k}": v for k, v in metrics.items()}
    loss = cfg.pg_coef * pg
    metrics["loss/pg"] = pg.item() * scale
    if cfg.kl_coef > 0:
        kl = aggregate(kl_k3(logp, ref), mask, **agg)
        loss = loss + cfg.kl_coef * kl
        metrics["loss/kl"] = kl.item() * scale
    if need_entropy:
        mean_entropy = aggregate(entropy, mask, **agg)
        loss = loss - cfg.entropy_coef * mean_entropy
        metrics["loss/entropy"] = mean_entropy.item() * scale
    if cfg.sdar_coef > 0:
        divergence = None
        if cfg.divergence != "sampled":
            with torch.no_grad():
                if cfg.teacher_prefix_cache:
                    prompts = teacher_prompt_ids(tokenizer, batch["user_messages"], batch["skill_texts"],
                                                 cfg.teacher_context, cfg.max_prompt_length)
                    teacher_hidden = teacher_response_hidden(model, prompts, batch["response_ids"],
                                                             batch["skill_texts"], tokenizer.pad_token_id,
                                                             cfg.micro_batch_size)            # (B, T, H)
                else:
                    t_ids, t_attn, _ = teacher_inputs(tokenizer, batch["user_messages"], batch["response_ids"],
                                                      batch["skill_texts"], cfg.teacher_context,
                                                      cfg.max_prompt_length)
                    teacher_hidden = response_hidden(model, t_ids.to(device), t_attn.to(device), T)  # (B, T, H)
            divergence = vocab_divergence(head, hidden, teacher_hidden, cfg.divergence, chunk_size=cfg.logprob_chunk_size)
        sd, sd_metrics = sdar_loss(logp, teacher, mask, cfg.beta, cfg.gate, entropy, cfg.loss_agg, divergence, denominator,
                                   cfg.max_new_tokens)
        loss = loss + cfg.sdar_coef * sd
        metrics.update({"loss/sdar": sd.item() * scale, **{f"sdar/{k}": v for k, v in sd_metrics.items()}})
    if cfg.skill_sd_coef > 0:
        ssd = skill_sd_loss(logp, old, teacher, mask, cfg.loss_agg, denominator, cfg.max_new_tokens)
        loss = loss + cfg.skill_sd_coef * ssd
        metrics["loss/skill_sd"] = ssd.item() * scale
    return loss, metrics, own_count


def update_policy(model, tokenizer, optimizer, accelerator, samples, tensors: dict, cfg,
                  generator: torch.Generator, state: dict) -> dict:
    """Mini-batch updates over this process's step samples; returns the averaged metrics.

    tensors: per-sample lists `advantages` (scalars), `old_logp`, `ref_logp`, `teacher_logp` (1-D).
    The samples are split into K = ceil(N / per-process mini-batch) nearly equal mini-batches (K and
    the micro-batch counts agree over processes; a process with nothing left runs a zero-weight dummy
    row so collective operations stay in step). A non-finite gradient skips the step (counted in
    `state`, logged, its metrics left out of the averages); `max_bad_steps` in a row raise
    FloatingPointError.
    """
    world, micro = accelerator.num_processes, cfg.micro_batch_size
    per_process = cfg.mini_batch_size // world
    sizes = accelerator.gather(torch.tensor([len(samples)], device=accelerator.device)).tolist()
    num_minibatches = max(1, max(math.ceil(n / per_process) for n in sizes))
    sums, weight, grad_norms = {}, 0.0, []
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(samples), generator=generator)
        for mb in range(num_minibatches):
            mine = torch.tensor_split(order, num_minibatches)[mb].tolist()
            mine.sort(key=lambda i: len(samples[i].prompt_ids) + len(samples[i].response_ids))  # less padding, same sum
            count = sum(len(samples[i].response_ids) if cfg.loss_agg == "token-mean"
                        else int(len(samples[i].response_ids) > 0) for i in mine)
            counts = accelerator.gather(torch.tensor([count, len(mine)], device=accelerator.device).view(1, 2))
            denominator = max(1, counts[:, 0].sum().item()) / world   # DDP averages gradients over processes
            num_micro = max(1, math.ceil(counts[:, 1].max().item() / micro))
            step_sums, step_weight = {}, 0.0
            for k in range(num_micro):
                rows = mine[k * micro:(k + 1) * micro]
                row_mask = torch.ones(len(rows))                     # (b,)
                if not rows:
                    rows, row_mask = [0], torch.zeros(1)
                batch = {key: [values[i] for i in rows] for key, values in tensors.items()}
                batch["advantages"] = torch.stack(batch["advantages"])  # (b,)
                batch.update(prompt_ids=[samples[i].prompt_ids for i in rows], row_mask=row_mask,
                             response_ids=[samples[i].response_ids for i in rows],
                             user_messages=[samples[i].user_message for i in rows],
                             skill_texts=[samples[i].skill_text for i in rows])
                sync = nullcontext() if k == num_micro - 1 else accelerator.no_sync(model)
                with sync:
                    with accelerator.autocast():
                        loss, metrics, w = micro_step_loss(model, tokenizer, batch, cfg, denominator)
                    accelerator.backward(loss)
                for key, value in metrics.items():
                    step_sums[key] = step_sums.get(key, 0.0) + value * w
                step_weight += w
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip))
            if not math.isfinite(grad_norm):      # the step and its metrics are dropped: NaN would poison the means
                optimizer.zero_grad(set_to_none=True)
                state["bad_steps"] = state.get("bad_steps", 0) + 1
                state["skipped_steps"] = state.get("skipped_steps", 0) + 1
                culprits = ", ".join(k for k, v in step_sums.items()
                                     if k.startswith("loss/") and not math.isfinite(v)) or "the gradient"
                accelerator.print(f"warning: non-finite loss or gradient ({culprits}), optimizer step skipped "
                                  f"({state['bad_steps']} in a row)")
                if state["bad_steps"] >= cfg.max_bad_steps:
                    raise FloatingPointError(f"{state['bad_steps']} non-finite updates in a row ({culprits}): stopped "
                                             f"before the weights are damaged; lower lr or check the data "
                                             f"(max_bad_steps={cfg.max_bad_steps})")
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
