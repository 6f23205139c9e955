"""Dress rehearsals: `train.py` end to end on the real-benchmark code paths, at toy size, on a clean CPU
machine. ALFWorld runs the `alfworld` package's TextWorld engine on games that `envs.alfworld.export`
wrote; Search-QA reads Search-R1-style parquet rows and searches a retriever server over HTTP
(`python -m envs.search.server`, on a free loopback port); and the LoRA path runs once."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from test_train import FAST, check_run, read_metrics, run_train

ONE = [a if a != "2" or FAST[i - 1] != "--iterations" else "1" for i, a in enumerate(FAST)]


def test_alfworld_real_backend_on_exported_games(model_dir, tmp_path, monkeypatch):
    pytest.importorskip("alfworld", reason="needs pip install alfworld==0.4.2")
    data = tmp_path / "alfworld_data"
    subprocess.run([sys.executable, "-m", "envs.alfworld.export", "--root", str(data), "--splits", "train",
                    "valid_seen", "--num", "3", "--room-size", "small"], cwd=ROOT, check=True, capture_output=True)
    monkeypatch.setenv("ALFWORLD_DATA", str(data))
    out = str(tmp_path / "run")
    result = run_train(ONE + ["--model", model_dir, "--env_name", "alfworld", "--env_backend", "real",
                              "--output_dir", out])
    rows = check_run(result, out, iterations=1)
    assert any(key.startswith("eval/success/pick_") for key in rows[-1])   # task types of the real games


def search_r1_rows(env) -> tuple[list[dict], list[dict]]:
    """Train and test rows in Search-R1's columns, made from built-in questions (so the built-in server
    holds their answers); the test rows are sorted by source, as in Search-R1's merged test file."""
    def row(i, question, source):
        return {"id": f"{source}_{i}", "question": question.text, "data_source": source,
                "golden_answers": list(question.answers)}
    train = [row(i, q, ("nq", "hotpotqa")[i % 2]) for i, q in enumerate(env.questions["train"][:12])]
    test = [row(i, q, source) for source in ("hotpotqa", "nq", "popqa")
            for i, q in enumerate(env.questions["test"][:12]) if ("hotpotqa", "nq", "popqa")[i % 3] == source]
    return train, test


@pytest.fixture
def retriever_server():
    """`python -m envs.search.server --port 0` in its own process; yields its /retrieve URL."""
    process = subprocess.Popen([sys.executable, "-m", "envs.search.server", "--port", "0", "--num-people", "60"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = process.stdout.readline()
        assert "/retrieve" in line, line
        yield line.split(" at ")[-1].strip()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_search_real_backend_against_the_server_over_http(model_dir, tmp_path, retriever_server):
    pa = pytest.importorskip("pyarrow", reason="Search-R1's parquet files need pyarrow (requirements.txt)")
    import pyarrow.parquet as pq

    from envs.search.engine import BuiltinSearchQA
    data = tmp_path / "search_r1"
    data.mkdir()
    for name, rows in zip(("train", "test"), search_r1_rows(BuiltinSearchQA(num_people=60))):
        pq.write_table(pa.Table.from_pylist(rows), str(data / f"{name}.parquet"))
    out = str(tmp_path / "run")
    kwargs = f'{{"data_path": "{data}", "retriever_url": "{retriever_server}", "timeout": 10}}'
    result = run_train(ONE + ["--model", model_dir, "--env_name", "search", "--env_backend", "real",
                              "--env_kwargs", kwargs, "--eval_tasks", "3", "--output_dir", out])
    rows = check_run(result, out, iterations=1)
    # the first three test rows of the stratified panel cover all three sources
    assert {k for k in rows[-1] if k.startswith("eval/success/")} == {
        "eval/success/hotpotqa", "eval/success/nq", "eval/success/popqa"}


def test_lora_path(model_dir, tmp_path):
    pytest.importorskip("peft", reason="LoRA needs peft (requirements.txt)")
    out = str(tmp_path / "run")
    result = run_train(ONE + ["--model", model_dir, "--lora_r", "4", "--output_dir", out])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "eval/success" in read_metrics(out)[-1]
