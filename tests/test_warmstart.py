"""The embedded default model: tokenizer round-trips env text, SFT lowers the loss, the saved folder
loads like a hub model, and the cache is built once."""

import json
import os

import pytest

import warmstart

SMALL = dict(episodes=24, steps=100, shape="tiny", vocab_size=600, batch_size=8)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("embedded"))
    summary = warmstart.build_embedded_model("alfworld", out, **SMALL)
    return out, summary


def test_tokenizer_round_trips_environment_text(built):
    from transformers import AutoTokenizer

    from envs import make_env
    tokenizer = AutoTokenizer.from_pretrained(built[0])
    env = make_env("alfworld", room_size="full")         # a room size the tokenizer never saw
    observation, info = env.reset(seed=3, split="valid_unseen")
    texts = [env.render_prompt(observation, [], info, 2), "<think>ok</think><action>go to fridge 1</action>",
             "unseen: Ünïcødé \t\n 中文 <action>", ""]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n")


def test_supervised_loss_decreases(built):
    losses = [loss for _, loss in built[1]["losses"]]
    assert len(losses) >= 2 and all(map(lambda x: x == x, losses))
    assert losses[-1] < 0.5 * losses[0], losses


def test_saved_folder_loads_with_from_pretrained(built):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(built[0])
    tokenizer = AutoTokenizer.from_pretrained(built[0])
    assert model.config.model_type == "qwen2" and model.config.vocab_size >= len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token_id is not None
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer("<action>look</action>")["input_ids"]])).logits
    assert torch.isfinite(logits).all()
    assert json.load(open(os.path.join(built[0], "warmstart.json")))["version"] == warmstart.VERSION


def test_demonstrations_are_admissible_and_noisy_only_without_skills():
    def labels(noise):
        return warmstart.demonstrations("alfworld", 40, noise=noise, skill_share=0.5, seed=1,
                                        env_kwargs={"room_size": "small"}, history_length=2, max_turns=15)
    clean, noisy = labels(0.0), labels(1.0)
    for turns in (clean, noisy):
        assert all(t["action"] in t["message"].split("Admissible actions: ")[1] for t in turns)
        assert 0 < sum(bool(t["skill"]) for t in turns) < len(turns)
    # same seed, same episodes: turns with skills keep the expert's labels, the others are resampled
    assert [t["action"] for t in clean if t["skill"]] == [t["action"] for t in noisy if t["skill"]]
    assert [t["action"] for t in clean if not t["skill"]] != [t["action"] for t in noisy if not t["skill"]]


def test_embedded_path_builds_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SDAR_CACHE", str(tmp_path))
    monkeypatch.setitem(warmstart.RECIPES, "alfworld", {**warmstart.RECIPES["alfworld"], **SMALL, "steps": 2})
    first = warmstart.embedded_model_path("alfworld")
    stamp = os.path.getmtime(os.path.join(first, "warmstart.json"))
    assert warmstart.embedded_model_path("alfworld") == first
    assert os.path.getmtime(os.path.join(first, "warmstart.json")) == stamp
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    with pytest.raises(ValueError, match="embedded"):
        warmstart.embedded_model_path("search")


def test_from_pretrained_gives_back_the_trained_tokenizer(tmp_path):
    """AutoTokenizer rebuilds a qwen2 folder's pre-tokeniser; ours must be that one, or a model trained
    with the in-memory tokenizer would see other ids at rollout time."""
    from transformers import AutoTokenizer

    from tinymodel import build_tokenizer, tiny_model
    text = "You arrive at fridge 12. <action>take egg 3 from fridge 12</action> Ünïcødé"
    tokenizer = build_tokenizer([text] * 30, vocab_size=400, extra_tokens=("<action>", "</action>"))
    tiny_model(tokenizer).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    for sample in (text, "go to sinkbasin 1, open drawer 10", "中文 \t\n<action>"):
        assert loaded(sample)["input_ids"] == tokenizer(sample)["input_ids"]


@pytest.mark.parametrize("prompt_weight", [0.0, 0.5])
def test_sft_loss_matches_a_hand_computation_on_ragged_rows(prompt_weight):
    import torch

    from opsd import pack_batch
    from tinymodel import build_tokenizer, tiny_model
    tokenizer = build_tokenizer(["go to fridge 1, take egg 2 from fridge 1"] * 20, vocab_size=300)
    model = tiny_model(tokenizer, seed=0).double()
    prompts, responses = [[5, 6, 7, 8, 9], [10, 11]], [[12, 13, 14], [15]]
    ids, attn, mask = pack_batch(prompts, responses, pad_id=0)
    loss, response_loss = warmstart.sft_loss(model, ids, attn, mask, prompt_weight)
    prompt_terms, response_terms = [], []
    for prompt, response in zip(prompts, responses):     # each row alone, no padding
        row = torch.tensor([prompt + response])
        logp = torch.log_softmax(model(row).logits[0, :-1], -1).gather(-1, row[0, 1:, None])[:, 0]
        prompt_terms += (-logp[:len(prompt) - 1]).tolist()
        response_terms += (-logp[len(prompt) - 1:]).tolist()
    expected_response = sum(response_terms) / len(response_terms)            # 4 response tokens
    expected = expected_response + prompt_weight * sum(prompt_terms) / len(prompt_terms)  # 5 prompt targets
    assert response_loss.item() == pytest.approx(expected_response, rel=1e-6)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
