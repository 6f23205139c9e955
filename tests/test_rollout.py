"""rollout.py end to end: a tiny random Qwen2 model on every built-in env, a scripted expert that must
win every task through the real loop, and malformed generations that must become invalid actions."""

import pytest
import torch

from envs import ENV_NAMES, make_env
from prompts import render_chat
from generation import cut_response
from rollout import RolloutConfig, evaluate, rollout


class RecordingModel(torch.nn.Module):
    """Wraps a real model and records every generate call's prompts and generated tokens."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []
        self.generation_config = model.generation_config

    def generate(self, input_ids, attention_mask, **kwargs):
        sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        self.calls.append((input_ids.clone(), sequences[:, input_ids.shape[1]:].clone()))
        return sequences


class ScriptedModel(torch.nn.Module):
    """A stand-in with the `generate` interface that answers each env's expert plan, row by row.

    Row j of call k is the j-th env still playing (rollout's documented order), so a bookkeeping bug
    in rollout.py gives the wrong env the wrong action and the test fails.
    """

    def __init__(self, tokenizer, plans, responses=None):
        super().__init__()
        self.tokenizer, self.plans, self.call = tokenizer, plans, 0
        self.responses = responses
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = type("GC", (), {"eos_token_id": tokenizer.eos_token_id})()
        self.rows_per_call = []

    def generate(self, input_ids, attention_mask, **kwargs):
        active = [i for i, plan in enumerate(self.plans) if len(plan) > self.call]
        assert len(active) == input_ids.shape[0], "rollout generated for a finished env"
        self.rows_per_call.append(len(active))
        texts = [self.responses(i, self.call) if self.responses else
                 f"<think>step {self.call}</think><action>{self.plans[i][self.call]}</action>" for i in active]
        self.call += 1
        outs = [self.tokenizer(t, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id] for t in texts]
        width = max(len(o) for o in outs)
        out = torch.full((len(outs), width), self.tokenizer.pad_token_id)
        for row, ids in enumerate(outs):
            out[row, :len(ids)] = torch.tensor(ids)
        return torch.cat([input_ids, out], dim=1)


def _envs(name, n):
    return [make_env(name) for _ in range(n)]


def _train_split(name):
    return "train"


@pytest.mark.parametrize("name", ENV_NAMES)
def test_random_model_rollout_records_exact_tokens(name, tokenizer, tiny_model_factory):
    torch.manual_seed(0)
    model = RecordingModel(tiny_model_factory(seed=7))
    envs = _envs(name, 4)
    config = RolloutConfig(max_turns=2, max_new_tokens=6, max_prompt_length=100_000)
    samples, metrics = rollout(model, tokenizer, envs, [11, 11, 12, 12], [0, 0, 1, 1], config)
    assert len(samples) >= 4 and metrics["tokens"] == sum(len(s.response_ids) for s in samples)
    generated = [row.tolist() for _, out in model.calls for row in out]
    for sample in samples:
        assert any(row[:len(sample.response_ids)] == sample.response_ids for row in generated)
        assert 1 <= len(sample.response_ids) <= 6
        assert tokenizer.decode(sample.prompt_ids) == render_chat(tokenizer, sample.user_message)
        assert sample.score == pytest.approx(0.0 - (0.0 if sample.valid else config.invalid_penalty))
    # the two members of each group got the same task: identical first prompts
    first = {s.traj_id: s.user_message for s in samples if s.turn == 0}
    assert first[0] == first[1] and first[2] == first[3]
    prompts_per_call = [inputs.shape[0] for inputs, _ in model.calls]
    assert prompts_per_call[0] == 4 and all(c <= 4 for c in prompts_per_call)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_scripted_expert_wins_every_task(name, tokenizer):
    envs = _envs(name, 6)
    seeds = [3, 3, 5, 5, 8, 8]
    plans = []
    for env, seed in zip(envs, seeds):
        env.reset(seed, split="train")
        plans.append(env.privileged()["expert_plan"])
    model = ScriptedModel(tokenizer, plans)
    config = RolloutConfig(max_new_tokens=64, max_prompt_length=100_000)
    samples, metrics = rollout(model, tokenizer, envs, seeds, [0, 0, 1, 1, 2, 2], config)
    assert metrics["success"] == 1.0 and metrics["invalid_rate"] == 0.0
    assert len(samples) == sum(len(p) for p in plans)
    assert model.rows_per_call[0] == 6 and model.rows_per_call == sorted(model.rows_per_call, reverse=True)
    win_reward = 1.0 if name == "search" else 10.0
    for sample in samples:
        assert sample.valid and sample.score == pytest.approx(win_reward)
        # cut right after the closing tag: the EOS the stub appended after it is not part of the sample
        assert tokenizer.decode(sample.response_ids).endswith(("</action>", "</search>", "</answer>"))
        assert sample.skill_category


def test_truncated_prompts_are_counted(tokenizer):
    """A prompt over max_prompt_length is left-truncated (the released code raises instead): every such
    prompt is flagged on its sample and counted, up to iteration_metrics' rollout/truncated_prompts."""
    from accelerate import Accelerator

    from metrics import iteration_metrics

    counts = {}
    for limit in (100_000, 60):
        envs = _envs("alfworld", 2)
        plans = []
        for env in envs:
            env.reset(3, split="train")
            plans.append(env.privileged()["expert_plan"][:2])
        config = RolloutConfig(max_turns=2, max_new_tokens=64, max_prompt_length=limit)
        samples, metrics = rollout(ScriptedModel(tokenizer, plans), tokenizer, envs, [3, 3], [0, 0], config)
        full = [len(tokenizer(render_chat(tokenizer, s.user_message), add_special_tokens=False)["input_ids"])
                for s in samples]
        assert [s.prompt_truncated for s in samples] == [n > limit for n in full]
        assert all(len(s.prompt_ids) == min(n, limit) for s, n in zip(samples, full))
        counts[limit] = iteration_metrics(Accelerator(cpu=True), metrics, len(samples), {})["rollout/truncated_prompts"]
    assert counts == {100_000: 0, 60: 4}


MALFORMED = ["", "no tags at all", "<think>only thinking</think>", "<action>go</action>", "\u4f60\u597d" * 50,
             "<think>x</think><action>" + "a" * 5000, "<think><action>nested</think></action>", "\x00\x07\x1b[31m"]


@pytest.mark.parametrize("name", ENV_NAMES)
def test_malformed_generations_are_invalid_and_penalised(name, tokenizer):
    envs = _envs(name, 2)
    plans = [["x"] * 3, ["x"] * 3]
    model = ScriptedModel(tokenizer, plans, responses=lambda i, k: MALFORMED[(3 * i + k) % len(MALFORMED)])
    config = RolloutConfig(max_turns=3, max_new_tokens=64, invalid_penalty=0.25, max_prompt_length=100_000)
    samples, metrics = rollout(model, tokenizer, envs, [1, 1], [0, 0], config)
    assert len(samples) == 6 and metrics["invalid_rate"] == 1.0 and metrics["success"] == 0.0
    for sample in samples:
        assert not sample.valid and sample.score == pytest.approx(-0.25)


def test_cut_response_at_eos_and_closing_tag(tokenizer):
    eos = tokenizer.eos_token_id
    ids = tokenizer("<think>a</think><action>go to fridge 1</action> trailing", add_special_tokens=False)["input_ids"]
    cut = cut_response(ids, tokenizer, {eos}, ("</action>",))
    assert tokenizer.decode(cut).endswith("</action>") or tokenizer.decode(cut).rstrip().endswith("</action>")
    assert "trailing" not in tokenizer.decode(cut)
    assert cut_response([5, 6, eos, 7], tokenizer, {eos}, ("</action>",)) == [5, 6, eos]
    assert cut_response([5, 6, 7], tokenizer, {eos}, ("</action>",)) == [5, 6, 7]


def test_evaluate_uses_a_fixed_panel(tokenizer, tiny_model_factory):
    model = tiny_model_factory(seed=3)
    config = RolloutConfig(max_turns=1, max_new_tokens=4, temperature=0.0, split="test", max_prompt_length=100_000)
    envs = _envs("search", 3)
    torch.manual_seed(0)
    a = evaluate(model, tokenizer, envs, [0, 1, 2], config)
    first_tasks = [env.privileged()["gold_answers"] for env in envs]
    torch.manual_seed(1)
    b = evaluate(model, tokenizer, envs, [0, 1, 2], config)
    assert [env.privileged()["gold_answers"] for env in envs] == first_tasks
    assert a["success"] == b["success"] and a["tokens"] == b["tokens"]      # greedy on the same panel


@pytest.mark.parametrize("mode", ["prefix", "in_prompt"])
def test_the_teacher_acts_on_its_own_prompt(tokenizer, tiny_model_factory, mode):
    """RolloutConfig.teacher_context: every prompt is the teacher's exact scoring prompt (skills per mode)."""
    from prompts import teacher_prompt_text

    envs = [make_env("alfworld", room_size="small") for _ in range(2)]
    config = RolloutConfig(max_turns=2, max_new_tokens=4, max_prompt_length=4096, teacher_context=mode)
    samples, _ = rollout(tiny_model_factory(seed=0), tokenizer, envs, [1, 2], [0, 1], config,
                         lambda env, info: ("Mugs are usually in cabinets.", "pick_and_place"))
    assert samples
    for sample in samples:
        expected = tokenizer(teacher_prompt_text(tokenizer, sample.user_message, "Mugs are usually in cabinets.", mode),
                             add_special_tokens=False)["input_ids"]
        assert sample.prompt_ids == expected
        assert "Mugs are usually" not in sample.user_message       # the student's message stays the student's
