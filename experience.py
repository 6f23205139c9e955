"""Stage 3 of an iteration, the scoring passes: from step samples to the `Experience` batch.

Old, reference and teacher log-probs are computed once per iteration, before any update (with the
rollout weights), and stored with the padded token ids in an `Experience`; the update (`update.py`)
then needs only the student's live log-probs. The teacher is the same model with the privileged skill
text in its prompt (the paper's self-teacher); the prompt prefix that samples with the same skills share
is encoded once (`teacher_cache.py`).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch

from opsd import pack_batch, token_logprobs
from prompts import teacher_prompt_ids
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
    own longest prompts and response (`take_rows`), so how samples are grouped into micro-batches never
    changes a number.
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
