"""One command to measure where an SDAR iteration spends its time and memory, on CPU or one GPU.

    python -m tools.bench --shape tiny --device cpu                 # minutes on a laptop
    python -m tools.bench --shape qwen2.5-0.5b --device cuda        # the GPU table (bf16 decode)
    python -m tools.bench --model /path/to/checkpoint --device cuda --sections decode

Sections (each prints a JSON line per row as it goes, then a table):
  decode     ms per decode step and tokens/s of plain `model.generate` (dynamic cache) against the
             project's rollout path (`generation.generate_responses`) with a dynamic cache, a static cache,
             and a static cache with a compiled decode step; the first call's extra time (compile and
             warm-up), graphs compiled, host syncs per step (CUDA), and a run of shrinking turns that
             shows the compiled path does not recompile every turn.
  train      the old and teacher log-prob forwards and the SDAR micro-step (student forward+backward of
             `update.micro_step_loss`), tokens/s and peak memory, with and without gradient checkpointing.
  memory     chunked against unchunked `opsd.token_logprobs` with backward at a large vocabulary: peak
             memory and the largest difference of values and gradients.
  iteration  one real `train.py` iteration on a built-in env: rollout, old, ref, teacher, update seconds,
             with the teacher's shared-prefix cache off and on (the same samples; medians of --iter_repeats).
Nothing is downloaded: `--shape` builds a random model (tinymodel.SHAPES) and a tokenizer trained on the
built-in envs' text. Peak memory is `torch.cuda.max_memory_allocated` on CUDA; on CPU the resident-set
high-water mark of a fresh process per variant (reset through /proc/self/clear_refs where allowed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from tools.benchlib import chunked_difference, load, random_prompts, run_worker, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the repository
VARIANTS = ("hf_generate", "rollout_dynamic", "rollout_static", "rollout_compiled")
SECTIONS = ("decode", "train", "memory", "iteration")
QWEN_VOCAB = 151936
# option: (CPU default, CUDA default)
DEFAULTS = {
    "batch_sizes": ("4,16", "16,64,256"), "prompt_len": (128, 1024), "new_tokens": (32, 256),
    "train_batch": (4, 16), "train_prompt_len": (128, 1024), "train_response_len": (128, 1024),
    "memory_vocab": (32768, QWEN_VOCAB), "memory_batch": (2, 8), "memory_len": (1024, 1024),
    "iter_tasks": (2, 4), "iter_group": (2, 8), "iter_turns": (2, 3), "iter_new_tokens": (16, 128),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a folder for from_pretrained (default: a random model of --shape)")
    parser.add_argument("--shape", default="tiny", help="tinymodel.SHAPES name for a random model")
    parser.add_argument("--vocab_size", type=int, help="vocabulary of the --shape model (default: 151936 for "
                        "qwen2.5-0.5b, else the tokenizer's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="decode variants to run")
    parser.add_argument("--turns", type=int, default=4, help="shrinking turns run on the compiled path")
    parser.add_argument("--chunk_size", type=int, default=128, help="logprob_chunk_size of the train section")
    parser.add_argument("--checkpointing", default="off,on", help="gradient checkpointing in the train section")
    parser.add_argument("--mixed_precision", default="auto", choices=("auto", "bf16", "no"),
                        help="bf16 autocast of the train section, as train.py's flag (auto: on CUDA only)")
    parser.add_argument("--env", default="alfworld", help="built-in env of the iteration section")
    parser.add_argument("--iter_fast_decode", action="store_true", help="iteration with train.py --fast_decode")
    parser.add_argument("--iter_embedded_sizes", action="store_true",
                        help="iteration at the embedded default's sizes (config.EMBEDDED_DEFAULTS, alfworld: env "
                             "kwargs, history, turns, new tokens, tasks x rollouts, mini/micro batch, lr)")
    parser.add_argument("--iter_teacher_cache", default="off,on",
                        help="iteration with teacher_prefix_cache off and/or on (one train.py run each)")
    parser.add_argument("--iter_repeats", type=int, default=1,
                        help="iteration runs per teacher_prefix_cache setting (alternated; medians reported)")
    for name, (cpu, cuda) in DEFAULTS.items():
        parser.add_argument(f"--{name}", type=type(cpu), help=f"default {cpu} on CPU, {cuda} on CUDA")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for name, (cpu, cuda) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, cuda if args.device == "cuda" else cpu)
    return args


def env_texts(per_env: int = 8) -> list[str]:
    """Prompts of every built-in env and their skill files: text to train a stand-in tokenizer on."""
    from envs import ENV_NAMES, make_env
    from envs.skills import load_skills

    texts = ["<think>The apple is in the fridge.</think><action>go to fridge 1</action>",
             "<think>Look it up.</think><search>founder</search><answer>1871</answer>"]
    for name in ENV_NAMES:
        env = make_env(name)
        for seed in range(per_env):
            observation, info = env.reset(seed, split="train")
            texts.append(env.render_prompt(observation, [], info, 2))
        texts.extend(load_skills(name).values())
    return texts


def save_random_model(args, folder: str) -> None:
    from tools.tinymodel import build_tokenizer, tiny_model

    tokenizer = build_tokenizer(env_texts() * 4, vocab_size=4096)
    vocab = args.vocab_size or (QWEN_VOCAB if args.shape == "qwen2.5-0.5b" else None)
    tiny_model(tokenizer, args.shape, seed=0, vocab_size=vocab).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def compiled_graphs() -> int:
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def host_syncs(fn) -> int:
    """How many synchronising CUDA calls `fn` makes (CUDA sync debug mode warns on each)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def decode_runner(model, tokenizer, variant: str, prompts: list[list[int]]):
    """run(new_tokens) -> decode steps actually taken, for one variant on fixed prompts."""
    from transformers import GenerationConfig

    from generation import eos_token_ids, generate_responses
    from rollout import RolloutConfig

    device = next(model.parameters()).device
    if variant == "hf_generate":
        input_ids = torch.tensor(prompts, device=device)                 # (B, P) equal lengths, no padding
        eos = sorted(eos_token_ids(model, tokenizer))

        def run(new_tokens: int) -> int:
            config = GenerationConfig(max_new_tokens=new_tokens, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                      repetition_penalty=1.0, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=config)              # (B, P+n)
            return out.shape[1] - input_ids.shape[1]
        return run
    options = {"rollout_dynamic": {}, "rollout_static": dict(cache_implementation="static", compile_decode=False),
               "rollout_compiled": dict(cache_implementation="static", compile_decode=True, pad_to_multiple_of=64)}

    def run(new_tokens: int, rows: list[list[int]] | None = None) -> int:
        config = RolloutConfig(max_new_tokens=new_tokens, max_prompt_length=10**9, **options[variant])
        return max(len(r) for r in generate_responses(model, tokenizer, rows or prompts, config, ("</action>",)))
    return run


def measure_decode(run, batch: int, args, device: torch.device, count_syncs: bool) -> dict:
    """First call (compile and warm-up included), a prefill-only call, then a timed full call."""
    graphs = compiled_graphs()
    _, first = timed(lambda: run(args.new_tokens), device)
    _, prefill = timed(lambda: run(1), device)
    steps, total = timed(lambda: run(args.new_tokens), device)
    ms = (total - prefill) / max(1, steps - 1) * 1e3                  # decode steps only, prefill taken out
    row = dict(batch=batch, prompt_len=args.prompt_len, steps=steps, ms_per_step=ms, decode_tok_s=batch * 1e3 / ms,
               tok_s=batch * steps / total, prefill_s=prefill, total_s=total, warmup_s=first - total,
               graphs=compiled_graphs() - graphs)
    if count_syncs:
        row["syncs_per_step"] = host_syncs(lambda: run(args.new_tokens)) / max(1, steps)
    return row


def decode_section(args, model, tokenizer, emit) -> None:
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    variants = [v for v in args.variants.split(",") if v]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    for index, batch in enumerate(batches):
        prompts = random_prompts(tokenizer, batch, args.prompt_len, generator)
        baseline = None
        for variant in variants:
            try:
                row = measure_decode(decode_runner(model, tokenizer, variant, prompts), batch, args, device,
                                     count_syncs=device.type == "cuda" and index == 0)
            except Exception as error:                                  # a variant this machine cannot run
                emit(dict(section="decode", variant=variant, batch=batch, error=str(error).splitlines()[0][:200]))
                continue
            baseline = row["ms_per_step"] if variant == "hf_generate" else baseline
            emit(dict(section="decode", variant=variant, **row,
                      speedup=baseline / row["ms_per_step"] if baseline else None))
    if "rollout_compiled" in variants and args.turns > 0:
        run = decode_runner(model, tokenizer, "rollout_compiled", [])
        for turn in range(args.turns):                                  # an episode: fewer rows, new lengths
            rows = max(1, max(batches) * (args.turns - turn) // args.turns - turn)
            lengths = torch.randint(args.prompt_len // 2, args.prompt_len * 5 // 4 + 1, (rows,), generator=generator)
            prompts = [random_prompts(tokenizer, 1, n, generator)[0] for n in lengths.tolist()]
            graphs = compiled_graphs()
            steps, seconds = timed(lambda: run(args.new_tokens, prompts), device)
            emit(dict(section="turns", variant="rollout_compiled", turn=turn, rows=rows,
                      longest_prompt=int(lengths.max()), steps=steps, seconds=seconds,
                      graphs=compiled_graphs() - graphs))


def release_memory(device: torch.device) -> None:
    """Drop compiled graphs (and their CUDA graph pools) and cached blocks before the next process runs."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def worker_rows(args, worker: str, model_dir: str, emit) -> list[dict]:
    """Run one measurement in a fresh process (honest peak memory) and re-emit its rows."""
    command = [sys.executable, "-m", "tools.bench", *args.argv, "--worker", worker, "--model", model_dir]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        emit(row)
    if result.returncode != 0 or not rows:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        emit(dict(section=worker.split(":")[0], variant=worker, error=tail[:200]))
    return rows


ITERATION_TIMES = ("rollout_s", "old_s", "ref_s", "teacher_s", "update_s", "iter_s", "rollout_tok_s")
ITERATION_SIZES = ("env_kwargs", "history_length", "max_turns", "max_new_tokens", "tasks_per_iter", "group_size",
                   "mini_batch_size", "micro_batch_size", "lr")


def iteration_flags(args, model_dir: str, output_dir: str, teacher_cache: str) -> list[str]:
    """train.py flags for one iteration: bench's --iter_* sizes, or the embedded default's."""
    flags = ["--model", model_dir, "--output_dir", output_dir, "--env_name", args.env, "--iterations", "1",
             "--eval_every", "0", "--eval_tasks", "1", "--logprob_chunk_size", str(args.chunk_size), "--plot", "False",
             "--teacher_prefix_cache", "True" if teacher_cache == "on" else "False"]
    flags += ["--fast_decode", "True"] if args.iter_fast_decode else []
    if args.iter_embedded_sizes:
        from config import EMBEDDED_DEFAULTS
        return flags + [part for name in ITERATION_SIZES for part in (f"--{name}", str(EMBEDDED_DEFAULTS[name]))]
    micro = min(8, args.iter_tasks * args.iter_group * args.iter_turns)
    return flags + ["--tasks_per_iter", str(args.iter_tasks), "--group_size", str(args.iter_group), "--max_turns",
                    str(args.iter_turns), "--max_new_tokens", str(args.iter_new_tokens), "--mini_batch_size",
                    str(micro * 2), "--micro_batch_size", str(micro)]


def run_iteration(args, model_dir: str, teacher_cache: str) -> dict:
    """One iteration of the real train.py (subprocess): its perf/* seconds and step samples, or an error."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, os.path.join(ROOT, "train.py"),
                   *iteration_flags(args, model_dir, output_dir, teacher_cache)]
        start = time.perf_counter()
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        path = os.path.join(output_dir, "metrics.jsonl")
        if result.returncode != 0 or not os.path.exists(path):
            return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1][:200]}
        last = [json.loads(line) for line in open(path) if line.strip()][-1]
    row = {key: last.get(f"perf/{key}") for key in ITERATION_TIMES}
    return dict(step_samples=last.get("train/step_samples"), **row, process_s=wall)


def iteration_section(args, model_dir: str, emit) -> None:
    """train.py iterations with teacher_prefix_cache off and on, alternated `--iter_repeats` times: the median
    of each perf/* metric per setting. Every run draws the same tasks and samples (same seed; the teacher does
    not change the rollout), so they do equal work; `teacher_over_old` is the median over runs of the teacher
    pass over the old log-prob pass of the same process (robust to other load on the machine). A last row
    gives the on/off ratios of the medians of the teacher pass and of the whole iteration."""
    settings = [v for v in args.iter_teacher_cache.split(",") if v]
    runs = {setting: [] for setting in settings}
    for _ in range(args.iter_repeats):
        for setting in settings:
            run = run_iteration(args, model_dir, setting)
            if "error" in run:
                emit(dict(section="iteration", env=args.env, teacher_cache=setting, **run))
                return
            runs[setting].append(run)
    medians = {}
    for setting, rows in runs.items():
        medians[setting] = {key: statistics.median(row[key] for row in rows) for key in ITERATION_TIMES}
        emit(dict(section="iteration", env=args.env, teacher_cache=setting, fast_decode=args.iter_fast_decode,
                  runs=len(rows), step_samples=rows[0]["step_samples"], **medians[setting],
                  teacher_over_old=statistics.median(row["teacher_s"] / row["old_s"] for row in rows),
                  process_s=statistics.median(row["process_s"] for row in rows)))
    if {"on", "off"} <= medians.keys():
        emit(dict(section="iteration", env=args.env, teacher_cache="on/off",
                  teacher_s=medians["on"]["teacher_s"] / medians["off"]["teacher_s"],
                  iter_s=medians["on"]["iter_s"] / medians["off"]["iter_s"]))


def print_tables(rows: list[dict]) -> None:
    def cell(value):
        if isinstance(value, float):
            return f"{value:.4g}"
        return "-" if value is None else str(value)

    for section in dict.fromkeys(row["section"] for row in rows):
        chosen = [row for row in rows if row["section"] == section]
        keys = [k for k in dict.fromkeys(k for row in chosen for k in row) if k != "section"]
        table = [keys] + [[cell(row.get(k)) for k in keys] for row in chosen]
        widths = [max(len(line[i]) for line in table) for i in range(len(keys))]
        print(f"\n## {section}")
        for line in table:
            print("  ".join(text.rjust(width) for text, width in zip(line, widths)))


def main(argv=None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging
    logging.disable_progress_bar()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA device is visible", file=sys.stderr)
        return 2
    if args.worker:
        run_worker(args, lambda row: print(json.dumps(row), flush=True))
        return 0
    sections = [s for s in args.sections.split(",") if s]
    rows = []

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or scratch
        if not args.model:
            save_random_model(args, scratch)
        device = torch.device(args.device)
        if "decode" in sections:
            tokenizer, model = load(model_dir, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
            decode_section(args, model, tokenizer, emit)
            del model
            release_memory(device)
        if "train" in sections:
            for checkpointing in args.checkpointing.split(","):
                worker_rows(args, f"train:{checkpointing}", model_dir, emit)
        if "memory" in sections:
            dense, chunked = (worker_rows(args, f"memory:{chunk}", model_dir, emit)
                              for chunk in ("none", args.chunk_size))
            difference = chunked_difference(args, model_dir)
            release_memory(device)
            if dense and chunked:
                difference["peak_ratio"] = dense[0]["extra_mib"] / max(chunked[0]["extra_mib"], 1e-9)
            emit(difference)
        if "iteration" in sections:
            iteration_section(args, model_dir, emit)
    print_tables(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
