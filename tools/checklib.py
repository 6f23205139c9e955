"""tools/gpu_check.py's measurements after the train section: the greedy and teacher-cache agreement checks
(in this process, on one loaded model), and the decode, micro-step and memory-estimate sections, which run
tools/bench.py's measurements (the micro-step in a fresh process each, for an honest peak). Each section
adds its numbers to the report and its verdicts to report["checks"] (`check`).
"""

from __future__ import annotations

import os
import platform
import time

import torch

from tools import bench
from tools.benchlib import autocast, load

# Dense bf16 tensor-core peaks (NVIDIA data sheets, SXM parts), for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
DECODE_SPEEDUP_TARGETS = {64: 5.0, 256: 3.0}


def check(name: str, value, target: str, passed: bool) -> dict:
    """One verdict of the report: what was measured, against what, and whether it passed."""
    return {"name": name, "value": value, "target": target, "pass": bool(passed)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)"


# --- greedy: fast decode against the plain path ---------------------------------------------------------

def env_prompts(tokenizer, rows: int) -> list[tuple[str, str]]:
    """(user message, skill text) of `rows` built-in ALFWorld first turns, two rows per task (a group)."""
    from envs import make_env
    from envs.skills import SkillPicker

    env, picker = make_env("alfworld"), SkillPicker("alfworld", "keyword", 0)
    out = []
    for seed in range((rows + 1) // 2):
        observation, info = env.reset(seed, split="train")
        message = env.render_prompt(observation, [], info, 2)
        out += [(message, picker(env, info, message)[0])] * 2
    return out[:rows]


@torch.no_grad()
def logit_gap(model, prompt: list[int], common: list[int], token_a: int, token_b: int, precision: str) -> float:
    """|logit(a) - logit(b)| where two greedy continuations of `prompt + common` part ways."""
    device = next(model.parameters()).device
    ids = torch.tensor([prompt + common], device=device)                           # (1, L)
    with autocast(device, precision):
        logits = model(input_ids=ids).logits[0, -1].float()                         # (V,)
    return float((logits[token_a] - logits[token_b]).abs())


FAST_VARIANTS = {"static": dict(cache_implementation="static", compile_decode=False, pad_to_multiple_of=64),
                 "compiled": dict(cache_implementation="static", compile_decode=True, pad_to_multiple_of=64)}


def greedy_section(args, model, tokenizer, precision: str, report) -> None:
    """Greedy tokens of the plain dynamic-cache path against the fast path: the static cache (what
    `--fast_decode` runs on a CPU) and the static cache with a compiled decode step (on a GPU). A row may
    part ways only where the two chosen tokens' logits tie within the precision's rounding (random weights
    give nearly flat logits, so near-ties happen)."""
    from generation import generate_responses
    from prompts import render_chat
    from rollout import RolloutConfig

    prompts = [tokenizer(render_chat(tokenizer, message), add_special_tokens=False)["input_ids"]
               for message, _ in env_prompts(tokenizer, args.greedy_rows)]
    common = dict(temperature=0.0, max_new_tokens=args.greedy_tokens, max_prompt_length=4096)
    device = next(model.parameters()).device
    outputs, seconds = {}, {}
    for name in ["plain", *args.greedy_variants.split(",")]:
        start = time.perf_counter()
        with autocast(device, precision):
            outputs[name] = generate_responses(model, tokenizer, prompts,
                                               RolloutConfig(**common, **FAST_VARIANTS.get(name, {})), ("</action>",))
        seconds[name] = time.perf_counter() - start
    tolerance = 1e-3 if precision == "no" else 0.1
    for name in args.greedy_variants.split(","):
        divergences = []
        for row, (plain, fast) in enumerate(zip(outputs["plain"], outputs[name])):
            if plain == fast:
                continue
            at = next((i for i, (a, b) in enumerate(zip(plain, fast)) if a != b), min(len(plain), len(fast)))
            gap = None if at == min(len(plain), len(fast)) else \
                logit_gap(model, prompts[row], plain[:at], plain[at], fast[at], precision)   # None: one stopped early
            divergences.append({"row": row, "position": at, "logit_gap": gap})
        equal = len(prompts) - len(divergences)
        report["greedy"].append({"precision": precision, "variant": name, "rows": len(prompts), "rows_equal": equal,
                                 "tokens": sum(map(len, outputs["plain"])), "divergences": divergences,
                                 "plain_s": seconds["plain"], "variant_s": seconds[name]})
        ties = all(d["logit_gap"] is not None and d["logit_gap"] < tolerance for d in divergences)
        report["checks"].append(check(f"greedy {precision}: {name} decode = plain decode",
                                      f"{equal}/{len(prompts)} rows equal",
                                      f"all rows, or a divergence at a logit tie < {tolerance}", ties))


# --- teacher_cache: the shared-prefix cache at this vocabulary ------------------------------------------

def teacher_cache_section(args, model, tokenizer, report) -> None:
    """Teacher log-probs of the same rows, plain and with the prefix cache, at float32 and (if asked) bf16."""
    from experience import score_tokens
    from opsd import pack_batch
    from prompts import teacher_prompt_ids
    from teacher_cache import cached_teacher_logprobs

    rows = env_prompts(tokenizer, args.cache_groups * 2)[::2]
    messages = [message for message, _ in rows for _ in range(args.cache_rows)]
    skills = [skill for _, skill in rows for _ in range(args.cache_rows)]
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, args.new_tokens + 1, (len(messages),), generator=generator).tolist()
    responses = [torch.randint(3, len(tokenizer), (n,), generator=generator).tolist() for n in lengths]
    prompts = teacher_prompt_ids(tokenizer, messages, skills, "prefix", 4096)
    ids, attention_mask, response_mask = pack_batch(prompts, responses, tokenizer.pad_token_id)  # (B, Q+T), (B, T)
    device, mask = next(model.parameters()).device, response_mask.bool()
    plain, cached = {}, {}
    for precision in dict.fromkeys(["no", *args.precisions.split(",")]):
        with autocast(device, precision):
            plain[precision] = score_tokens(model, ids, attention_mask, response_mask, list(range(len(prompts))),
                                            args.micro_batch, 128)                                  # (B, T)
            cached[precision] = cached_teacher_logprobs(model, prompts, responses, skills, tokenizer.pad_token_id,
                                                        args.micro_batch, 128).cpu()                # (B, T)
        difference = float((plain[precision] - cached[precision])[mask].abs().max())
        bf16_noise = float((plain[precision] - plain["no"])[mask].abs().max())
        tolerance = 1e-4 if precision == "no" else max(bf16_noise, 1e-4)
        report["teacher_cache"].append({"precision": precision, "rows": len(prompts), "tokens": int(mask.sum()),
                                        "max_abs_diff": difference, "bf16_vs_fp32_max_abs_diff": bf16_noise})
        report["checks"].append(check(f"teacher cache {precision}: max |cached - plain| log-prob", difference,
                                      f"<= {tolerance:.3g}", difference <= tolerance))


# --- decode and micro_step: tools/bench.py's measurements -----------------------------------------------

def decode_check(args, model_dir: str, report) -> None:
    device = torch.device(args.device)
    bench_args = bench.parse_args(["--device", args.device, "--batch_sizes", args.decode_batches, "--prompt_len",
                                   str(args.decode_prompt), "--new_tokens", str(args.decode_tokens),
                                   "--variants", "hf_generate,rollout_compiled", "--turns", "0"])
    tokenizer, model = load(model_dir, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    rows = []
    bench.decode_section(bench_args, model, tokenizer, rows.append)
    del model
    bench.release_memory(device)
    report["decode"] = rows
    for row in rows:
        if row.get("variant") == "rollout_compiled" and args.device == "cuda":
            target = DECODE_SPEEDUP_TARGETS.get(row["batch"], 1.0)
            report["checks"].append(check(f"decode speedup at {row['batch']} rows", row.get("speedup"),
                                          f">= {target}x", (row.get("speedup") or 0) >= target))


def micro_step(args, model_dir: str, rows: int, length: int, checkpointing: str, precision: str) -> dict:
    """One SDAR micro-step of `rows` x `length` tokens (half prompt, half response) in a fresh process."""
    bench_args = bench.parse_args(["--device", args.device, "--train_batch", str(rows), "--train_prompt_len",
                                   str(length // 2), "--train_response_len", str(length - length // 2),
                                   "--checkpointing", checkpointing, "--mixed_precision", precision])
    found = bench.worker_rows(bench_args, f"train:{checkpointing}", model_dir, lambda row: None)
    step = [row for row in found if row.get("variant") == "micro_step"]
    return step[0] if step else {"error": "the micro-step worker failed"}


def model_flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token: 6 per parameter (forward 2, backward 4; recomputation not counted) plus
    causal attention's score and value products (6 x layers x hidden x seq_len)."""
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    per_layer = 4 * hidden * hidden * (1 + config.num_key_value_heads / config.num_attention_heads) / 2 \
        + 3 * hidden * config.intermediate_size
    parameters = layers * per_layer + vocab * hidden                              # the head's matmul (tied)
    return 6 * parameters + 6 * layers * hidden * seq_len


def parameter_count(model_dir: str) -> tuple[object, int]:
    """(config, parameters) of a saved model, from shapes alone (nothing allocated)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        return config, sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())


def micro_step_section(args, model_dir: str, report) -> None:
    """The micro-step at the full size; its peak holds the policy, its gradients and AdamW's moments, and the
    reference model's float32 weights are added (train.py keeps it beside the policy) before the GPU target."""
    precision = args.precisions.split(",")[-1]
    row = micro_step(args, model_dir, args.micro_rows, args.micro_len, "on", precision)
    report["micro_step"] = row
    if "error" in row or row.get("oom"):
        report["checks"].append(check("micro-step runs", row.get("error", "out of memory"), "no error", False))
        return
    config, parameters = parameter_count(model_dir)
    row["with_reference_gib"] = row["peak_mib"] / 1024 + 4 * parameters / 2**30
    if args.device == "cuda":                                   # the target is a GPU's; a CPU run only reports
        report["checks"].append(check(f"micro-step {args.micro_rows} x {args.micro_len} peak GiB with the reference",
                                      row["with_reference_gib"], "<= 24", row["with_reference_gib"] <= 24))
    name = device_name(torch.device(args.device))
    peak = next((tflops for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)
    if peak:
        row["mfu"] = row["tok_s"] * model_flops_per_token(config, args.micro_len) / (peak * 1e12)


def estimate_section(args, model_dir: str, report) -> None:
    """The GPU memory of a `--micro_rows` x `--micro_len` SDAR step, estimated from CPU measurements.

    Measured: one row's micro-step (forward, backward, AdamW step) at two lengths whose response half is
    at least one log-prob chunk (128 positions), with and without gradient checkpointing, fitted as
    fixed + per_token x tokens: `fixed` is gradients, AdamW's two moments and one row's head chunk,
    `per_token` the activations kept for backward. Added: the float32 weights of policy and reference
    (loaded before the measured window opens) and the head chunk of the other rows (logits, log-softmax
    and their gradients in float32: 4 x 128 positions x vocabulary x 4 bytes per row)."""
    precision = args.precisions.split(",")[-1]
    lengths = [int(n) for n in args.estimate_lengths.split(",")]
    config, parameters = parameter_count(model_dir)
    weights_gib = 2 * 4 * parameters / 2**30                  # policy and reference, float32
    chunk_row_gib = 4 * 128 * config.vocab_size * 4 / 2**30
    tokens = args.micro_rows * args.micro_len
    for checkpointing in ("off", "on"):
        points = [(n, micro_step(args, model_dir, 1, n, checkpointing, precision)) for n in lengths]
        if any("error" in row or row.get("oom") for _, row in points):
            report["estimate"].append({"checkpointing": checkpointing, "error": "a micro-step worker failed"})
            continue
        (n0, r0), (n1, r1) = points[0], points[-1]
        per_token = (r1["extra_mib"] - r0["extra_mib"]) / (n1 - n0) / 1024                 # GiB per token
        fixed = r0["extra_mib"] / 1024 - per_token * n0
        report["estimate"].append({
            "checkpointing": checkpointing, "precision": precision, "parameters": parameters,
            "measured": [{"tokens": n, "extra_gib": row["extra_mib"] / 1024, "seconds": row["seconds"],
                          "tok_s": row["tok_s"]} for n, row in points],
            "activations_gib_per_1k_tokens": per_token * 1024, "fixed_gib": fixed, "weights_gib": weights_gib,
            "other_rows_head_chunk_gib": (args.micro_rows - 1) * chunk_row_gib, "tokens": tokens,
            "estimate_gib": weights_gib + fixed + per_token * tokens + (args.micro_rows - 1) * chunk_row_gib})
