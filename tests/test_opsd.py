"""opsd.py: chunked log-probs equal the dense computation (values and gradients), the teacher's batch
(prompts.teacher_inputs),
and the full-vocabulary divergences against their dense formulas."""

import pytest
import torch

from opsd import pack_batch, response_hidden, token_logprobs, vocab_divergence
from prompts import PRIVILEGED_HEADER, render_chat, teacher_inputs


def _batch(pad_id):
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    responses = [[20, 21, 22], [23, 24, 25, 26, 27, 28], []]          # ragged, one empty response
    return pack_batch(prompts, responses, pad_id)


def _dense_logprobs(model, input_ids, attention_mask, T):
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).logits.float()
    logp_all = torch.log_softmax(logits[:, -T - 1:-1], dim=-1)
    logp = logp_all.gather(-1, input_ids[:, -T:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def test_pack_batch_layout():
    input_ids, attention_mask, response_mask = pack_batch([[1, 2, 3], [4]], [[7], [8, 9]], pad_id=0)
    assert input_ids.tolist() == [[1, 2, 3, 7, 0], [0, 0, 4, 8, 9]]
    assert attention_mask.tolist() == [[1, 1, 1, 1, 0], [0, 0, 1, 1, 1]]
    assert response_mask.tolist() == [[1, 0], [1, 1]]


@pytest.mark.parametrize("chunk_size", [1, 2, 4, None, 100])
def test_token_logprobs_match_dense(tiny_model_factory, tokenizer, chunk_size):
    model = tiny_model_factory(seed=1)
    input_ids, attention_mask, response_mask = _batch(tokenizer.pad_token_id)
    T = response_mask.shape[1]
    logp, entropy = token_logprobs(model, input_ids, attention_mask, T, chunk_size=chunk_size, with_entropy=True)
    ref_logp, ref_entropy = _dense_logprobs(model, input_ids, attention_mask, T)
    m = response_mask.bool()
    assert logp.shape == (3, T) and logp.dtype == torch.float32
    torch.testing.assert_close(logp[m], ref_logp[m], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[m], ref_entropy[m], atol=1e-5, rtol=0)


def test_token_logprobs_padding_does_not_change_values(tiny_model_factory, tokenizer):
    model = tiny_model_factory(seed=2)
    alone = pack_batch([[10, 11]], [[23, 24, 25]], tokenizer.pad_token_id)
    padded = pack_batch([[10, 11], [1, 2, 3, 4, 5, 6]], [[23, 24, 25], [7, 8, 9, 10, 11]], tokenizer.pad_token_id)
    a, _ = token_logprobs(model, alone[0], alone[1], 3, chunk_size=2)
    b, _ = token_logprobs(model, padded[0], padded[1], 5, chunk_size=2)
    torch.testing.assert_close(a[0], b[0, :3], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 3])
def test_token_logprobs_backward_matches_dense(tiny_model_factory, tokenizer, chunk_size):
    input_ids, attention_mask, response_mask = _batch(tokenizer.pad_token_id)
    T = response_mask.shape[1]
    weights = torch.randn(3, T) * response_mask

    def grads(fn):
        model = tiny_model_factory(seed=3)
        logp, entropy = fn(model)
        ((logp * weights).sum() + (entropy * weights).sum()).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    chunked = grads(lambda m: token_logprobs(m, input_ids, attention_mask, T, chunk_size=chunk_size, with_entropy=True))
    dense = grads(lambda m: _dense_logprobs(m, input_ids, attention_mask, T))
    assert chunked.keys() == dense.keys() and len(dense) > 0
    for name in dense:
        torch.testing.assert_close(chunked[name], dense[name], atol=1e-5, rtol=1e-4, msg=name)


def test_token_logprobs_bfloat16_is_finite(tiny_model_factory, tokenizer):
    model = tiny_model_factory(seed=4).to(torch.bfloat16)
    input_ids, attention_mask, response_mask = _batch(tokenizer.pad_token_id)
    logp, entropy = token_logprobs(model, input_ids, attention_mask, response_mask.shape[1], chunk_size=2,
                                   with_entropy=True)
    assert torch.isfinite(logp).all() and torch.isfinite(entropy).all() and (logp <= 0).all()


def test_teacher_inputs_keep_the_student_response(tokenizer):
    messages = ["Your task is to: put a hot apple in diningtable.", "short"]
    responses = [[30, 31, 32], [33]]
    skills = ["Heat food in the microwave.", "Search first."]
    ids, mask, response_mask = teacher_inputs(tokenizer, messages, responses, skills, mode="prefix",
                                              max_prompt_length=4096)
    assert ids[:, -3:].tolist() == [[30, 31, 32], [33, tokenizer.pad_token_id, tokenizer.pad_token_id]]
    assert response_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    prompt0 = ids[0, :-3][mask[0, :-3].bool()].tolist()
    expected = PRIVILEGED_HEADER + skills[0] + "\n\n" + render_chat(tokenizer, messages[0])
    assert tokenizer.decode(prompt0) == expected
    ids_in, mask_in, _ = teacher_inputs(tokenizer, messages, responses, skills, mode="in_prompt")
    prompt_in = tokenizer.decode(ids_in[0, :-3][mask_in[0, :-3].bool()].tolist())
    assert prompt_in == render_chat(tokenizer, PRIVILEGED_HEADER + skills[0] + "\n\n" + messages[0])
    short, short_mask, _ = teacher_inputs(tokenizer, messages, responses, skills, max_prompt_length=7)
    assert short_mask[:, :-3].sum(-1).tolist() == [7, 7]            # left-truncated to 7 prompt tokens
    full_ids = tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert short[0, :-3].tolist() == full_ids[-7:]                  # the end of the prompt is kept
    with pytest.raises(ValueError):
        teacher_inputs(tokenizer, messages, responses, skills, mode="suffix")


def _dense_divergences(head, hs, ht):
    ls = torch.log_softmax(head(hs).double(), -1)
    lt = torch.log_softmax(head(ht).double(), -1)
    ps, pt = ls.exp(), lt.exp()
    m = (ps + pt) / 2
    return {
        "reverse": (ps * (ls - lt)).sum(-1),
        "forward": (pt * (lt - ls)).sum(-1),
        "jsd": 0.5 * (ps * (ls - m.log())).sum(-1) + 0.5 * (pt * (lt - m.log())).sum(-1),
    }


def test_vocab_divergences_match_dense_formulas():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 50, bias=False)
    hs = torch.randn(2, 5, 8, requires_grad=True)
    ht = torch.randn(2, 5, 8)
    dense = _dense_divergences(head, hs, ht)
    for name, kind in (("reverse", "reverse_kl"), ("forward", "forward_kl"), ("jsd", "jsd")):
        for chunk in (2, None):
            value = vocab_divergence(head, hs, ht, kind, chunk_size=chunk)
            torch.testing.assert_close(value.double(), dense[name], atol=1e-5, rtol=1e-4)
            assert (value > -1e-6).all()
    jsd = vocab_divergence(head, hs, ht, "jsd")
    torch.testing.assert_close(jsd, vocab_divergence(head, ht, hs, "jsd"), atol=1e-6, rtol=1e-5)
    assert (jsd <= torch.log(torch.tensor(2.0)) + 1e-6).all()
    torch.testing.assert_close(vocab_divergence(head, hs, hs.detach(), "reverse_kl"), torch.zeros(2, 5), atol=1e-6, rtol=0)


def test_vocab_divergence_gradient_flows_through_student_only():
    torch.manual_seed(1)
    head = torch.nn.Linear(8, 30, bias=False)
    hs = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    ht = torch.randn(2, 4, 8, dtype=torch.float64, requires_grad=True)
    head = head.double()
    vocab_divergence(head, hs, ht, "reverse_kl", chunk_size=3).sum().backward()
    assert hs.grad is not None and ht.grad is None
    grad_chunked = hs.grad.clone(); hs.grad = None
    dense = _dense_divergences(head, hs, ht.detach())["reverse"].sum()
    dense.backward()
    torch.testing.assert_close(grad_chunked, hs.grad)


def test_response_hidden_feeds_divergences(tiny_model_factory, tokenizer):
    model = tiny_model_factory(seed=5)
    input_ids, attention_mask, response_mask = _batch(tokenizer.pad_token_id)
    T = response_mask.shape[1]
    hidden = response_hidden(model, input_ids, attention_mask, T)
    assert hidden.shape == (3, T, model.config.hidden_size)
    kl = vocab_divergence(model.get_output_embeddings(), hidden, hidden.detach(), "reverse_kl")
    torch.testing.assert_close(kl, torch.zeros(3, T), atol=1e-5, rtol=0)
