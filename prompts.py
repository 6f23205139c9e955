"""The student's and the teacher's prompts: the chat template, and the privileged skill block.

The student sees the environment's user message through the chat template. The SDAR teacher is the same
model with the privileged skill text added: in front of the chat-templated prompt (`prefix`, the released
code) or inside the user message after its first line (`in_prompt`, the paper's Appendix E). Both score
the student's exact response tokens (`teacher_inputs`, in `opsd.pack_batch`'s layout).
"""

from __future__ import annotations

from opsd import pack_batch

PRIVILEGED_HEADER = "[Privileged Skill Information]\n"
TEACHER_CONTEXTS = ("prefix", "in_prompt")


def render_chat(tokenizer, user_message: str) -> str:
    """One user message through the tokenizer's chat template, ready for the assistant's reply.

    `enable_thinking=False` turns off the thinking mode of templates that have one (Qwen3), as the
    released code does; templates without it ignore the variable."""
    return tokenizer.apply_chat_template([{"role": "user", "content": user_message}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=False)


def with_privileged(text: str, privileged_text: str) -> str:
    """`text` with the privileged block in front: the header, the skills and a blank line."""
    return PRIVILEGED_HEADER + privileged_text + "\n\n" + text


def privileged_message(user_message: str, privileged_text: str) -> str:
    """The user message with the privileged block after its first non-empty line, where the paper's
    Appendix E puts the skills (after the task line in ALFWorld, after the first line in WebShop and
    Search-QA). Blank lines before it are skipped, so a template that opens with a newline (as the
    released verl-agent templates do) still gets the skills after its first sentence, not at the top;
    a message of one line gets them in front."""
    lines = user_message.split("\n")
    first = next((k for k, line in enumerate(lines) if line.strip()), len(lines))
    if first >= len(lines) - 1:
        return with_privileged(user_message, privileged_text)
    return "\n".join(lines[:first + 1]) + "\n" + with_privileged("\n".join(lines[first + 1:]), privileged_text)


def teacher_prompt_text(tokenizer, user_message: str, privileged_text: str, mode: str = "prefix") -> str:
    """The teacher's prompt: the student's prompt with the privileged skill text.

    prefix (released code): the privileged block in front of the chat-templated student prompt.
    in_prompt (paper): the privileged block inside the user message after its first line, through the
    chat template (`privileged_message`).
    """
    if mode == "prefix":
        return with_privileged(render_chat(tokenizer, user_message), privileged_text)
    if mode == "in_prompt":
        return render_chat(tokenizer, privileged_message(user_message, privileged_text))
    raise ValueError(f"teacher_context={mode!r} is unknown; choose one of {', '.join(TEACHER_CONTEXTS)}")


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
    """The teacher's batch: privileged prompt (`teacher_prompt_ids`: rendered, tokenised, left-truncated to
    `max_prompt_length`) followed by the student's exact response tokens.

    Returns input_ids `(B, P+T)`, attention_mask `(B, P+T)`, response_mask `(B, T)` in the `pack_batch`
    layout, so `token_logprobs(..., response_length=T)` scores the same tokens as the student batch.
    """
    prompts = teacher_prompt_ids(tokenizer, user_messages, privileged_texts, mode, max_prompt_length)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return pack_batch(prompts, response_ids, pad_id)
