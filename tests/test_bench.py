"""tools/bench.py smoke test: the real command in a subprocess at the smallest sizes, every section, and every
number it prints is finite. (Chunked against unchunked token_logprobs, values and gradients, is
tests/test_opsd.py's job.)"""

import json
import math
import os
import subprocess
import sys

from conftest import ROOT

SMALL = ["--shape", "tiny", "--device", "cpu", "--variants", "hf_generate,rollout_dynamic,rollout_static",
         "--batch_sizes", "2", "--prompt_len", "16", "--new_tokens", "4", "--checkpointing", "on",
         "--train_batch", "2", "--train_prompt_len", "16", "--train_response_len", "16", "--memory_vocab", "2048",
         "--memory_batch", "1", "--memory_len", "32", "--iter_tasks", "1", "--iter_group", "2", "--iter_turns", "1",
         "--iter_new_tokens", "4"]


def test_bench_prints_finite_rows_for_every_section(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([sys.executable, "-m", "tools.bench", *SMALL], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {row["section"] for row in rows} == {"decode", "train", "memory", "iteration"}
    for row in rows:
        assert "error" not in row, row
        numbers = [v for v in row.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        assert numbers and all(math.isfinite(v) for v in numbers), row
    decode = {row["variant"]: row for row in rows if row["section"] == "decode"}
    assert set(decode) == {"hf_generate", "rollout_dynamic", "rollout_static"}
    assert all(row["steps"] >= 1 and row["ms_per_step"] > 0 for row in decode.values())
    train = {row["variant"] for row in rows if row["section"] == "train"}
    assert train == {"old_logp", "teacher_logp", "micro_step"}
    difference = [row for row in rows if row.get("variant") == "max_abs_diff"][0]
    assert difference["logp"] < 1e-4 and difference["grad"] < 1e-4
    iteration = [row for row in rows if row["section"] == "iteration"][0]
    assert all(iteration[k] >= 0 for k in ("rollout_s", "old_s", "ref_s", "teacher_s", "update_s"))
    assert "## decode" in result.stdout and "## iteration" in result.stdout          # the tables
