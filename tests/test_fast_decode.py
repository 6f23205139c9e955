"""The fast decode path of generation.generate_responses: the device-side tag stop agrees with decoding the
text, the static cache samples what the dynamic cache samples, and row buckets keep real rows intact."""

import random

import pytest
import torch
from transformers import CompileConfig

import generation
from generation import StopOnTags, bucket_rows, generate_responses
from rollout import RolloutConfig


def _stops_by_text(tokenizer, ids, tags, eos_ids):
    """Reference: after each token, is there an EOS so far or a tag in the decoded text?"""
    out = []
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end], skip_special_tokens=True)
        out.append(any(t in eos_ids for t in ids[:end]) or any(tag in text for tag in tags))
    return out


@pytest.mark.parametrize("tags", [("</action>",), ("</search>", "</answer>")])
def test_stop_on_tags_matches_decoded_text(tokenizer, tags):
    rng = random.Random(0)
    pieces = ["</", "action", ">", "</action>", "search", "answer", "<", "/", "a", "ction", " go", "\u4f60", "s>"]
    pieces_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in pieces]
    eos = {tokenizer.eos_token_id}
    rows = []
    for _ in range(40):
        choices = pieces_ids + [[rng.randrange(len(tokenizer))]]
        ids = [i for _ in range(rng.randint(1, 12)) for i in rng.choice(choices)]
        rows.append(ids[:16])
    width = max(len(r) for r in rows)
    batch = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])   # (B, W)
    stop = StopOnTags(tokenizer, tags, eos, len(tokenizer) + 7, torch.device("cpu"))
    flags = torch.stack([stop(batch[:, :end + 1], None) for end in range(width)], dim=1)   # (B, W)
    for row, ids in enumerate(rows):
        assert flags[row, :len(ids)].tolist() == _stops_by_text(tokenizer, ids, tags, eos), tokenizer.decode(ids)


def test_stop_on_tags_unknown_ids_and_eos(tokenizer):
    eos = tokenizer.eos_token_id
    stop = StopOnTags(tokenizer, ("</action>",), {eos}, len(tokenizer) + 3, torch.device("cpu"))
    first = tokenizer("</act", add_special_tokens=False)["input_ids"]
    rest = tokenizer("ion>", add_special_tokens=False)["input_ids"]
    ids = [first + [len(tokenizer) + 50] + rest, [5, eos, 6] + [7] * (len(first) + len(rest) - 2)]
    batch = torch.tensor(ids)
    flags = [stop(batch[:, :end + 1], None).tolist() for end in range(batch.shape[1])]
    assert flags[-1] == [True, True] and not flags[-2][0] and flags[1][1]   # an unknown id has no text


def test_bucket_rows():
    assert [bucket_rows(n, 64) for n in (1, 2, 3, 5, 33, 64)] == [2, 2, 4, 8, 64, 64]
    assert bucket_rows(40, 48) == 48 and bucket_rows(1, 1) == 1


def test_static_cache_samples_what_dynamic_samples(tokenizer, tiny_model_factory):
    model = tiny_model_factory(seed=3)
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16, 17]]
    outs = []
    for config in (RolloutConfig(max_new_tokens=8, temperature=0.0),
                   RolloutConfig(max_new_tokens=8, temperature=0.0, cache_implementation="static",
                                 pad_to_multiple_of=4)):
        outs.append(generate_responses(model, tokenizer, prompts, config, ("</action>",)))
    assert outs[0] == outs[1] and all(1 <= len(r) <= 8 for r in outs[0])


def test_compiled_path_pads_rows_and_keeps_results(tokenizer, tiny_model_factory, monkeypatch):
    """The compiled path (eager backend: tracing without code generation, fast on CPU) pads 3 rows to 4,
    finishes the padding row at once, and returns what the dynamic cache returns for the real rows."""
    def eager_config(device):
        config = CompileConfig(dynamic=True, backend="eager")
        config._compile_all_devices = True
        return config

    monkeypatch.setattr(generation, "decode_compile_config", eager_config)
    model = tiny_model_factory(seed=5)
    shapes = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: shapes.append(kw["input_ids"].shape) or generate(**kw))
    prompts = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16, 17]]
    fast = RolloutConfig(max_new_tokens=6, temperature=0.0, cache_implementation="static", pad_to_multiple_of=8,
                         compile_decode=True)
    plain = generate_responses(model, tokenizer, prompts, RolloutConfig(max_new_tokens=6, temperature=0.0),
                               ("</action>",))
    from torch._dynamo.utils import counters
    graphs = counters["stats"]["unique_graphs"]
    assert generate_responses(model, tokenizer, prompts, fast, ("</action>",)) == plain
    assert shapes[-1] == (4, 8) and counters["stats"]["unique_graphs"] > graphs


def test_padding_rows_finish_at_once(tokenizer):
    stop = StopOnTags(tokenizer, ("</action>",), {tokenizer.eos_token_id}, len(tokenizer), torch.device("cpu"), 2)
    assert stop(torch.tensor([[5, 6], [5, 6], [5, 6], [5, 6]]), None).tolist() == [False, False, True, True]
