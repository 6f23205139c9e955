"""One batched `generate` call per turn that stops each row at its closing action tag, and which tokens of a
response are the action.

Sampling stops at the first closed action tag (`</action>`, or `</search>` / `</answer>` on Search-QA) or
EOS: a character automaton over the decoded text (`_tag_automaton`, `StopOnTags`) ends each row without
decoding the whole batch every step, and `cut_response` trims the tokens after the tag. With a static KV
cache (`--fast_decode`) prompt lengths are bucketed so the compiled decode step is reused.
"""

from __future__ import annotations

import torch
from transformers import CompileConfig, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from opsd import left_pad

STOP_TAGS = {"alfworld": ("</action>",), "webshop": ("</action>",), "search": ("</search>", "</answer>")}
_STOP_TABLES: dict = {}                          # the stop automata built so far, as tensors (stop_table)
_TOKEN_TEXTS: dict[int, dict[int, str]] = {}     # tokenizer -> token id -> its decoded text


def _tag_automaton(tags: tuple[str, ...]):
    """A character automaton that finds any of `tags` in a stream of text: (step, accept state).

    States are the prefixes of the tags (0 is the empty one); a character moves to the longest suffix of
    the text so far that is still a tag prefix, and reaching a whole tag moves to the absorbing accept state.
    """
    prefixes = sorted({""} | {tag[:k] for tag in tags for k in range(len(tag) + 1)}, key=lambda p: (len(p), p))
    index, accept = {p: i for i, p in enumerate(prefixes)}, len(prefixes)
    moves = {}
    for prefix in prefixes:
        for char in set("".join(tags)):
            text = prefix + char
            if any(text.endswith(tag) for tag in tags):
                moves[index[prefix], char] = accept
                continue
            while text not in index:
                text = text[1:]
            moves[index[prefix], char] = index[text]

    def step(state: int, text: str) -> int:
        for char in text:
            if state == accept:
                break
            state = moves.get((state, char), 0)
        return state

    return step, accept


def stop_table(tokenizer, tags: tuple[str, ...], eos_ids: set[int], vocab_size: int,
               device) -> tuple[torch.Tensor, int]:
    """Next automaton state for every (state, token id) `(S, V+1)` and the accept state, cached per tokenizer.

    Each token id's own text (special tokens decode to nothing, as in `cut_response`) is run from every
    state; an EOS id leads straight to accept. Column V stands for any id the tokenizer does not know.
    """
    key = (id(tokenizer), tags, tuple(sorted(eos_ids)), vocab_size, str(device))
    if key not in _STOP_TABLES:
        step, accept = _tag_automaton(tags)
        alphabet = set("".join(tags))
        known = min(vocab_size, len(tokenizer))
        texts = tokenizer.batch_decode([[i] for i in range(known)], skip_special_tokens=True)
        columns = []
        for text in texts:
            outside = [i for i, char in enumerate(text) if char not in alphabet]
            if not outside:
                columns.append([step(state, text) for state in range(accept)])
                continue
            # past the first character that is in no tag every state is back at 0: only the head differs
            head, tail = text[:outside[0]], step(0, text[outside[0] + 1:])
            columns.append([accept if step(state, head) == accept else tail for state in range(accept)])
        table = torch.arange(accept + 1)[:, None].repeat(1, vocab_size + 1)   # (S, V+1) no text: state kept
        table[:accept, :len(texts)] = torch.tensor(columns, dtype=torch.long).T
        table[:, sorted(i for i in eos_ids if i < vocab_size)] = accept
        _STOP_TABLES[key] = (tokenizer, table.to(device), accept)
    _, table, accept = _STOP_TABLES[key]
    return table, accept


class StopOnTags(StoppingCriteria):
    """Per-row stop once the generated text closes an action tag or an EOS token is sampled, on the device.

    The text test runs as a table lookup per row and step (`stop_table`): no decoding and no host
    synchronisation per token, unlike decoding the tail every step or `stop_strings`. Called once per
    generated token, as `generate` does; a fresh instance per generate call. Rows from `live_rows` on
    (bucket padding) count as finished from their first token.
    """

    def __init__(self, tokenizer, tags: tuple[str, ...], eos_ids: set[int], vocab_size: int, device,
                 live_rows: int | None = None):
        self.table, self.accept = stop_table(tokenizer, tags, eos_ids, vocab_size, device)
        self.live_rows, self.state = live_rows, None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        tokens = input_ids[:, -1].clamp(max=self.table.shape[1] - 1)       # (B,)
        if self.state is None:
            self.state = torch.zeros_like(tokens)                           # (B,)
            if self.live_rows is not None:
                self.state[self.live_rows:] = self.accept
        self.state = self.table[self.state, tokens]                         # (B,)
        return self.state == self.accept


def cut_response(ids: list[int], tokenizer, eos_ids: set[int], tags: tuple[str, ...]) -> list[int]:
    """The sampled tokens up to and including the first EOS or the token that closes an action tag."""
    for position, token in enumerate(ids):
        if token in eos_ids:
            ids = ids[:position + 1]
            break
    if not any(tag in tokenizer.decode(ids, skip_special_tokens=True) for tag in tags):
        return ids
    low, high = 1, len(ids)                                   # smallest prefix whose text holds a tag
    while low < high:
        mid = (low + high) // 2
        if any(tag in tokenizer.decode(ids[:mid], skip_special_tokens=True) for tag in tags):
            high = mid
        else:
            low = mid + 1
    return ids[:low]


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every token id that ends a turn: the tokenizer's EOS and the model's generation EOS ids."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, (list, tuple)) else [configured] if configured is not None else [])
    return ids | {tokenizer.eos_token_id}


def decode_compile_config(device: torch.device) -> CompileConfig:
    """HF's compile settings (CUDA graphs on GPU) with dynamic shapes from the first call, so batch and
    cache sizes never recompile (the first compile is the only one); on CPU generate compiles only when told."""
    config = CompileConfig(dynamic=True)
    config._compile_all_devices = device.type == "cpu"
    return config


def bucket_rows(rows: int, cap: int) -> int:
    """Rows padded up to a power of two, at least 2 (torch.compile specialises size 1) and at most `cap`,
    so a shrinking batch replays a few recorded CUDA graphs instead of recording one per turn."""
    return min(cap, max(2, 1 << max(0, rows - 1).bit_length()))


def generate_responses(model, tokenizer, prompts: list[list[int]], config,   # a rollout.RolloutConfig
                       tags: tuple[str, ...]) -> list[list[int]]:
    """Sample one response per prompt (token ids exactly as sampled, cut at the action's end): `tags` are the
    closing tags to stop at; with none, each row samples to EOS or the token budget (the released rule).

    Fast path (`cache_implementation="static"`): HF's static KV cache with its compiled decode step;
    prompt widths are bucketed by `pad_to_multiple_of` and, when compiled, the rows to a power of two
    (extra rows repeat the first prompt and are dropped): the step compiles once, with dynamic shapes,
    and a run replays a handful of shapes instead of one per turn. Stopping at the closed tag is a
    device-side table lookup (`StopOnTags`), so the only host sync per token left is generate's own
    "all rows finished?" test.
    """
    eos_ids = eos_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    greedy = config.temperature <= 0
    device = next(model.parameters()).device
    static = config.cache_implementation == "static"
    compiled = static and (device.type != "cpu" if config.compile_decode is None else config.compile_decode)
    # Every sampling field is set explicitly: a field left unset is filled from the checkpoint's own
    # generation_config (Qwen ships top_k=20, top_p=0.8, repetition_penalty=1.05), which would change
    # the policy being trained. top_k=0 turns top-k off.
    generation_config = GenerationConfig(
        max_new_tokens=config.max_new_tokens, do_sample=not greedy, temperature=1.0 if greedy else config.temperature,
        top_p=1.0 if greedy else config.top_p, top_k=0, repetition_penalty=1.0,
        pad_token_id=pad_id, eos_token_id=sorted(eos_ids), cache_implementation=config.cache_implementation,
        compile_config=decode_compile_config(device) if compiled else None, disable_compile=static and not compiled,
    )
    vocab_size = max(len(tokenizer), getattr(getattr(model, "config", None), "vocab_size", 0) or 0)
    order = list(range(len(prompts)))
    if config.sort_by_length:
        order.sort(key=lambda index: len(prompts[index]))
    size = config.generation_batch_size or max(1, len(prompts))
    responses: list[list[int]] = [[] for _ in prompts]
    for begin in range(0, len(order), size):
        rows = order[begin:begin + size]
        slots = rows + rows[:1] * (bucket_rows(len(rows), config.generation_batch_size or 1 << 30) - len(rows)
                                   if compiled else 0)
        width = max(len(prompts[row]) for row in rows)
        if config.pad_to_multiple_of:
            width = -(-width // config.pad_to_multiple_of) * config.pad_to_multiple_of
        input_ids, attention_mask = left_pad([prompts[row] for row in slots], pad_id, width)  # (b, P) each
        stop = StoppingCriteriaList([StopOnTags(tokenizer, tags, eos_ids, vocab_size, device, len(rows))])
        # synced_gpus off: with sharded weights transformers would keep every process generating until all
        # are done, but this process's own episodes decide how often it calls generate; the weights are
        # gathered beforehand instead (sharded.whole_weights), so each generate here is local.
        sequences = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                   generation_config=generation_config, stopping_criteria=stop,
                                   synced_gpus=False)                                       # (b, P+n)
        generated = sequences[:len(rows), width:].tolist()
        for slot, row in enumerate(rows):
            responses[row] = cut_response(generated[slot], tokenizer, eos_ids, tags)
    return responses


def action_token_mask(tokenizer, response_ids: list[int], tags: tuple[str, ...]) -> list[int]:
    """1 for each response token whose text overlaps the content of an action block (between `<x>` and
    its closing `</x>`, for each closing tag in `tags`), else 0: which tokens choose the action, as
    opposed to reasoning and format. Token texts are decoded one by one, so a character split across
    tokens counts for the token it ends in."""
    texts = _TOKEN_TEXTS.setdefault(id(tokenizer), {})
    pieces = [texts[token] if token in texts else texts.setdefault(token, tokenizer.decode([token]))
              for token in response_ids]
    ends = [len(piece) for piece in pieces]
    for k in range(1, len(ends)):
        ends[k] += ends[k - 1]
    text, spans = "".join(pieces), []
    for closing in tags:
        opening = closing.replace("</", "<", 1)
        start = text.find(opening)
        while start != -1:
            end = text.find(closing, start + len(opening))
            if end == -1:
                break
            spans.append((start + len(opening), end))
            start = text.find(opening, end + len(closing))
    mask = []
    for k, end in enumerate(ends):
        begin = ends[k - 1] if k else 0
        mask.append(int(any(begin < span_end and end > span_start for span_start, span_end in spans)))
    return mask
