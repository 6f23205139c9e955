"""The switches that reproduce the released code (`--parity released` sets them all): the per-micro-batch
loss weighting, the stop rule, the thinking mode of chat templates, RLSD's decay, the in-prompt placement
of the skills, and what the preset fills in."""

import json

import pytest
import torch

from cli import parse_config


def _experience(tokenizer, response_lengths):
    """Equal 3-token prompts, responses of the given lengths, advantages 1, -1, 2, -2, ...; old = live
    (computed by the caller), so each token's loss is -A and its gradient -A d logp."""
    from opsd import pack_batch
    from experience import Experience

    prompts = [[5, 6, 7]] * len(response_lengths)
    responses = [[10 + k for k in range(n)] for n in response_lengths]
    input_ids, attention_mask, response_mask = pack_batch(prompts, responses, tokenizer.pad_token_id)
    advantages = torch.tensor([(1.0 if i % 2 == 0 else -1.0) * (i // 2 + 1) for i in range(len(prompts))])
    zeros = torch.zeros(response_mask.shape)
    return Experience(input_ids, attention_mask, response_mask, input_ids, attention_mask, advantages,
                      zeros, zeros, zeros)


def _gradient_of(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


def test_micro_token_mean_weighs_each_micro_batch_equally(tokenizer, tiny_model_factory):
    """2 micro-batches of 2 and 5 response tokens: released weighting L = 1/2 (sum_1 l / 2 + sum_2 l / 5),
    against this project's L = (sum_1 l + sum_2 l) / 7; checked on the parameter change of one SGD step."""
    from accelerate import Accelerator

    from config import TrainConfig, resolve
    from opsd import token_logprobs
    from update import update_policy

    model = tiny_model_factory(seed=0)
    lengths = [1, 1, 3, 2]                       # sorted by length in update_policy: micro-batches {1, 1}, {2, 3}
    experience = _experience(tokenizer, lengths)
    with torch.no_grad():
        old = token_logprobs(model, experience.input_ids, experience.attention_mask, 3)[0] * experience.response_mask
    experience.old_logp = experience.ref_logp = experience.teacher_logp = old

    def token_loss_sum(rows):                    # sum over the rows' tokens of l_t = -A exp(logp - old) (value -A)
        batch = experience[rows]
        logp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask.shape[1])
        ratio = torch.exp(logp - batch.old_logp)                                         # (b, t)
        return (-batch.advantages[:, None] * ratio * batch.response_mask).sum()

    released = _gradient_of(model, 0.5 * (token_loss_sum([0, 1]) / 2 + token_loss_sum([3, 2]) / 5))
    project = _gradient_of(model, (token_loss_sum([0, 1]) + token_loss_sum([3, 2])) / 7)
    for loss_agg, expected in (("micro-token-mean", released), ("token-mean", project)):
        model = tiny_model_factory(seed=0)
        before = [p.detach().clone() for p in model.parameters()]
        cfg = resolve(TrainConfig(mini_batch_size=4, micro_batch_size=2, loss_agg=loss_agg, kl_coef=0.0,
                                  entropy_coef=0.0, sdar_coef=0.0, grad_clip=1e9))
        update_policy(model, torch.optim.SGD(model.parameters(), lr=1.0), Accelerator(cpu=True), experience, cfg,
                      torch.Generator().manual_seed(0), {})
        for b, a, g in zip(before, model.parameters(), expected):
            torch.testing.assert_close(b - a.detach(), g, atol=1e-6, rtol=1e-5)
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(released, project))       # the two weightings differ


def test_minibatch_rows_released_blocks_and_project_shuffle():
    from update import minibatch_rows

    assert minibatch_rows(5, 2, 3) == [[0, 1, 2], [3, 4]]                 # verl's split(3): trainer order
    assert minibatch_rows(4, 3, 3) == [[0, 1, 2], [3], []]                # another process has more rows
    lengths = [9, 4, 7, 1]
    (rows,) = minibatch_rows(4, 1, 4, torch.Generator().manual_seed(0), lambda i: lengths[i])
    assert rows == [3, 1, 2, 0]                                           # one part, sorted by length
    parts = minibatch_rows(10, 2, 5, torch.Generator().manual_seed(1))
    assert sorted(parts[0] + parts[1]) == list(range(10)) and parts[0] != [0, 1, 2, 3, 4]


@pytest.mark.parametrize("parity,loss_agg,mini_batch_size,weights", [
    # released: micro-batches {0, 1} (3 + 1 tokens) and {2, 3} (2 + 4 tokens), each over 2 accumulation steps
    ("released", None, 4, [3 / 8, 1 / 8, 2 / 12, 4 / 12]),
    # released, the same 4 rows as a short mini-batch of 8: verl still divides by its 4 configured steps
    ("released", None, 8, [3 / 16, 1 / 16, 2 / 24, 4 / 24]),
    # this project's order under the released weighting: sorted by length, micro-batches {1, 2} and {0, 3}
    ("project", "micro-token-mean", 4, [3 / 14, 1 / 6, 2 / 6, 4 / 14]),
    # this project's default: one token mean over the mini-batch's 10 tokens
    ("project", "token-mean", 4, [3 / 10, 1 / 10, 2 / 10, 4 / 10]),
])
def test_released_micro_batches_give_the_released_sample_weights(parity, loss_agg, mini_batch_size, weights,
                                                                 tokenizer, tiny_model_factory):
    """One mini-batch of 4 rows with 3, 1, 2, 4 response tokens in the trainer's order, micro-batches of 2.
    Each sample's weight (what multiplies the gradient of its own token mean) is hand-computed above; the
    update must equal one SGD step on sum_i w_i mean_t l_it."""
    from accelerate import Accelerator

    from config import TrainConfig, resolve
    from opsd import token_logprobs
    from update import update_policy

    model = tiny_model_factory(seed=0)
    lengths = [3, 1, 2, 4]
    experience = _experience(tokenizer, lengths)
    with torch.no_grad():
        old = token_logprobs(model, experience.input_ids, experience.attention_mask, 4)[0] * experience.response_mask
    experience.old_logp = experience.ref_logp = experience.teacher_logp = old

    def sample_mean(row):                        # mean over the row's tokens of l_t = -A exp(logp - old)
        batch = experience[[row]]
        logp, _ = token_logprobs(model, batch.input_ids, batch.attention_mask, batch.response_mask.shape[1])
        loss = -batch.advantages[:, None] * torch.exp(logp - batch.old_logp) * batch.response_mask   # (1, t)
        return loss.sum() / lengths[row]

    expected = _gradient_of(model, sum(w * sample_mean(row) for row, w in enumerate(weights)))
    model = tiny_model_factory(seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    chosen = {"loss_agg": loss_agg} if loss_agg else {}                     # None: the parity's own
    cfg = resolve(TrainConfig(parity=parity, mini_batch_size=mini_batch_size, micro_batch_size=2, kl_coef=0.0,
                              entropy_coef=0.0, sdar_coef=0.0, grad_clip=1e9, **chosen))
    update_policy(model, torch.optim.SGD(model.parameters(), lr=1.0), Accelerator(cpu=True), experience, cfg,
                  torch.Generator().manual_seed(0), {})
    for b, a, g in zip(before, model.parameters(), expected):
        torch.testing.assert_close(b - a.detach(), g, atol=1e-6, rtol=1e-5)


def test_sampling_to_eos_keeps_what_follows_the_action(tokenizer, tiny_model_factory):
    """Without stop tags (the released rule) a closed action tag neither stops a row nor cuts its response:
    only EOS or the budget end it, and the kept response is everything sampled, EOS included."""
    from generation import StopOnTags, cut_response, generate_responses
    from rollout import RolloutConfig

    eos = {tokenizer.eos_token_id}
    ids = tokenizer("<think>go</think><action>go to fridge 1</action> more text", add_special_tokens=False)["input_ids"]
    ids = ids + [tokenizer.eos_token_id] + [7, 8]
    for tags, stops_at in (((), ids.index(tokenizer.eos_token_id)), (("</action>",), None)):
        stop = StopOnTags(tokenizer, tags, eos, len(tokenizer), torch.device("cpu"))
        finished = [bool(stop(torch.tensor([ids[:k + 1]]), None)[0]) for k in range(len(ids))]
        first = finished.index(True)
        if stops_at is not None:
            assert first == stops_at                                   # at EOS, not at "</action>"
        else:
            assert tokenizer.decode(ids[:first + 1]).endswith("</action>")
    assert cut_response(ids, tokenizer, eos, ()) == ids[:ids.index(tokenizer.eos_token_id) + 1]
    assert tokenizer.decode(cut_response(ids, tokenizer, eos, ("</action>",))).endswith("</action>")
    model = tiny_model_factory(seed=3)
    prompt = ids[:6]
    runs = []
    for tags in ((), ("</action>",)):
        torch.manual_seed(0)
        runs.append(generate_responses(model, tokenizer, [prompt] * 4, RolloutConfig(max_new_tokens=12), tags))
    for whole, short in zip(*runs):
        assert len(whole) == 12 or whole[-1] == tokenizer.eos_token_id
        assert whole[:len(short)] == short                               # same samples: the stop rule only cuts


def test_chat_templates_get_thinking_off(tokenizer):
    from prompts import render_chat

    thinking = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>{% endif %}")
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = thinking
        assert render_chat(tokenizer, "hi") == "hi<think>\n\n</think>"
    finally:
        tokenizer.chat_template = original
    assert render_chat(tokenizer, "hi").endswith("<|im_start|>assistant\n")   # templates without it: unchanged


def test_rlsd_strength_decays_linearly_as_released():
    """Released: lam (1 - global_steps / 100) with global_steps from 1, so 0.495 at the first update
    (iteration 0) and 0 at the 100th (iteration 99); this project counts from 0."""
    from config import TrainConfig, resolve
    from update import objective_coefficients

    released = resolve(TrainConfig(method="rlsd", parity="released"))
    lam = [objective_coefficients(released, i)["rlsd_lam"] for i in (0, 1, 49, 98, 99, 150)]
    assert lam == pytest.approx([0.495, 0.49, 0.25, 0.005, 0.0, 0.0])
    project = resolve(TrainConfig(method="rlsd"))
    lam = [objective_coefficients(project, i)["rlsd_lam"] for i in (0, 50, 99, 100, 150)]
    assert lam == pytest.approx([0.5, 0.25, 0.005, 0.0, 0.0])
    project.rlsd_decay_iterations = 0
    assert objective_coefficients(project, 150)["rlsd_lam"] == 0.5


@pytest.mark.parametrize("parity,ratio,expected", [
    ("released", 0.1, [0.0, 1 / 15, 2 / 15, 14 / 15, 1.0, 1.0]),   # verl: lr s / 15, 0 at the first step
    ("project", 0.1, [1 / 15, 2 / 15, 3 / 15, 1.0, 1.0, 1.0]),
    ("released", 0.0, [1.0] * 6),
    ("project", 0.0, [1.0] * 6),
])
def test_warm_up_as_verl_under_parity(parity, ratio, expected):
    from config import TrainConfig
    from train import make_optimizer

    cfg = TrainConfig(parity=parity, warmup_ratio=ratio, iterations=150, lr=1.0)
    optimizer, scheduler = make_optimizer(cfg, torch.nn.Linear(2, 1))
    factors = []
    for step in range(20):
        if step in (0, 1, 2, 14, 15, 19):
            factors.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert factors == pytest.approx(expected)


def test_in_prompt_skills_go_after_the_first_line(tokenizer):
    from prompts import PRIVILEGED_HEADER, privileged_message, teacher_prompt_text

    message = "Your task is to: put a mug in desk 1.\nNow at step 1 of 50. Observation: a room."
    placed = privileged_message(message, "Mugs live in cabinets.")
    assert placed == ("Your task is to: put a mug in desk 1.\n" + PRIVILEGED_HEADER + "Mugs live in cabinets.\n\n"
                      "Now at step 1 of 50. Observation: a room.")
    assert privileged_message("one line", "S") == PRIVILEGED_HEADER + "S\n\none line"
    # a template that opens with a newline: the skills still follow its first sentence
    assert privileged_message("\n  \nYou are an agent.\nTask: x", "S") == \
        "\n  \nYou are an agent.\n" + PRIVILEGED_HEADER + "S\n\nTask: x"
    assert privileged_message("\nonly line", "S") == PRIVILEGED_HEADER + "S\n\n\nonly line"
    text = teacher_prompt_text(tokenizer, message, "Mugs live in cabinets.", mode="in_prompt")
    assert text.index("put a mug") < text.index(PRIVILEGED_HEADER) < text.index("Now at step 1")


def test_the_released_preset_fills_only_what_is_unset():
    released = parse_config(["--parity", "released", "--env_name", "search", "--model", "Qwen/Qwen2.5-0.5B"])
    assert (released.stop_at_action, released.loss_agg) == (False, "micro-token-mean")
    assert (released.skill_retrieval, released.final_eval_tasks) == ("released", -1)
    assert released.micro_batch_size == 16                                # released: 16 per GPU for Search-QA
    for env_name, micro in (("alfworld", 32), ("webshop", 8)):
        assert parse_config(["--parity", "released", "--env_name", env_name, "--model", "Qwen/Qwen2.5-0.5B"]
                            ).micro_batch_size == micro
    assert parse_config(["--parity", "released", "--micro_batch_size", "8", "--model", "Qwen/Qwen2.5-0.5B"]
                        ).micro_batch_size == 8                           # set by the user: kept
    assert parse_config(["--parity", "released", "--model", "Qwen/Qwen2.5-0.5B"]).final_eval_tasks == 0
    assert json.loads(released.env_kwargs) == {"clip_observations": False, "action_parse": "released",
                                               "last_turn_hint": False}
    mixed = parse_config(["--parity", "released", "--loss_agg", "token-mean", "--env_kwargs",
                          '{"action_parse": "project"}', "--model", "Qwen/Qwen2.5-0.5B"])
    assert mixed.loss_agg == "token-mean" and mixed.stop_at_action is False
    assert json.loads(mixed.env_kwargs) == {"clip_observations": False, "action_parse": "project"}
    project = parse_config(["--model", "Qwen/Qwen2.5-0.5B"])
    assert (project.stop_at_action, project.loss_agg, project.env_kwargs) == (True, "token-mean", "{}")
    assert (project.skill_retrieval, project.final_eval_tasks) == ("keyword", 0)
    assert project.micro_batch_size == 8
