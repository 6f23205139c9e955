"""cleanrl-style smoke tests: the real train.py in a subprocess, for every method and env, plus resume,
multi-process invariance and fast failure on bad configs."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

FAST = ["--tasks_per_iter", "2", "--group_size", "2", "--iterations", "2", "--max_turns", "2",
        "--max_new_tokens", "6", "--max_prompt_length", "384", "--eval_tasks", "2", "--eval_every", "1",
        "--mini_batch_size", "4", "--micro_batch_size", "2", "--save_every", "1", "--lr", "1e-3"]


def run_train(args, timeout=300, launcher=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = (launcher or [sys.executable]) + [os.path.join(ROOT, "train.py")] + args
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


def check_run(result, output_dir, iterations=2):
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(output_dir)
    assert [r["iteration"] for r in rows] == list(range(iterations + 1))
    for row in rows:
        for key, value in row.items():
            assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
    for key in ("train/reward", "train/success", "loss/pg", "grad_norm", "perf/iter_s", "eval/success"):
        assert key in rows[-1], key
    with open(os.path.join(output_dir, "final", "sdar_config.json")) as handle:
        assert json.load(handle)["output_dir"] == output_dir            # the run's config travels with its model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    for folder in (os.path.join(output_dir, "final"), os.path.join(output_dir, "checkpoints", f"iter_{iterations:06d}", "model")):
        AutoModelForCausalLM.from_pretrained(folder)
        AutoTokenizer.from_pretrained(folder)
    return rows


METHODS = ["sdar", "grpo", "grpo_opsd", "opsd", "skill_grpo", "skill_sd", "rlsd"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_alfworld(method, model_dir, tmp_path):
    result = run_train(FAST + ["--model", model_dir, "--method", method, "--output_dir", str(tmp_path)])
    rows = check_run(result, str(tmp_path))
    for phase in ("eval student @ 0", "eval teacher @ 0", "eval student @ 1", "eval student @ 2"):
        assert f"{phase}: " in result.stderr, phase                    # every evaluation shows its progress
    assert "preset: paper (the model is not the embedded agent)" in result.stdout
    if method in ("sdar", "grpo_opsd", "opsd"):
        assert "sdar/gate_mean" in rows[-1] and "loss/sdar" in rows[-1]
        histograms = [json.loads(line) for line in open(os.path.join(tmp_path, "gate_hist.jsonl"))]
        assert [h["iteration"] for h in histograms] == [1, 2]
        for h in histograms:
            tokens = sum(h["gap_action"]) + sum(h["gap_other"])
            assert tokens > 0 and tokens == sum(h["gate_action"]) + sum(h["gate_other"])
    assert 0.0 <= rows[0]["eval/teacher_success"] <= 1.0 and "eval/teacher_invalid_rate" in rows[0]
    if method == "grpo_opsd":
        assert rows[-1]["sdar/gate_mean"] == pytest.approx(0.5)
    if method == "skill_sd":
        assert "loss/skill_sd" in rows[-1]


@pytest.mark.parametrize("env_name,extra", [
    ("webshop", []), ("search", []),
    ("search", ["--divergence", "jsd", "--gate", "soft_or"]),
    ("webshop", ["--divergence", "reverse_kl", "--gate", "entropy", "--teacher_context", "in_prompt",
                 "--skill_retrieval", "ucb", "--loss_agg", "seq-mean-token-mean"]),
    ("alfworld", ["--parity", "released"]),                       # every switch the released code's way
    ("webshop", ["--parity", "released", "--teacher_context", "in_prompt"]),
    ("search", ["--parity", "released", "--final_eval_tasks", "3"]),
])
def test_every_env_and_variant_runs(env_name, extra, model_dir, tmp_path):
    result = run_train(FAST + ["--model", model_dir, "--env_name", env_name, "--output_dir", str(tmp_path)] + extra)
    check_run(result, str(tmp_path))


def test_a_final_evaluation_covers_more_tasks_than_the_envs(model_dir, tmp_path):
    """final_eval_tasks 5 with 2 eval envs: played in chunks, logged as final/* (per data source) in the last row."""
    result = run_train(FAST + ["--model", model_dir, "--env_name", "search", "--output_dir", str(tmp_path),
                               "--final_eval_tasks", "5"])
    rows = check_run(result, str(tmp_path))
    assert "final/success" in rows[-1] and "final/success" not in rows[-2]
    assert any(key.startswith("final/success/") for key in rows[-1])
    assert rows[-1]["final/episode_length"] > 0


def _weights(folder):
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, "model.safetensors"))


def test_resume_matches_an_uninterrupted_run(model_dir, tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    args = FAST + ["--model", model_dir, "--eval_every", "0"]
    three = [a if a != "2" or args[i - 1] != "--iterations" else "3" for i, a in enumerate(args)]
    assert run_train(three + ["--output_dir", straight]).returncode == 0
    assert run_train(args + ["--output_dir", split]).returncode == 0
    result = run_train(three + ["--output_dir", split, "--resume", "true"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming from {os.path.join(split, 'checkpoints', 'iter_000002')}: iteration 2 of 3 done" in result.stdout
    a, b = _weights(os.path.join(straight, "final")), _weights(os.path.join(split, "final"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert [r["iteration"] for r in read_metrics(split)] == [1, 2, 3]


# Several CPU processes: `--multi_gpu` picks accelerate's multi-process launcher (torchrun); the scripts'
# Accelerator(cpu=True) then runs DDP over gloo. `--cpu` would start ONE process (accelerate 1.16's simple launcher).
LAUNCH_CPU_PROCESSES = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def update_deltas(tmp_path, processes, loss_agg, micro, launcher=None):
    """Parameter changes of one update by tests/update_check.py (one process: in this one; `launcher`:
    the command that starts several, default LAUNCH_CPU_PROCESSES); checks that it ran on `processes`."""
    out = str(tmp_path / f"delta-{processes}-{micro}-{loss_agg}.pt")
    if processes == 1:
        import update_check
        update_check.main(out, loss_agg, micro)
    else:
        command = (launcher or LAUNCH_CPU_PROCESSES) + [os.path.join(ROOT, "tests", "update_check.py"), out, loss_agg,
                                                        str(micro)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(29500 + os.getpid() % 1000)}
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    found = torch.load(out, weights_only=True)
    assert found["processes"] == processes
    return found["deltas"]


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean"])
def test_two_processes_make_the_same_update_as_one(loss_agg, tmp_path):
    """float32 sums in a different order differ by about 1e-7 relative; 1e-5 leaves a wide margin while a
    wrong normalisation (a factor of 2) or a missed gradient would fail by orders of magnitude."""
    one, two = update_deltas(tmp_path, 1, loss_agg, 2), update_deltas(tmp_path, 2, loss_agg, 2)
    assert any(d.abs().max() > 1e-4 for d in one)                 # the update is not trivially zero
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_gradient_accumulation_1x8_equals_8x1(tmp_path):
    whole, pieces = update_deltas(tmp_path, 1, "token-mean", 8), update_deltas(tmp_path, 1, "token-mean", 1)
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_two_process_training_iteration(model_dir, tmp_path):
    args = FAST + ["--model", model_dir, "--output_dir", str(tmp_path), "--iterations", "1", "--eval_tasks", "3"]
    result = run_train(args, launcher=LAUNCH_CPU_PROCESSES)
    rows = check_run(result, str(tmp_path), iterations=1)
    assert not any(key.startswith(("train/success/", "eval/success/")) for key in rows[-1])  # only logged with 1 process


@pytest.mark.parametrize("args,needle", [
    (["--env_name", "minecraft"], "env_name"),
    (["--group_size", "1"], "group_size"),
    (["--mini_batch_size", "6", "--micro_batch_size", "4"], "micro_batch_size"),
    (["--model", "/nonexistent/model"], "model"),
    (["--env_kwargs", "not json"], "env_kwargs"),
    (["--method", "ppo"], "method"),
    (["--mixed_precision", "fp16"], "mixed_precision"),
    (["--resume", "true", "--overwrite", "true"], "overwrite"),
])
def test_bad_config_fails_fast(args, needle, tmp_path):
    result = run_train(args + ["--output_dir", str(tmp_path)], timeout=60)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


def test_bad_yaml_fails_fast(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("group_size: 8\nlearning_rate: 0.1\n")
    result = run_train(["--config", str(path)], timeout=60)
    assert result.returncode == 2 and "learning_rate" in result.stderr
    path.write_text("group_size: eight\n")
    result = run_train(["--config", str(path)], timeout=60)
    assert result.returncode == 2 and "group_size" in result.stderr


@pytest.mark.parametrize("name", ["alfworld", "webshop", "search"])
def test_paper_configs_parse_and_validate_on_eight_processes(name, tmp_path, monkeypatch):
    """The paper configs run the real benchmarks; with their data where the README says (stand-in
    folders here: an ALFWorld json_2.1.1, a WebShop checkout root, a Search-R1 data folder) they validate."""
    from cli import parse_config
    from config import validate
    if name == "alfworld":
        pytest.importorskip("alfworld", reason="the real ALFWorld needs pip install alfworld==0.4.2")
    (tmp_path / "json_2.1.1").mkdir()
    (tmp_path / "web_agent_site").mkdir()
    (tmp_path / "test.jsonl").write_text("")
    for variable in ("ALFWORLD_DATA", "WEBSHOP_PATH", "SEARCH_R1_DATA"):
        monkeypatch.setenv(variable, str(tmp_path))
    cfg = parse_config(["--config", os.path.join(ROOT, "configs", f"{name}.yaml"), "--model", "Qwen/Qwen2.5-0.5B-Instruct"])
    validate(cfg, world_size=8)
    assert (cfg.env_name, cfg.env_backend, cfg.group_size, cfg.lr, cfg.iterations, cfg.sdar_coef, cfg.beta) == \
        (name, "real", 8, 1e-6, 150, 0.01, 5.0)


def test_accelerate_configs_are_complete():
    import yaml
    folder = os.path.join(ROOT, "configs", "accelerate")
    kinds = {}
    for name in sorted(os.listdir(folder)):
        config = yaml.safe_load(open(os.path.join(folder, name)))
        assert {"distributed_type", "num_processes", "mixed_precision"} <= set(config), name
        kinds[name] = config["distributed_type"]
    assert sorted(kinds.values()) == ["DEEPSPEED", "DEEPSPEED", "FSDP", "MULTI_GPU", "NO"]


def test_evaluation_depends_only_on_the_weights(model_dir, tmp_path):
    """Same seed and weights, different methods: the iteration-0 evaluation must be identical."""
    rows = []
    for method in ("grpo", "sdar"):
        out = str(tmp_path / method)
        args = FAST + ["--model", model_dir, "--method", method, "--output_dir", out, "--eval_tasks", "6"]
        result = run_train([a if a != "2" or args[i - 1] != "--iterations" else "1" for i, a in enumerate(args)])
        assert result.returncode == 0, result.stderr[-2000:]
        rows.append({k: v for k, v in read_metrics(out)[0].items() if k.startswith("eval/")})
    assert rows[0] == rows[1] and "eval/return" in rows[0]
