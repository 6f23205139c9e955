"""tools/bench.py's helpers, and its measurements that each need a fresh process: the SDAR training micro-step
and the memory of chunked against unchunked log-probs. Peak memory is only honest in a process that did
nothing else: the CUDA allocator's peak counter, or on CPU the resident-set high-water mark (torch's
CPU allocator keeps no statistics), reset right before the measured phase where Linux allows it.

Precision follows train.py: float32 weights, bfloat16 autocast as its `mixed_precision` says (auto: on CUDA).
"""

from __future__ import annotations

import contextlib
import gc
import time

import torch

from metrics import peak_memory, reset_peak_memory


def load(folder: str, device: torch.device, dtype: torch.dtype):
    """Tokenizer and causal LM from a save_pretrained folder, the model in eval mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    return tokenizer, model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    """(fn(), wall seconds) with the device drained before and after."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def random_prompts(tokenizer, rows: int, length: int, generator: torch.Generator) -> list[list[int]]:
    """`rows` lists of `length` random token ids (past the first special ids): timing needs no meaning."""
    return torch.randint(3, len(tokenizer), (rows, length), generator=generator).tolist()


def reset_peak(device: torch.device) -> int:
    """Collect garbage (cycles the previous measurement left), then open a peak-memory window."""
    gc.collect()
    return reset_peak_memory(device)


def peak(device: torch.device, before: int) -> dict:
    """Peak since `reset_peak` (MiB): in total, and above what was in use when the window opened."""
    top = peak_memory(device)
    return {"peak_mib": top / 2**20, "extra_mib": (top - before) / 2**20}


def autocast(device: torch.device, mixed_precision: str = "auto"):
    """bf16 autocast as train.py's `mixed_precision` sets it (auto: on CUDA only), else nothing."""
    on = mixed_precision == "bf16" or (mixed_precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def train_worker(args, checkpointing: bool, emit, forwards: bool = True) -> None:
    """One SDAR micro-step with an AdamW step, and the old and teacher log-prob forwards (score_tokens),
    which are reported when `forwards` (gradient checkpointing does not change them)."""
    from config import TrainConfig, resolve
    from envs.skills import load_skills
    from opsd import pack_batch
    from prompts import teacher_inputs
    from experience import Experience, score_tokens
    from update import micro_step_loss

    device = torch.device(args.device)
    tokenizer, model = load(args.model, device, torch.float32)
    if checkpointing:
        model.gradient_checkpointing_enable()
    B, P, T = args.train_batch, args.train_prompt_len, args.train_response_len
    generator = torch.Generator().manual_seed(0)
    prompts, responses = random_prompts(tokenizer, B, P, generator), random_prompts(tokenizer, B, T, generator)
    skill = load_skills("alfworld")["general"]
    cfg = resolve(TrainConfig(micro_batch_size=B, mini_batch_size=B, max_prompt_length=max(2048, P),
                              logprob_chunk_size=args.chunk_size, gradient_checkpointing=checkpointing))
    input_ids, attention_mask, response_mask = pack_batch(prompts, responses, tokenizer.pad_token_id)    # (B, P+T)
    teacher_ids, teacher_mask, _ = teacher_inputs(tokenizer, [tokenizer.decode(p) for p in prompts], responses,
                                                  [skill] * B, cfg.teacher_context, cfg.max_prompt_length)
    common = dict(section="train", checkpointing="on" if checkpointing else "off", batch=B, seq_len=P + T)
    logps = {}

    def score(ids, mask, rows):
        return score_tokens(model, ids, mask, response_mask, rows, cfg.micro_batch_size, cfg.logprob_chunk_size)

    for name, ids, mask in (("old_logp", input_ids, attention_mask), ("teacher_logp", teacher_ids, teacher_mask)):
        before = reset_peak(device)
        with autocast(device, args.mixed_precision):
            score(ids, mask, [0])                                                 # warm-up
            logps[name], seconds = timed(lambda: score(ids, mask, list(range(B))), device)  # noqa: B023
        if forwards:
            emit(dict(common, variant=name, seconds=seconds, tok_s=B * (P + T) / seconds, **peak(device, before)))
    experience = Experience(input_ids, attention_mask, response_mask, teacher_ids, teacher_mask,
                            torch.randn(B, generator=generator), logps["old_logp"], logps["old_logp"],
                            logps["teacher_logp"]).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-7)
    model.train()

    def micro_step():
        with autocast(device, args.mixed_precision):
            loss, _ = micro_step_loss(model, experience, experience.response_mask, cfg, float(B * T))
        loss.backward()
        return float(loss)

    before = reset_peak(device)
    try:
        micro_step()                                                            # warm-up, allocates gradients
        optimizer.step()                                                        # and the AdamW states
        optimizer.zero_grad(set_to_none=False)
        loss, seconds = timed(micro_step, device)
    except torch.OutOfMemoryError:
        emit(dict(common, variant="micro_step", oom=True, **peak(device, before)))
        return
    emit(dict(common, variant="micro_step", seconds=seconds, tok_s=B * (P + T) / seconds, loss=loss,
              **peak(device, before)))


def memory_inputs(args, folder: str, device: torch.device):
    """A tiny-shape model with a large vocabulary, a batch, its response length and backward weights."""
    from transformers import AutoTokenizer

    from tools.tinymodel import tiny_model

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = tiny_model(tokenizer, "tiny", seed=0, vocab_size=args.memory_vocab).to(device).train()
    generator = torch.Generator().manual_seed(1)
    T = args.memory_len
    input_ids = torch.randint(3, args.memory_vocab, (args.memory_batch, 64 + T), generator=generator)  # (B, 64+T)
    weights = torch.randn(args.memory_batch, T, generator=generator)                                   # (B, T)
    return model, input_ids.to(device), torch.ones_like(input_ids).to(device), T, weights.to(device)


def logprobs_backward(model, input_ids, attention_mask, T, weights, chunk_size):
    """token_logprobs (with entropy, as training uses it) and backward of a weighted sum; returns (logp, entropy)."""
    from opsd import token_logprobs

    with autocast(input_ids.device):
        logp, entropy = token_logprobs(model, input_ids, attention_mask, T, chunk_size=chunk_size, with_entropy=True)
    ((logp * weights).sum() + (entropy * weights).sum()).backward()                # (B, T) -> scalar
    return logp.detach(), entropy.detach()


def memory_worker(args, chunk: str, emit) -> None:
    """Peak memory of one token_logprobs forward+backward, unchunked (`chunk` "none") or chunked."""
    device = torch.device(args.device)
    model, input_ids, attention_mask, T, weights = memory_inputs(args, args.model, device)
    chunk_size = None if chunk == "none" else int(chunk)
    before = reset_peak(device)
    _, seconds = timed(lambda: logprobs_backward(model, input_ids, attention_mask, T, weights, chunk_size), device)
    emit(dict(section="memory", variant=f"chunk={chunk}", vocab=args.memory_vocab, batch=args.memory_batch,
              response_len=T, seconds=seconds, **peak(device, before)))


def chunked_difference(args, model_dir: str) -> dict:
    """Largest |chunked - unchunked| of log-probs, entropies and parameter gradients (same process)."""
    device = torch.device(args.device)
    model, input_ids, attention_mask, T, weights = memory_inputs(args, model_dir, device)
    results = []
    for chunk_size in (None, args.chunk_size):
        model.zero_grad(set_to_none=True)
        logp, entropy = logprobs_backward(model, input_ids, attention_mask, T, weights, chunk_size)
        results.append((logp, entropy, [p.grad.clone() for p in model.parameters()]))
    (logp0, ent0, grads0), (logp1, ent1, grads1) = results
    grad = max(float((a - b).abs().max()) for a, b in zip(grads0, grads1))
    return dict(section="memory", variant="max_abs_diff", vocab=args.memory_vocab,
                logp=float((logp0 - logp1).abs().max()), entropy=float((ent0 - ent1).abs().max()), grad=grad)


def run_worker(args, emit) -> None:
    """Dispatch `--worker train:off|on` or `--worker memory:none|<chunk size>`."""
    kind, option = args.worker.split(":")
    if kind == "train":
        train_worker(args, option == "on", emit, forwards=option == args.checkpointing.split(",")[0])
    elif kind == "memory":
        memory_worker(args, option, emit)
    else:
        raise ValueError(f"unknown worker {args.worker!r}")
