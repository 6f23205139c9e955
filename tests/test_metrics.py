"""The action-token mask: which tokens count as choosing the action."""

from generation import action_token_mask


def test_action_token_mask_marks_the_action_contents(tokenizer):
    text = "<think>go to fridge</think><action>go to fridge 1</action>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    mask = action_token_mask(tokenizer, ids, ("</action>",))
    chosen = "".join(tokenizer.decode([t]) for t, m in zip(ids, mask) if m)
    assert "go to fridge 1" in chosen and "think" not in chosen and "</action>" not in chosen
    assert mask[-1] == 0 and len(mask) == len(ids)
    search = tokenizer("<think>x</think><search>founder</search>", add_special_tokens=False)["input_ids"]
    marked = "".join(tokenizer.decode([t]) for t, m in zip(search, action_token_mask(tokenizer, search,
                                                                                   ("</search>", "</answer>"))) if m)
    assert "founder" in marked and "x" not in marked and "</search>" not in marked
    assert action_token_mask(tokenizer, search, ("</action>",)) == [0] * len(search)
    assert action_token_mask(tokenizer, [], ("</action>",)) == []
