"""On-policy self-distillation's numbers: memory-safe token log-probs of the student's sampled tokens
(under the student's prompt or the teacher's privileged one: the same function), and the
full-vocabulary divergences of the paper's ablation. The prompts themselves are `prompts.py`.

Imports torch only. Batches are laid out as
    [ left-padded prompt | right-padded response ]   # (B, P + T)
so the response is always the last T columns and one slice serves every row.
The `(B, T, V)` float32 logits are never materialised: the output head is applied to the final hidden
states in sequence chunks, and with gradients on each chunk is recomputed in backward (checkpoint).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

try:
    from torch.distributed.fsdp import FSDPModule
except ImportError:          # a torch built without distributed support, or older than 2.6: nothing is sharded
    FSDPModule = ()

DIVERGENCES = ("sampled", "reverse_kl", "forward_kl", "jsd")


def left_pad(rows: list[list[int]], pad_id: int, width: int | None = None):
    """Rows right-aligned in a `(B, width)` batch (width: the longest row if None): input_ids and
    attention_mask, long tensors. Prompts are left-padded so every row's next token is the last column."""
    width = width or max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, W)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)    # (B, W)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, width - len(row):] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, width - len(row):] = 1
    return input_ids, attention_mask


def pack_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int):
    """Left-pad prompts and right-pad responses into one batch.

    Returns input_ids `(B, P+T)`, attention_mask `(B, P+T)`, response_mask `(B, T)` (long tensors),
    with P the longest prompt and T the longest response (at least 1, so empty responses still fit).
    """
    prompts, prompt_mask = left_pad(prompt_ids, pad_id)              # (B, P), (B, P)
    T = max(1, max(len(r) for r in response_ids))
    responses = torch.full((len(response_ids), T), pad_id, dtype=torch.long)  # (B, T)
    response_mask = torch.zeros((len(response_ids), T), dtype=torch.long)     # (B, T)
    for row, response in enumerate(response_ids):
        responses[row, :len(response)] = torch.tensor(response, dtype=torch.long)
        response_mask[row, :len(response)] = 1
    input_ids = torch.cat([prompts, responses], dim=1)               # (B, P+T)
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)  # (B, P+T)
    return input_ids, attention_mask, response_mask


def unwrap(model):
    """The bare model under a DDP/accelerate wrapper (PEFT models forward attribute access themselves)."""
    return getattr(model, "module", model)


def forward_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
    """One forward through the model itself: (last-layer normed hidden states `(B, S, H)`, model outputs).

    We call the (possibly DDP-wrapped) model itself, so distributed gradient hooks behave, with
    `logits_to_keep=1` so its own head costs one position, and read the decoder's output with a hook.
    Position ids follow the attention mask, as `generate` does for left-padded prompts. `attention_mask`
    `(B, L + S)` may be longer than `input_ids` `(B, S)`: then its first L columns are a KV cache passed
    in `kwargs`, and the positions of the S new tokens continue from it exactly as in one full pass.
    """
    captured = {}

    def grab(module, args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]  # (B, S)
    handle = unwrap(model).get_decoder().register_forward_hook(grab)
    try:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=1, **kwargs)
    finally:
        handle.remove()
    hidden = captured["hidden"]                                      # (B, S, H)
    if isinstance(model, FSDPModule) and torch.is_grad_enabled():
        # FSDP2 prepares the backward of a parameter group from a hook on the group's forward output; for
        # the group that holds the head (and the tied embedding) that is the logits. Our head runs outside
        # the forward, so the logits must be in the graph, or the backward crashes (torch 2.13: a segfault).
        # A zero-weight term puts them in; the gradient is unchanged (tests/test_distributed.py).
        hidden = hidden + 0.0 * outputs.logits.sum()
    return hidden, outputs                                           # (B, S, H), outputs


def final_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last-layer (normed) hidden states `(B, L, H)` of a causal LM, through the model's own forward."""
    hidden, _ = forward_hidden(model, input_ids, attention_mask, use_cache=False)
    return hidden                                                    # (B, L, H)


def response_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    response_length: int) -> torch.Tensor:
    """Final hidden states `(B, T, H)` that predict the last `response_length` tokens of each row."""
    hidden = final_hidden_states(model, input_ids, attention_mask)   # (B, L, H)
    return hidden[:, -response_length - 1:-1]                        # (B, T, H)


def _chunk_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, with_entropy: bool):
    """log p(target) `(B, c)` and entropy `(B, c)` from hidden `(B, c, H)`; float32 only inside the chunk."""
    logits = head(hidden).float() / temperature                      # (B, c, V)
    logp_all = torch.log_softmax(logits, dim=-1)                     # (B, c, V)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)   # (B, c)
    if not with_entropy:
        return logp, torch.zeros_like(logp)
    entropy = -(logp_all.exp() * logp_all).sum(-1)                   # (B, c)
    return logp, entropy


def _chunks(length: int, chunk_size: int | None):
    size = length if not chunk_size else chunk_size
    return [(start, min(start + size, length)) for start in range(0, length, size)]


def logprobs_from_hidden(head, hidden: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
                         chunk_size: int | None = 128, with_entropy: bool = False):
    """log-probs `(B, T)` of `targets` `(B, T)` and entropy `(B, T)` from hidden states `(B, T, H)`.

    The head runs on `chunk_size` positions at a time (None: all at once, the plain dense
    computation); under autograd each chunk is checkpointed, so backward keeps `(B, T, H)` hidden
    states instead of `(B, T, V)` float32 log-probs.
    """
    use_checkpoint = torch.is_grad_enabled() and chunk_size is not None
    logps, entropies = [], []
    for start, end in _chunks(targets.shape[1], chunk_size):
        args = (head, hidden[:, start:end], targets[:, start:end], temperature, with_entropy)
        if use_checkpoint:
            logp, entropy = checkpoint(_chunk_logprobs, *args, use_reentrant=False)
        else:
            logp, entropy = _chunk_logprobs(*args)
        logps.append(logp)                                           # (B, c)
        entropies.append(entropy)                                    # (B, c)
    return torch.cat(logps, dim=1), torch.cat(entropies, dim=1)      # (B, T), (B, T)


def token_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int,
                   temperature: float = 1.0, chunk_size: int | None = 128, with_entropy: bool = False):
    """log pi(y_t | x, y_<t) of the last `response_length` tokens of each row: returns (logp, entropy).

    input_ids, attention_mask `(B, L)` in the `pack_batch` layout; logp and entropy `(B, T)` float32
    (entropy is zeros unless `with_entropy`). Memory-safe: see `logprobs_from_hidden`.
    """
    hidden = response_hidden(model, input_ids, attention_mask, response_length)  # (B, T, H)
    targets = input_ids[:, -response_length:]                                    # (B, T)
    head = unwrap(model).get_output_embeddings()
    return logprobs_from_hidden(head, hidden, targets, temperature, chunk_size, with_entropy)


def _divergence_chunk(head, student_hidden, teacher_hidden, kind: str, temperature: float):
    """Per-token divergence `(B, c)` between student and teacher next-token distributions."""
    student = torch.log_softmax(head(student_hidden).float() / temperature, dim=-1)   # (B, c, V)
    with torch.no_grad():
        teacher = torch.log_softmax(head(teacher_hidden).float() / temperature, dim=-1)  # (B, c, V)
    if kind == "reverse_kl":                                         # KL(student || teacher)
        return (student.exp() * (student - teacher)).sum(-1)
    if kind == "forward_kl":                                         # KL(teacher || student)
        return (teacher.exp() * (teacher - student)).sum(-1)
    if kind == "jsd":                                                # (KL(s||m) + KL(t||m)) / 2
        mixture = torch.logsumexp(torch.stack([student, teacher]), dim=0) - torch.log(torch.tensor(2.0))
        return 0.5 * ((student.exp() * (student - mixture)).sum(-1)
                      + (teacher.exp() * (teacher - mixture)).sum(-1))
    raise ValueError(f"divergence={kind!r} is unknown; choose one of {', '.join(DIVERGENCES[1:])}")


def vocab_divergence(head, student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, kind: str,
                     temperature: float = 1.0, chunk_size: int | None = 128) -> torch.Tensor:
    """Full-vocabulary divergence per response position, chunked along the sequence; returns `(B, T)`.

    student_hidden `(B, T, H)` (with grad) and teacher_hidden `(B, T, H)` are the final hidden states
    that predict the response tokens (see `response_hidden`); `head` is the output embedding. Gradient
    flows through the student only. Kinds: reverse_kl = sum_v p_s (log p_s - log p_t), forward_kl =
    sum_v p_t (log p_t - log p_s), jsd = (KL(p_s||m) + KL(p_t||m)) / 2 with m = (p_s + p_t) / 2.
    """
    teacher_hidden = teacher_hidden.detach()
    use_checkpoint = torch.is_grad_enabled() and chunk_size is not None
    parts = []
    for start, end in _chunks(student_hidden.shape[1], chunk_size):
        args = (head, student_hidden[:, start:end], teacher_hidden[:, start:end], kind, temperature)
        parts.append(checkpoint(_divergence_chunk, *args, use_reentrant=False) if use_checkpoint
                     else _divergence_chunk(*args))                  # (B, c)
    return torch.cat(parts, dim=1)                                   # (B, T)

