"""The teacher's shared privileged prefix encoded once (teacher_cache.cached_teacher_logprobs) gives the
numbers of the full re-encoding of every row (each teacher prompt tokenised whole + opsd.token_logprobs):
ragged prompts and responses, several skill texts, both teacher modes, left truncation, LoRA adapters,
and train.py's call site (experience.build_experience)."""

import random

import pytest
import torch
from accelerate import Accelerator

from config import TrainConfig, resolve
from conftest import CORPUS
from opsd import pack_batch, token_logprobs
from prompts import teacher_prompt_ids, teacher_prompt_text
from rollout import StepSample
from teacher_cache import cached_teacher_logprobs, prefix_micro_batches, shared_prefix_length
from tools.tinymodel import build_tokenizer
from experience import build_experience

SKILLS = ["Heat the apple in the microwave first, then go to the diningtable.",
          "Search for the founder first; answer with the year only.",
          "Click Buy Now only when the options match.",
          "Open the fridge before you look inside.",                    # two rows with the same message
          "Examine the mug under the desklamp."]                        # a single row
WORDS = ("go to fridge 1 open countertop apple mug knife cabinet diningtable search founder Veltrano Works "
         "click Buy Now red cotton t-shirt You arrive at On the you see a and").split()
MICRO = 3                                                            # groups split into several micro-batches


def _rows(vocab: int, n: int = 16, seed: int = 0):
    """(user messages, skill texts, responses): ragged, empty responses included, duplicated messages."""
    rng = random.Random(seed)
    messages = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 30))) for _ in range(n)]
    messages[5] = messages[2]                                        # same skills and text: truncated alike
    messages[n - 2] = messages[n - 3]            # a group of equal prompts: all but one token is shared
    skills = [SKILLS[i % 3] for i in range(n - 3)] + [SKILLS[3], SKILLS[3], SKILLS[4]]
    responses = [[rng.randrange(3, vocab) for _ in range(rng.choice([0, 1, 3, 7]))] for _ in range(n)]
    return messages, skills, responses


def _full_pass(model, tokenizer, messages, skills, responses, mode, max_prompt_length):
    """The plain teacher: every row's prompt tokenised whole and encoded from scratch, in one batch;
    (logp (B, T), response mask (B, T))."""
    prompts = [tokenizer(teacher_prompt_text(tokenizer, m, s, mode), add_special_tokens=False)["input_ids"]
               [-max_prompt_length:] for m, s in zip(messages, skills)]
    ids, attention_mask, response_mask = pack_batch(prompts, responses, tokenizer.pad_token_id)
    logp, _ = token_logprobs(model, ids, attention_mask, response_mask.shape[1], chunk_size=4)
    return logp, response_mask.bool()


def _truncating_length(tokenizer, messages, skills, mode):
    """A max_prompt_length that cuts about a third of the teacher prompts."""
    lengths = sorted(len(p) for p in teacher_prompt_ids(tokenizer, messages, skills, mode, 10**6))
    return lengths[2 * len(lengths) // 3]


def test_shared_prefix_length():
    assert shared_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 3
    assert shared_prefix_length([[5, 2], [1, 2]]) == 0
    assert shared_prefix_length([[7, 8]]) == 2


def test_prefix_micro_batches_plan():
    common = list(range(100, 140))                                   # 40 shared tokens
    prompts = [common + [1, 2], common, common + [1, 2], [9] + common, common + [3] * 5, [4] * 50]
    keys = ["a", "a", "a", "a", "b", "a"]           # row 3 and row 5 start elsewhere, row 4 has its own key
    plan = prefix_micro_batches(prompts, keys, micro_batch_size=3, min_prefix=16)
    assert plan == [([1, 0, 2], 39), ([3, 4, 5], 0)]  # one prompt token left to row 1; the rest plain, by length
    plan = prefix_micro_batches(prompts, keys, micro_batch_size=2, min_prefix=16)
    assert plan == [([1], 39), ([0, 2], 39), ([3], 0), ([4, 5], 0)]   # nearly equal parts, one prefix per group
    plan = prefix_micro_batches(prompts, keys, micro_batch_size=3, min_prefix=42)
    assert plan == [([1, 3, 0], 0), ([2, 4, 5], 0)]  # rows 0 and 2 share 41 < 42 usable tokens: all plain


@pytest.mark.parametrize("template", ["chatml", "plain text"])
def test_teacher_prompt_ids_equal_full_tokenisation(tokenizer, template):
    if template == "plain text":   # no special token to cut at: joining "\n\n" + "\nUser" would merge newlines
        tokenizer = build_tokenizer(CORPUS * 20 + ["a\n\n\nb"] * 50, vocab_size=512)
        tokenizer.chat_template = "{{ '\\nUser: ' + messages[0]['content'] + '\\nAssistant:' }}"
    messages, skills, _ = _rows(len(tokenizer))
    messages[0], skills[1] = "  leading spaces\n\n", "ends in spaces   "                 # awkward boundaries
    for mode in ("prefix", "in_prompt"):
        full = [tokenizer(teacher_prompt_text(tokenizer, m, s, mode), add_special_tokens=False)["input_ids"]
                for m, s in zip(messages, skills)]
        assert teacher_prompt_ids(tokenizer, messages, skills, mode, 10**6) == full
        assert teacher_prompt_ids(tokenizer, messages, skills, mode, 40) == [ids[-40:] for ids in full]
    assert teacher_prompt_ids(tokenizer, [], [], "prefix") == []


@pytest.mark.parametrize("mode", ["prefix", "in_prompt"])
@pytest.mark.parametrize("truncate", [False, True])
def test_cached_teacher_logprobs_equal_full_pass(tiny_model_factory, tokenizer, mode, truncate):
    model = tiny_model_factory(seed=11)
    messages, skills, responses = _rows(len(tokenizer))
    max_len = _truncating_length(tokenizer, messages, skills, mode) if truncate else 4096
    prompts = teacher_prompt_ids(tokenizer, messages, skills, mode, max_len)
    full_lengths = [len(p) for p in teacher_prompt_ids(tokenizer, messages, skills, mode, 10**6)]
    assert any(n > max_len for n in full_lengths) == truncate and not all(n > max_len for n in full_lengths)
    plan = prefix_micro_batches(prompts, skills, MICRO)
    assert sum(shared > 0 for _, shared in plan) >= 3 and any(shared == 0 for _, shared in plan)
    if truncate:                                  # the duplicated, truncated pair shares its cut prefix
        assert any(shared > 0 and {2, 5} <= set(rows) for rows, shared in plan)
    cached = cached_teacher_logprobs(model, prompts, responses, skills, tokenizer.pad_token_id, MICRO, chunk_size=2)
    full, mask = _full_pass(model, tokenizer, messages, skills, responses, mode, max_len)
    assert cached.shape == full.shape and cached.dtype == torch.float32
    torch.testing.assert_close(cached[mask], full[mask], atol=1e-5, rtol=0)
    assert (cached[~mask] == 0).all()


def test_lora_adapters_equal_full_pass(tiny_model_factory, tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model_factory(seed=13), LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:                                     # zero at init: LoRA would change nothing
                parameter.normal_(0.0, 0.3)
    model.eval()
    messages, skills, responses = _rows(len(tokenizer), seed=2)
    max_len = _truncating_length(tokenizer, messages, skills, "prefix")
    prompts = teacher_prompt_ids(tokenizer, messages, skills, "prefix", max_len)
    cached = cached_teacher_logprobs(model, prompts, responses, skills, tokenizer.pad_token_id, MICRO)
    full, mask = _full_pass(model, tokenizer, messages, skills, responses, "prefix", max_len)
    torch.testing.assert_close(cached[mask], full[mask], atol=1e-5, rtol=0)
    with model.disable_adapter():
        base, _ = _full_pass(model, tokenizer, messages, skills, responses, "prefix", max_len)
    assert (base[mask] - full[mask]).abs().max() > 1e-2                # the adapters do change the teacher


def test_build_experience_same_with_and_without_cache(tiny_model_factory, tokenizer):
    """train.py's call site: the teacher log-probs of the experience, cache on and off, under autocast."""
    model = tiny_model_factory(seed=14)
    use_cache, training = model.config.use_cache, model.training
    messages, skills, responses = _rows(len(tokenizer), seed=3)
    samples = [StepSample(prompt_ids=[5, 6], response_ids=r, user_message=m, group_id=0, traj_id=i, turn=0,
                          valid=True, task_type="t", skill_text=s, skill_category="c")
               for i, (m, s, r) in enumerate(zip(messages, skills, responses))]
    out = {}
    for cache in (True, False):
        cfg = resolve(TrainConfig(micro_batch_size=MICRO, logprob_chunk_size=2, teacher_prefix_cache=cache, kl_coef=0.0))
        with Accelerator(cpu=True).autocast():                       # as train.py calls it
            experience, _ = build_experience(model, None, tokenizer, samples, torch.zeros(len(samples)), cfg)
        out[cache] = experience.teacher_logp
    assert out[True].shape == out[False].shape
    torch.testing.assert_close(out[True], out[False], atol=1e-5, rtol=0)
    assert (out[True] != 0).any()
    assert model.config.use_cache == use_cache and model.training == training   # no model state flipped
