"""The embedded default model: tokenizer round-trips env text, SFT lowers the loss, the saved folder
loads like a hub model, the demonstrations differ only where they should, the build is deterministic,
and the shipped model matches its manifest and loads in float32."""

import json
import os
import shutil

import pytest

import embedded
from tools import warmstart
from config import ConfigError

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


def first_moves(turns):
    """(with skills?, went first to the usual place?) for each episode's first turn whose room has one."""
    from envs.alfworld.catalog import OBJECTS
    from envs.alfworld.explorer import kind, usual_kind

    types = {name.lower(): name for name in OBJECTS}
    moves = []
    for turn in turns:
        if "Now at step 1 of" not in turn["message"]:
            continue
        task = turn["message"].split("Your task is to: ")[1].split(".")[0]      # "put a mug in desk"
        obj, dest = task.split(" ")[2], task.split(" ")[-1]
        places = [a[len("go to "):] for a in turn["message"].split("Admissible actions: ")[1].split(", ")
                  if a.startswith("go to ")]
        usual = usual_kind(types[obj], {kind(p) for p in places}, dest)
        if usual is not None:
            moves.append((bool(turn["skill"]), kind(turn["action"][len("go to "):]) == usual))
    return moves


def test_demonstrations_follow_the_habit_only_with_skills_and_recover_from_slips():
    def demos(slips):
        return warmstart.demonstrations("alfworld", 80, slips=slips, skill_share=0.5, seed=1,
                                        env_kwargs={"room_size": "small", "prior_strength": 0.9,
                                                    "task_types": ["pick_and_place_simple"]},
                                        history_length=2, max_turns=15)
    clean, slipping = demos(0.0), demos(0.3)
    for turns in (clean, slipping):
        assert all(t["action"] in t["message"].split("Admissible actions: ")[1] for t in turns)
        assert 0 < sum(bool(t["skill"]) for t in turns) < len(turns)
        assert {t["context"] for t in turns if t["skill"]} == {"prefix", "in_prompt"}
        assert {t["context"] for t in turns if not t["skill"]} == {""}
        assert {t["think"].split(" ")[0] for t in turns} == {"find", "put"}
    # a slip is seen in the next prompt, never demonstrated: every label is the expert's, with and without skills
    after_slip = [t for t in slipping if "Observation: Nothing happens." in t["message"]]
    assert {bool(t["skill"]) for t in after_slip} == {True, False}
    assert not any("Observation: Nothing happens." in t["message"] for t in clean)
    # the first move: to the usual place with skills (the habit), anywhere without
    moves = first_moves(clean)
    with_skills = [usual for skill, usual in moves if skill]
    without = [usual for skill, usual in moves if not skill]
    assert sum(with_skills) == len(with_skills) > 10 and sum(without) < 0.5 * len(without), (with_skills, without)


def test_build_is_deterministic_and_its_manifest_catches_a_changed_file(tmp_path):
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    for out in (first, second):
        summary = warmstart.build_embedded_model("alfworld", out, **{**SMALL, "episodes": 8, "steps": 5})
        warmstart.write_manifest(out, "python warmstart.py --out x", summary)
    manifests = [json.load(open(os.path.join(out, embedded.MANIFEST))) for out in (first, second)]
    timed = "warmstart.json"                                         # holds the build time
    assert {k: v for k, v in manifests[0]["files"].items() if k != timed} == \
        {k: v for k, v in manifests[1]["files"].items() if k != timed}      # same bytes, file by file
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(manifests[0]["files"])
    assert manifests[0]["commit"] == warmstart.source_commit() != ""          # the code that built it
    assert embedded.manifest_problems(first) == []
    with open(os.path.join(first, "config.json"), "a") as handle:
        handle.write(" ")
    os.remove(os.path.join(first, "tokenizer.json"))
    assert embedded.manifest_problems(first) == ["config.json does not match its sha256", "tokenizer.json is missing"]


def test_shipped_model_matches_its_manifest_and_loads_in_float32():
    """What `python train.py` uses: the files in the repository, not a build."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = embedded.embedded_model_path("alfworld")
    assert folder == os.path.join(embedded.ROOT, "assets", "embedded-alfworld")
    manifest = json.load(open(os.path.join(folder, embedded.MANIFEST)))
    assert embedded.manifest_problems(folder) == []
    assert manifest["command"].startswith("python warmstart.py --out assets/embedded-alfworld")
    assert all(c in "0123456789abcdef" for c in manifest["commit"]) and len(manifest["commit"]) >= 7
    size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    assert size <= 5_000_000 and manifest["bytes"] <= size
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)      # as train.py loads it
    stored = load_file(os.path.join(folder, "model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    for name, parameter in model.named_parameters():
        assert parameter.dtype == torch.float32
        if name in stored:                      # fp16 -> fp32 is exact
            assert torch.equal(parameter.detach(), stored[name].float()), name
    assert sum(p.numel() for p in model.parameters()) == manifest["parameters"]
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Your task is to: put a mug in desk."}],
                                           tokenize=False, add_generation_prompt=True)
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])).logits
    assert torch.isfinite(logits).all()


def test_a_damaged_shipped_model_is_one_clear_error(tmp_path, monkeypatch):
    shutil.copytree(os.path.join(embedded.ROOT, "assets"), tmp_path / "assets")
    monkeypatch.setattr(embedded, "ROOT", str(tmp_path))
    assert embedded.embedded_model_path("alfworld") == str(tmp_path / "assets" / "embedded-alfworld")
    with open(tmp_path / "assets" / "embedded-alfworld" / "model.safetensors", "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    with pytest.raises(ConfigError, match="model.safetensors does not match.*python -m tools.warmstart --out"):
        embedded.embedded_model_path("alfworld")
    with pytest.raises(ConfigError, match="embedded exists for alfworld only"):
        embedded.embedded_model_path("search")


def test_from_pretrained_gives_back_the_trained_tokenizer(tmp_path):
    """AutoTokenizer rebuilds a qwen2 folder's pre-tokeniser; ours must be that one, or a model trained
    with the in-memory tokenizer would see other ids at rollout time."""
    from transformers import AutoTokenizer

    from tools.tinymodel import build_tokenizer, tiny_model
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
    from tools.tinymodel import build_tokenizer, tiny_model
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
