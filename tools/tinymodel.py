"""Offline models: a byte-level BPE tokenizer with a chat template and a tiny Qwen2 model, built locally.

No machine here reaches a model hub, so tests, benchmarks and the embedded default build their model
from a config and a tokenizer trained on text we have. Both are ordinary Hugging Face objects: saved
with `save_pretrained`, they load with `AutoTokenizer` / `AutoModelForCausalLM` like any hub model.
"""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

PAD, BOS_TURN, EOS_TURN = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

# ChatML, the format of the Qwen instruct models: role header, content, end-of-turn token.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SHAPES = {
    # name: (hidden, layers, heads, kv_heads, intermediate)
    "tiny": (64, 2, 4, 2, 128),
    "mini": (128, 2, 4, 2, 384),
    "agent": (128, 4, 4, 2, 384),       # the shipped embedded agent (about 0.9 M parameters)
    "small": (256, 4, 4, 2, 768),
    "qwen2.5-0.5b": (896, 24, 14, 2, 4864),
}


def build_tokenizer(texts, vocab_size: int = 1024, extra_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` (any string round-trips: unknown characters fall back to bytes)."""
    core = Tokenizer(models.BPE())
    # Qwen2's own normaliser and pre-tokeniser: AutoTokenizer rebuilds exactly these for a qwen2 model
    # folder, so the tokenizer we train is the one every later from_pretrained gives back.
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS_TURN, EOS_TURN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS_TURN,
                                        additional_special_tokens=[BOS_TURN], padding_side="left")
    if extra_tokens:
        tokenizer.add_tokens(list(extra_tokens))
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def model_config(tokenizer, shape: str = "tiny", vocab_size: int | None = None, max_positions: int = 4096) -> Qwen2Config:
    """A Qwen2 config of a named shape for this tokenizer (`vocab_size` overrides, e.g. to test memory)."""
    hidden, layers, heads, kv_heads, intermediate = SHAPES[shape]
    return Qwen2Config(
        vocab_size=vocab_size or len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
        max_position_embeddings=max_positions, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS_TURN),
    )


def tiny_model(tokenizer, shape: str = "tiny", seed: int = 0, **config_kwargs) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 model (seeded), float32, in eval mode."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(model_config(tokenizer, shape, **config_kwargs))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.eval()
