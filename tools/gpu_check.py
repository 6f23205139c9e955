"""Before spending GPU-hours: one command that runs the real-size path end to end and writes one JSON.

    python -m tools.gpu_check --out results/gpu                                  # one GPU, about 8 min
    python -m tools.gpu_check --device cpu --shape qwen2.5-0.5b --out results/cpu-real-shape   # CPU rehearsal
    python -m tools.gpu_check --device cpu --shape tiny --budget_s 300 --out /tmp/check        # what CI runs

Nothing is downloaded: the model is random weights of a named shape (`tools/tinymodel.SHAPES`; at
qwen2.5-0.5b with Qwen's 151,936-token vocabulary) and a tokenizer trained on the built-in envs' text.
Sections, in order, each skipped (and said so) once `--budget_s` is spent:

  train          `train.py` end to end on the built-in ALFWorld with the paper's coefficients (SDAR, KL to the
                 reference model, entropy), once per `--precisions` x `--fast_decode` setting: per-phase seconds
                 and peak memory (`perf/*`), decode tokens/s, and the first mini-batch's `approx_kl` and
                 `clip_frac`. That mini-batch runs at the rollout weights, so both should be about 0 (targets
                 1e-3 and 1 %): more means the scoring and training forwards disagree numerically.
  greedy         the fast decode path (static cache, compiled step) against the plain dynamic cache under greedy
                 decoding: the same tokens, or a divergence only where the two chosen tokens' logits tie.
  teacher_cache  teacher log-probs with and without the shared-prefix cache (`teacher_cache.py`): under float32
                 within 1e-4; under bf16 no further from the plain pass than bf16 itself is from float32.
  decode         `tools/bench.py`'s decode: ms per step of plain `generate` against fast decode (targets on CUDA:
                 5x at 64 rows, 3x at 256).
  micro_step     `tools/bench.py`'s SDAR micro-step (forward+backward+AdamW) at `--micro_rows` x `--micro_len`
                 tokens, chunked log-probs, gradient checkpointing: peak memory (target on CUDA <= 24 GiB),
                 tokens/s, and model FLOP utilisation where the GPU's peak is known.
  estimate       (for a CPU rehearsal) the micro-step's peak at a few small sizes, fitted linearly in tokens and
                 extrapolated to `--micro_rows` x `--micro_len`, plus the weights of policy and reference.

Writes `<out>/check.json` (the command, the commit, the device, every number, every check with its
target and verdict) and `<out>/check.md` (the checks as a table). Exit code 0 when every check that ran
passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import torch

from tools import bench
from tools.benchlib import autocast, load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("train", "greedy", "teacher_cache", "decode", "micro_step", "estimate")
# Dense bf16 tensor-core peaks (NVIDIA data sheets, SXM parts), for model FLOP utilisation.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
DECODE_SPEEDUP_TARGETS = {64: 5.0, 256: 3.0}
# option: (CPU default, CUDA default)
DEFAULTS = {
    "budget_s": (3600, 480), "precisions": ("no,bf16", "bf16"), "fast_decode": ("off,on", "on"),
    "tasks": (2, 16), "group": (2, 8), "turns": (2, 4), "new_tokens": (16, 256), "iterations": (1, 2),
    "eval_tasks": (2, 16), "mini_batch": (8, 256), "micro_batch": (4, 8),
    "greedy_rows": (2, 64), "greedy_tokens": (16, 64), "greedy_variants": ("static,compiled", "static,compiled"), "cache_groups": (2, 8), "cache_rows": (2, 8),
    "decode_batches": ("4", "64,256"), "decode_prompt": (128, 1024), "decode_tokens": (16, 128),
    "micro_rows": (16, 16), "micro_len": (2048, 2048), "estimate_lengths": ("512,1024", "512,1024"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for check.json and check.md")
    parser.add_argument("--shape", default="qwen2.5-0.5b", help="tinymodel.SHAPES name of the random model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sections", default=None, help=f"comma-separated, of {', '.join(SECTIONS)} (default: all "
                        "on CUDA; all but decode and micro_step on CPU, where estimate stands in for micro_step)")
    for name, (cpu, cuda) in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=type(cpu), help=f"default {cpu} on CPU, {cuda} on CUDA")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    cuda = args.device == "cuda"
    for name, (cpu_value, cuda_value) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, cuda_value if cuda else cpu_value)
    if args.sections is None:
        args.sections = ",".join(s for s in SECTIONS if cuda or s not in ("decode", "micro_step"))
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    return args


def commit() -> str:
    """The checkout's commit, with '+changes' when the work tree differs from it."""
    def git(*words):
        return subprocess.run(["git", *words], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (CPU)"


def check(name: str, value, target: str, passed: bool) -> dict:
    return {"name": name, "value": value, "target": target, "pass": bool(passed)}


# --- train: the real script -------------------------------------------------------------------------------

def train_flags(args, model_dir: str, output_dir: str, precision: str, fast: str) -> list[str]:
    """One train.py run at the paper's coefficients (preset paper) with this check's small sizes."""
    sizes = {"iterations": args.iterations, "tasks_per_iter": args.tasks, "group_size": args.group,
             "max_turns": args.turns, "max_new_tokens": args.new_tokens, "eval_tasks": args.eval_tasks,
             "mini_batch_size": args.mini_batch, "micro_batch_size": args.micro_batch}
    flags = ["--model", model_dir, "--output_dir", output_dir, "--preset", "paper", "--env_name", "alfworld",
             "--mixed_precision", precision, "--fast_decode", str(fast == "on"), "--eval_every", "0",
             "--eval_teacher", "False", "--plot", "False", "--keep_checkpoints", "1"]
    return flags + [part for name, value in sizes.items() for part in (f"--{name}", str(value))]


def run_train(args, model_dir: str, precision: str, fast: str, seconds_left: float) -> dict:
    """train.py in a subprocess: its first iteration's metrics, the last row's evaluation, max RSS, wall time."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, os.path.join(ROOT, "train.py"),
                   *train_flags(args, model_dir, output_dir, precision, fast)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if args.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        try:
            _, stderr = process.communicate(timeout=max(30.0, seconds_left))
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return {"error": f"stopped at the time budget ({seconds_left:.0f} s left)"}
        wall = time.perf_counter() - start
        rows = []
        path = os.path.join(output_dir, "metrics.jsonl")
        if os.path.exists(path):
            rows = [json.loads(line) for line in open(path) if line.strip()]
        if process.returncode != 0 or not rows:
            return {"error": (stderr.strip().splitlines() or ["no output"])[-1][:300], "exit_code": process.returncode}
    first = next(row for row in rows if row["iteration"] == 1)
    keep = [key for key in first if key.startswith(("perf/", "pg/first_minibatch_"))]
    keep += ["train/step_samples", "loss/pg", "loss/kl", "loss/sdar", "grad_norm"]
    return {"wall_s": wall, "first_iteration": {key: first.get(key) for key in keep},
            "eval/success": rows[-1].get("eval/success"), "iterations": rows[-1]["iteration"]}


def train_section(args, model_dir: str, budget, report) -> None:
    for precision in args.precisions.split(","):
        for fast in args.fast_decode.split(","):
            label = f"train {precision} fast_decode={fast}"
            if budget.spent():
                report["skipped"].append(label)
                continue
            result = run_train(args, model_dir, precision, fast, budget.left())
            result.update(precision=precision, fast_decode=fast)
            report["train"].append(result)
            if "error" in result:
                report["checks"].append(check(f"{label}: runs", result["error"], "exit 0", False))
                continue
            first = result["first_iteration"]
            report["checks"] += [
                check(f"{label}: first mini-batch approx_kl", first["pg/first_minibatch_approx_kl"], "< 1e-3",
                      abs(first["pg/first_minibatch_approx_kl"]) < 1e-3),
                check(f"{label}: first mini-batch clip_frac", first["pg/first_minibatch_clip_frac"], "< 0.01",
                      first["pg/first_minibatch_clip_frac"] < 0.01),
                check(f"{label}: eval/success logged", result["eval/success"], "a number",
                      isinstance(result["eval/success"], float))]


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


class Budget:
    """Seconds left of `--budget_s`, counted from the first check (the model's build is start-up)."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.start)

    def spent(self) -> bool:
        return self.left() <= 0


def write_report(args, report: dict) -> None:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "check.json"), "w") as handle:
        json.dump(report, handle, indent=1)
    lines = ["| check | value | target | pass |", "| --- | --- | --- | --- |"]
    for item in report["checks"]:
        value = f"{item['value']:.3g}" if isinstance(item["value"], float) else str(item["value"])
        lines.append(f"| {item['name']} | {value} | {item['target']} | {'yes' if item['pass'] else '**no**'} |")
    lines += [f"| skipped at the time budget: {name} | | | |" for name in report["skipped"]]
    with open(os.path.join(args.out, "check.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    from transformers.utils import logging
    logging.disable_progress_bar()
    import accelerate
    import transformers

    device = torch.device(args.device)
    sections = args.sections.split(",")
    report = {"command": "python -m tools.gpu_check " + " ".join(args.argv), "commit": commit(),
              "device": device_name(device), "shape": args.shape, "budget_s": args.budget_s,
              "versions": {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "accelerate": accelerate.__version__},
              "checks": [], "skipped": [], "train": [], "greedy": [], "teacher_cache": [], "estimate": []}
    with tempfile.TemporaryDirectory() as model_dir:
        start = time.perf_counter()
        bench.save_random_model(SimpleNamespace(shape=args.shape, vocab_size=None), model_dir)
        report["startup_s"] = time.perf_counter() - start
        budget = Budget(args.budget_s)
        for section in sections:
            if budget.spent() and section != "train":
                report["skipped"].append(section)
                continue
            print(f"gpu_check: {section} ({budget.left():.0f} s of the budget left)", flush=True)
            if section == "train":
                train_section(args, model_dir, budget, report)
            elif section in ("greedy", "teacher_cache"):
                tokenizer, model = load(model_dir, device, torch.float32)
                if section == "greedy":
                    for precision in args.precisions.split(","):
                        greedy_section(args, model, tokenizer, precision, report)
                else:
                    teacher_cache_section(args, model, tokenizer, report)
                del model
                bench.release_memory(device)
            elif section == "decode":
                decode_check(args, model_dir, report)
            elif section == "micro_step":
                micro_step_section(args, model_dir, report)
            else:
                estimate_section(args, model_dir, report)
        report["checks_s"] = time.perf_counter() - budget.start
    write_report(args, report)
    return 0 if all(item["pass"] for item in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
