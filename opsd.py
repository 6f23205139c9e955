"""On-policy self-distillation plumbing: memory-safe token log-probs, the teacher's inputs, and the
full-vocabulary divergences of the paper's ablation.

Imports torch only (a tokenizer is passed in). Batches are laid out as
    [ left-padded prompt | right-padded response ]   # (B, P + T)
so the response is always the last T columns and one slice serves every row.
The `(B, T, V)` float32 logits are never materialised: the output head is applied to the final hidden
states in sequence chunks, and with gradients on each chunk is recomputed in backward (checkpoint).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

PRIVILEGED_HEADER = "[Privileged Skill Information]\n"


def pack_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int):
    """Left-pad prompts and right-pad responses into one batch.

    Returns input_ids `(B, P+T)`, attention_mask `(B, P+T)`, response_mask `(B, T)` (long tensors),
    with P the longest prompt and T the longest response (at least 1, so empty responses still fit).
    """
    P = max(len(p) for p in prompt_ids)
    T = max(1, max(len(r) for r in response_ids))
    B = len(prompt_ids)
    input_ids = torch.full((B, P + T), pad_id, dtype=torch.long)     # (B, P+T)
    attention_mask = torch.zeros((B, P + T), dtype=torch.long)       # (B, P+T)
    for row, (prompt, response) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[row, P - len(prompt):P] = torch.tensor(prompt, dtype=torch.long)
        input_ids[row, P:P + len(response)] = torch.tensor(response, dtype=torch.long)
        attention_mask[row, P - len(prompt):P + len(response)] = 1
    response_mask = attention_mask[:, P:].clone()                    # (B, T)
    return input_ids, attention_mask, response_mask


def _unwrap(model):
    """The bare model under a DDP/accelerate wrapper (PEFT models forward attribute access themselves)."""
    return getattr(model, "module", model)


def _forward(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
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
    handle = _unwrap(model).get_decoder().register_forward_hook(grab)
    try:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        logits_to_keep=1, **kwargs)
    finally:
        handle.remove()
    return captured["hidden"], outputs                               # (B, S, H), outputs


def final_hidden_states(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last-layer (normed) hidden states `(B, L, H)` of a causal LM, through the model's own forward."""
    hidden, _ = _forward(model, input_ids, attention_mask, use_cache=False)
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
    head = _unwrap(model).get_output_embeddings()
    return logprobs_from_hidden(head, hidden, targets, temperature, chunk_size, with_entropy)


def render_chat(tokenizer, user_message: str) -> str:
    """One user message through the tokenizer's chat template, ready for the assistant's reply."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False,
                                         add_generation_prompt=True)


def teacher_prompt_text(tokenizer, user_message: str, privileged_text: str, mode: str = "prefix") -> str:
    """The teacher's prompt: the student's prompt with the privileged skill text.

    prefix (released code): header + skills + blank line, in front of the chat-templated student prompt.
    in_prompt (paper): the same text placed at the start of the user message, inside the template.
    """
    privileged = PRIVILEGED_HEADER + privileged_text + "\n\n"
    if mode == "prefix":
        return privileged + render_chat(tokenizer, user_message)
    if mode == "in_prompt":
        return render_chat(tokenizer, privileged + user_message)
    raise ValueError(f"teacher_context={mode!r} is unknown; choose prefix or in_prompt")


def _opens_with_split(tokenizer, text: str) -> bool:
    """Whether the tokenizer cuts `text` off from whatever precedes it: `text` opens with a special added token
    that keeps the whitespace before it (added tokens are split out before normalisation and pre-tokenisation)."""
    return any(token.special and not (token.lstrip or token.normalized or token.single_word)
               and text.startswith(token.content) for token in tokenizer.added_tokens_decoder.values())


def teacher_prompt_ids(tokenizer, user_messages: list[str], privileged_texts: list[str], mode: str = "prefix",
                       max_prompt_length: int = 2048) -> list[list[int]]:
    """The teacher's prompt tokens per row, the ids `teacher_inputs` makes: `teacher_prompt_text`, tokenised,
    left-truncated to `max_prompt_length`.

    In prefix mode, when the chat template opens with a special token (ChatML's `<|im_start|>`), the tokenizer
    cuts the text there first: the privileged part is tokenised once per distinct text and joined to each
    row's chat tokens. Same ids, without re-tokenising about 1.7k characters of skills for every row.
    """
    def tokenize(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    chats = [render_chat(tokenizer, message) for message in user_messages]
    if mode == "prefix" and all(_opens_with_split(tokenizer, chat) for chat in chats):
        distinct = list(dict.fromkeys(privileged_texts))
        privileged_ids = dict(zip(distinct, tokenize([PRIVILEGED_HEADER + text + "\n\n" for text in distinct])))
        ids = [privileged_ids[text] + chat_ids for text, chat_ids in zip(privileged_texts, tokenize(chats))]
    else:
        ids = tokenize([teacher_prompt_text(tokenizer, message, text, mode)
                        for message, text in zip(user_messages, privileged_texts)])
    return [row[-max_prompt_length:] for row in ids]                # left truncation keeps the end


def teacher_inputs(tokenizer, user_messages: list[str], response_ids: list[list[int]],
                   privileged_texts: list[str], mode: str = "prefix", max_prompt_length: int = 2048):
    """The teacher's batch: privileged prompt (re-tokenised, left-truncated to `max_prompt_length`) followed
    by the student's exact response tokens.

    Returns input_ids `(B, P+T)`, attention_mask `(B, P+T)`, response_mask `(B, T)` in the `pack_batch`
    layout, so `token_logprobs(..., response_length=T)` scores the same tokens as the student batch.
    """
    prompts = []
    for message, privileged in zip(user_messages, privileged_texts):
        text = teacher_prompt_text(tokenizer, message, privileged, mode)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(ids[-max_prompt_length:])                     # left truncation keeps the end
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pack_batch(prompts, response_ids, pad_id)


# The teacher's privileged prefix, encoded once. Rows that retrieved the same skills have teacher prompts that
# begin with the same tokens (prefix mode: header + skills; in_prompt: the chat template's opening too). A
# group of such rows runs that shared prefix once, as one row, into the model's own KV cache; each of its
# micro-batches repeats the cache over its rows and runs only each row's rest on top: the same tokens at the
# same positions with the same attention as the full pass, so the same numbers, with the skills' tokens
# through the layers once per group instead of once per row (their keys are still attended by every row).

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
    _, outputs = _forward(model, prefix, torch.ones_like(prefix), use_cache=True)
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
        hidden, _ = _forward(model, input_ids, attention_mask, use_cache=False)       # (b, S+T, H)
    else:
        name, cache = prefix
        prefix_mask = attention_mask.new_ones(len(rest_ids), cache.get_seq_length())  # (b, L)
        attention_mask = torch.cat([prefix_mask, attention_mask], dim=1)             # (b, L+S+T)
        cache.batch_repeat_interleave(len(rest_ids))                 # keys, values (b, heads, L, d) per layer
        hidden, _ = _forward(model, input_ids, attention_mask, use_cache=True, **{name: cache})  # (b, S+T, H)
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
def teacher_response_hidden(model, prompt_ids: list[list[int]], response_ids: list[list[int]], group_keys: list,
                            pad_id: int, micro_batch_size: int, min_prefix: int = MIN_SHARED_PREFIX) -> torch.Tensor:
    """The teacher's hidden states `(B, T, H)` that predict the response tokens, shared prefixes encoded once.

    prompt_ids: the teacher's prompts as `teacher_prompt_ids` gives them (rendered, tokenised, left-truncated);
    group_keys: one hashable per row, equal for rows with the same privileged text. Same values and layout
    as `response_hidden` on `teacher_inputs(...)` (T = the longest response, at least 1; columns past a
    row's response hold no meaning), for the full-vocabulary divergences. At least one row.
    """
    out = None
    for rows, hidden, _ in _teacher_micro_batches(model, prompt_ids, response_ids, group_keys, pad_id,
                                                  micro_batch_size, min_prefix):
        if out is None:
            out = hidden.new_zeros(len(prompt_ids), _response_width(response_ids), hidden.shape[-1])  # (B, T, H)
        out[rows, :hidden.shape[1]] = hidden
    return out


@torch.no_grad()
def cached_teacher_logprobs(model, prompt_ids: list[list[int]], response_ids: list[list[int]], group_keys: list,
                            pad_id: int, micro_batch_size: int, chunk_size: int | None = 128,
                            min_prefix: int = MIN_SHARED_PREFIX) -> torch.Tensor:
    """The teacher's log-probs `(B, T)` float32 of each row's response tokens, shared prefixes encoded once.

    Arguments as `teacher_response_hidden`; `chunk_size` bounds the head's memory (`logprobs_from_hidden`).
    Same values and layout as `token_logprobs` on `teacher_inputs(...)`: response in the T columns,
    right-padded (zeros past a row's response), only one micro-batch's hidden states alive at a time.
    """
    head = _unwrap(model).get_output_embeddings()
    device = next(model.parameters()).device
    out = torch.zeros(len(prompt_ids), _response_width(response_ids), device=device)   # (B, T)
    for rows, hidden, targets in _teacher_micro_batches(model, prompt_ids, response_ids, group_keys, pad_id,
                                                        micro_batch_size, min_prefix):
        logp, _ = logprobs_from_hidden(head, hidden, targets, chunk_size=chunk_size)   # (b, t)
        out[rows, :logp.shape[1]] = logp
    lengths = torch.tensor([len(response) for response in response_ids], device=device)  # (B,)
    return out * (torch.arange(out.shape[1], device=device) < lengths[:, None])         # (B, T)


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
    raise ValueError(f"divergence={kind!r} is unknown; choose reverse_kl, forward_kl or jsd")


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


def reverse_kl(head, student_hidden, teacher_hidden, **kwargs) -> torch.Tensor:
    """KL(student || teacher) per response token `(B, T)`; see `vocab_divergence`."""
    return vocab_divergence(head, student_hidden, teacher_hidden, "reverse_kl", **kwargs)


def forward_kl(head, student_hidden, teacher_hidden, **kwargs) -> torch.Tensor:
    """KL(teacher || student) per response token `(B, T)`; see `vocab_divergence`."""
    return vocab_divergence(head, student_hidden, teacher_hidden, "forward_kl", **kwargs)


def jsd(head, student_hidden, teacher_hidden, **kwargs) -> torch.Tensor:
    """Jensen-Shannon divergence per response token `(B, T)`; see `vocab_divergence`."""
    return vocab_divergence(head, student_hidden, teacher_hidden, "jsd", **kwargs)
