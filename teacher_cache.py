"""The teacher's scoring pass with its privileged prefix encoded once per group of samples.

Rows that retrieved the same skills have teacher prompts that begin with the same tokens (prefix mode:
header + skills; in_prompt: the chat template's opening too). A group of such rows runs that shared
prefix once, as one row, into the model's own KV cache (plain Hugging Face `past_key_values`, no custom
kernels); each of its micro-batches repeats the cache over its rows and runs only each row's rest on
top: the same tokens at the same positions with the same attention as the full pass, so the same numbers
(tests/test_teacher_cache.py: within 1e-5 of `prompts.teacher_inputs` + `opsd.token_logprobs`), with the
skills' tokens through the layers once per group instead of once per row (their keys are still attended
by every row).
"""

from __future__ import annotations

import torch

from opsd import forward_hidden, logprobs_from_hidden, pack_batch, unwrap


MIN_SHARED_PREFIX = 16
"""Below this many shared tokens a micro-batch takes the plain full pass (the saving would not pay a second call)."""


def shared_prefix_length(token_lists: list[list[int]]) -> int:
    """How many leading tokens every list has in common."""
    shortest = min(len(tokens) for tokens in token_lists)
    first = token_lists[0]
    for position in range(shortest):
        if any(tokens[position] != first[position] for tokens in token_lists):
            return position
    return shortest


def _even_split(rows: list[int], size: int) -> list[list[int]]:
    """`rows` cut into ceil(n / size) consecutive parts of nearly equal length, none longer than `size`."""
    parts = -(-len(rows) // size)
    return [rows[k * len(rows) // parts:(k + 1) * len(rows) // parts] for k in range(parts)]


def prefix_micro_batches(prompt_ids: list[list[int]], group_keys: list, micro_batch_size: int,
                         min_prefix: int = MIN_SHARED_PREFIX) -> list[tuple[list[int], int]]:
    """Plan the teacher's micro-batches: a list of (row indices, number of leading prompt tokens they share).

    Rows with the same group key (the same privileged text) and the same first `min_prefix` tokens (a row
    cut by left truncation starts elsewhere, so it leaves its group) form a group. Its prefix is what all
    its prompts share, less at least one prompt token per row: the rest must hold the token that predicts
    the first response token. Its rows, sorted by prompt length, are cut into nearly equal micro-batches
    with that same prefix, consecutive in the plan, so it is encoded once per group. A group of one row, or
    one sharing fewer than `min_prefix` tokens, goes to plain micro-batches (prefix 0), sorted by prompt
    length. Each row appears exactly once.
    """
    groups, plain, batches = {}, [], []
    for row, (prompt, key) in enumerate(zip(prompt_ids, group_keys)):
        groups.setdefault((key, tuple(prompt[:min_prefix])), []).append(row)
    for rows in groups.values():
        prompts = [prompt_ids[row] for row in rows]
        shared = min(shared_prefix_length(prompts), min(len(prompt) for prompt in prompts) - 1)
        if len(rows) == 1 or shared < min_prefix:
            plain.extend(rows)
            continue
        rows.sort(key=lambda row: len(prompt_ids[row]))
        batches.extend((part, shared) for part in _even_split(rows, micro_batch_size))
    plain.sort(key=lambda row: len(prompt_ids[row]))
    if plain:
        batches.extend((part, 0) for part in _even_split(plain, micro_batch_size))
    return batches


def encode_prefix(model, prefix_ids: list[int]):
    """Run `prefix_ids` as one row into the model's own KV cache: returns (keyword, cache) to pass it back.

    The keyword is the name the model's outputs carry the cache under: `past_key_values`, renamed `cache`
    by newer transformers.
    """
    prefix = torch.tensor([prefix_ids], device=next(model.parameters()).device)   # (1, L)
    _, outputs = forward_hidden(model, prefix, torch.ones_like(prefix), use_cache=True)
    name = "cache" if "cache" in outputs else "past_key_values"
    return name, outputs[name]


def hidden_after_prefix(model, rest_ids: list[list[int]], response_ids: list[list[int]], prefix, pad_id: int):
    """Hidden states `(b, T, H)` that predict each row's response, and those response tokens `(b, T)`, for
    prompts made of one shared prefix (`encode_prefix`'s (keyword, cache), or None for none) and `rest_ids`.

    The same values as `response_hidden` on `pack_batch(prefix + rest, response_ids)`: the prefix's cache
    is repeated over the b rows and the rest runs on top in the `pack_batch` layout [left-padded rest |
    right-padded response], with an attention mask over prefix and rest (the padding between them masked)
    and positions that continue from the prefix's, as in the full pass. Then the cache is rewound to the
    prefix alone, one row, ready for the group's next micro-batch.
    """
    device = next(model.parameters()).device
    input_ids, attention_mask, response_mask = (t.to(device) for t in pack_batch(rest_ids, response_ids, pad_id))
    T = response_mask.shape[1]                                       # input_ids, attention_mask (b, S+T)
    if prefix is None:
        hidden, _ = forward_hidden(model, input_ids, attention_mask, use_cache=False)       # (b, S+T, H)
    else:
        name, cache = prefix
        prefix_mask = attention_mask.new_ones(len(rest_ids), cache.get_seq_length())  # (b, L)
        attention_mask = torch.cat([prefix_mask, attention_mask], dim=1)             # (b, L+S+T)
        cache.batch_repeat_interleave(len(rest_ids))                 # keys, values (b, heads, L, d) per layer
        hidden, _ = forward_hidden(model, input_ids, attention_mask, use_cache=True, **{name: cache})  # (b, S+T, H)
        cache.crop(-input_ids.shape[1])                              # rewind: the prefix alone ...
        cache.batch_select_indices(torch.tensor([0], device=device))  # ... as one row
    return hidden[:, -T - 1:-1], input_ids[:, -T:]                   # (b, T, H), (b, T)


def _teacher_micro_batches(model, prompt_ids, response_ids, group_keys, pad_id, micro_batch_size, min_prefix):
    """(rows, hidden `(b, t, H)`, response tokens `(b, t)`) per micro-batch of `prefix_micro_batches`; each
    group's prefix is encoded once, for all its micro-batches."""
    prefix_ids, prefix = None, None
    for rows, prefix_length in prefix_micro_batches(prompt_ids, group_keys, micro_batch_size, min_prefix):
        prompts = [prompt_ids[row] for row in rows]
        if prefix_length and prompts[0][:prefix_length] != prefix_ids:
            prefix_ids = prompts[0][:prefix_length]
            prefix = encode_prefix(model, prefix_ids)
        rests = [prompt[prefix_length:] for prompt in prompts]
        yield rows, *hidden_after_prefix(model, rests, [response_ids[row] for row in rows],
                                         prefix if prefix_length else None, pad_id)


def _response_width(response_ids: list[list[int]]) -> int:
    """T of `pack_batch`: the longest response, at least 1."""
    return max(1, max((len(response) for response in response_ids), default=0))


@torch.no_grad()
def cached_teacher_logprobs(model, prompt_ids: list[list[int]], response_ids: list[list[int]], group_keys: list,
                            pad_id: int, micro_batch_size: int, chunk_size: int | None = 128,
                            min_prefix: int = MIN_SHARED_PREFIX) -> torch.Tensor:
    """The teacher's log-probs `(B, T)` float32 of each row's response tokens, shared prefixes encoded once.

    prompt_ids: the teacher's prompts as `prompts.teacher_prompt_ids` gives them (rendered, tokenised,
    left-truncated); group_keys: one hashable per row, equal for rows with the same privileged text;
    `chunk_size` bounds the head's memory (`logprobs_from_hidden`).
    Same values and layout as `token_logprobs` on `teacher_inputs(...)`: response in the T columns,
    right-padded (zeros past a row's response), only one micro-batch's hidden states alive at a time.
    """
    head = unwrap(model).get_output_embeddings()
    device = next(model.parameters()).device
    out = torch.zeros(len(prompt_ids), _response_width(response_ids), device=device)   # (B, T)
    for rows, hidden, targets in _teacher_micro_batches(model, prompt_ids, response_ids, group_keys, pad_id,
                                                        micro_batch_size, min_prefix):
        logp, _ = logprobs_from_hidden(head, hidden, targets, chunk_size=chunk_size)   # (b, t)
        out[rows, :logp.shape[1]] = logp
    lengths = torch.tensor([len(response) for response in response_ids], device=device)  # (B,)
    return out * (torch.arange(out.shape[1], device=device) < lengths[:, None])         # (B, T)
