"""Reliability of training: non-finite updates, SIGKILL at the worst moments and resume, bad
configurations and damaged checkpoints, safe loading, and multi-process invariance of every loss
aggregation. Faults come from tests/fault_run.py, which patches modules before train.main runs."""

import ast
import dataclasses
import glob
import hashlib
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from urllib.parse import urlparse

import pytest
import torch

from conftest import ROOT
from test_train import FAST, read_metrics, run_train, update_deltas

ITERATIONS = 3
THREE = [a if a != "2" or FAST[i - 1] != "--iterations" else str(ITERATIONS) for i, a in enumerate(FAST)]
THREE += ["--eval_every", "0"]
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@pytest.fixture(scope="module")
def straight(model_dir, tmp_path_factory):
    """An uninterrupted 3-iteration run: the reference every crashed-and-resumed run must equal."""
    out = str(tmp_path_factory.mktemp("straight"))
    result = run_train(THREE + ["--model", model_dir, "--output_dir", out])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def fault_run(point, n, args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, os.path.join(ROOT, "tests", "fault_run.py"), point, str(n)] + args
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def weights(folder):
    from safetensors.torch import load_file
    return load_file(os.path.join(folder, "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def error_line(result):
    """The one `error:` line a failed run prints, with nothing before it but progress bars."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert sum(line.startswith("error") for line in lines) == 1
    return lines[-1]


# ---------------------------------------------------------------- numerical faults


@pytest.fixture
def update_setup(tokenizer, tiny_model_factory):
    """A tiny model, AdamW, 8 synthetic step samples and a config with 2-sample mini-batches (4 steps)."""
    from accelerate import Accelerator

    from config import TrainConfig, resolve
    from update_check import synthetic_experience

    accelerator = Accelerator(cpu=True)
    model = tiny_model_factory(seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    cfg = resolve(TrainConfig(mini_batch_size=2, micro_batch_size=2, kl_coef=0.01, max_bad_steps=3))
    return accelerator, model, optimizer, synthetic_experience(tokenizer), cfg


def run_update(setup, experience=None, state=None):
    from update import update_policy
    accelerator, model, optimizer, default_experience, cfg = setup
    state = {} if state is None else state
    out = update_policy(model, optimizer, accelerator, experience or default_experience, cfg,
                        torch.Generator().manual_seed(0), state)
    return out, state


def test_nan_activations_skip_every_step_then_stop_the_run(update_setup, capsys):
    """A layer that outputs NaN: each step is skipped (weights bitwise unchanged, no optimizer state),
    counted and logged, and the third in a row raises before anything is damaged."""
    _, model, optimizer, *_ = update_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.model.layers[0].mlp.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    state = {}
    with pytest.raises(FloatingPointError, match=r"3 non-finite updates in a row \(loss/pg.*max_bad_steps=3"):
        run_update(update_setup, state=state)
    assert state == {"bad_steps": 3, "skipped_steps": 3}
    assert_same_weights(before, model.state_dict())
    assert not optimizer.state                                   # AdamW never stepped: no moments either
    logged = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning: non-finite")]
    assert [line[-len("(1 in a row)"):] for line in logged] == [f"({k} in a row)" for k in (1, 2, 3)]


def test_one_nan_advantage_skips_only_its_step(update_setup, capsys):
    """A NaN in the first mini-batch: that step is skipped and counted, the other three run, the
    consecutive count resets and the logged losses stay finite (the bad step is left out)."""
    first = torch.randperm(8, generator=torch.Generator().manual_seed(0))[0].item()   # update_policy's order
    _, model, optimizer, experience, _ = update_setup
    experience = dataclasses.replace(experience, advantages=experience.advantages.clone())
    experience.advantages[first] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out, state = run_update(update_setup, experience, state={"skipped_steps": 5})
    assert state == {"bad_steps": 0, "skipped_steps": 6}
    assert out["train/optimizer_steps"] == 3 and out["train/skipped_steps"] == 6
    assert all(isinstance(v, (int, float)) and v == v for v in out.values()), out
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert "optimizer step skipped (1 in a row)" in capsys.readouterr().out


def test_non_finite_run_exits_1_with_one_line_and_clean_checkpoints(model_dir, tmp_path):
    """Through train.py: NaN advantages from the start stop the run with exit 1 and one `error:`
    line, and the checkpoint written meanwhile holds the untouched initial weights."""
    out = str(tmp_path / "nan")
    result = fault_run("nan", 0, THREE + ["--model", model_dir, "--output_dir", out])
    assert result.returncode == 1, result.stderr[-3000:]
    line = error_line(result)
    assert "non-finite updates in a row" in line and "max_bad_steps" in line
    assert "optimizer step skipped" in result.stdout
    from checkpoint import list_checkpoints
    saved = list_checkpoints(out)
    assert saved, "the first iteration ends before the third bad step and is checkpointed"
    with open(os.path.join(saved[-1], "trainer_state.json")) as handle:
        assert json.load(handle)["skipped_steps"] >= 1
    assert_same_weights(weights(model_dir), weights(os.path.join(saved[-1], "model")))


def test_main_maps_run_time_faults_to_one_line_and_exit_1(monkeypatch, capsys):
    import train
    from envs.search.retriever import RetrieverError
    for fault in (FloatingPointError("3 non-finite updates in a row"), RetrieverError("retriever at http://x failed")):
        def broken(cfg, fault=fault):
            raise fault
        monkeypatch.setattr(train, "train", broken)
        assert train.main(["--model", "embedded", "--iterations", "1"]) == 1
        assert capsys.readouterr().err == f"error: {fault}\n"


# ---------------------------------------------------------------- SIGKILL and resume


@pytest.mark.parametrize("point,n,kept", [
    ("optimizer", 2, [1]),       # killed half-way through writing checkpoint 2
    ("update", 2, [1]),          # killed in iteration 2, after its optimizer steps
    ("prune", 1, [2, 3]),        # killed half-way through deleting checkpoint 1 after writing 3
])
def test_sigkill_then_resume_equals_an_uninterrupted_run(point, n, kept, straight, model_dir, tmp_path):
    from checkpoint import list_checkpoints, load_trainer_state
    out = str(tmp_path / "run")
    args = THREE + ["--model", model_dir, "--output_dir", out]
    crashed = fault_run(point, n, args)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    complete = list_checkpoints(out)
    assert [int(os.path.basename(path)[len("iter_"):]) for path in complete] == kept   # at most one iteration lost
    for path in complete:
        load_trainer_state(path)                    # every listed checkpoint reads back
    resumed = run_train(args + ["--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(weights(os.path.join(straight, "final")), weights(os.path.join(out, "final")))
    assert [row["iteration"] for row in read_metrics(out)] == list(range(1, ITERATIONS + 1))
    assert not [name for name in os.listdir(os.path.join(out, "checkpoints")) if name.startswith(".tmp-")]


# ---------------------------------------------------------------- bad configuration and damaged files


def one_line_exit_2(args, timeout=120):
    result = run_train(args, timeout=timeout)
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr[-3000:]
    return error_line(result)


def main_in_process(args, capsys):
    """train.main on bad input, in this process (parsing fails in milliseconds): its one stderr line."""
    import train
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("args,needle", [
    (["--group_size", "eight"], "--group_size"),                 # wrong type on the command line
    (["--resume", "maybe"], "--resume"),
    (["--learning_rate", "0.1"], "--learning_rate"),             # unknown flag
    (["--lr"], "--lr"),                                          # flag without its value
    (["--micro_batch_size", "0"], "micro_batch_size"),           # impossible sizes
    (["--tasks_per_iter", "0"], "tasks_per_iter"),
    (["--max_bad_steps", "0"], "max_bad_steps"),
    (["--max_turns", "0"], "max_turns"),                         # impossible values
    (["--temperature", "-1"], "temperature"),
    (["--lr", "nan"], "lr"),
    (["--dual_clip", "0.5"], "dual_clip"),
    (["--grad_clip", "0"], "grad_clip"),
])
def test_bad_flags_give_one_line_and_exit_2(args, needle, tmp_path, capsys):
    """argparse would print a 60-line usage first; main() keeps only its message (exit 2 either way)."""
    assert needle in main_in_process(args + ["--output_dir", str(tmp_path)], capsys)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("text,needle", [
    ("group_size: [8\n", "line 2"),                              # not YAML
    ("- 1\n- 2\n", "mapping"),                                   # YAML, not a mapping
    ("lr: [1, 2]\n", "lr"),                                      # wrong type
    ("batch_size: 8\n", "batch_size"),                           # unknown key
    ("model: 5\n", "model"),
    ("iterations: null\n", "iterations"),                      # empty value for a required field
])
def test_bad_yaml_gives_one_line_and_exit_2(text, needle, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert needle in main_in_process(["--config", str(path), "--output_dir", str(tmp_path / "out")], capsys)


@pytest.mark.parametrize("args,needle", [
    (["--env_kwargs", '{"room_size": "smal"}'], "env_kwargs: room_size='smal' is unknown; choose one of full, small"),
    (["--env_kwargs", '{"prior_strength": 1.5}'], "env_kwargs: prior_strength=1.5 must be a number in [0, 1]"),
    (["--env_kwargs", '{"max_steps": "eight"}'], "'max_steps': 'eight'"),
    (["--iteratons", "3"], "--iteratons: no such flag; did you mean --iterations?"),
    (["--no_plot"], "--no_plot: no such flag; write --plot false"),
    (["--iter", "3"], "--iter: no such flag"),                   # no abbreviations: what is typed is what runs
])
def test_bad_env_values_and_misspelled_flags_give_one_line_and_exit_2(args, needle, tmp_path, capsys):
    """Values the env class rejects fail in validation (one built-in env is built and reset), and an
    unknown flag names the closest field, all before any model loads."""
    assert needle in main_in_process(args + ["--output_dir", str(tmp_path)], capsys)
    assert not os.listdir(tmp_path)


def test_a_truncated_weights_file_in_a_model_folder_gives_one_line_and_exit_2(model_dir, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    _truncate(folder / "model.safetensors")
    line = main_in_process(["--model", str(folder), "--output_dir", str(tmp_path / "out")], capsys)
    assert line.startswith(f"error: model: {folder / 'model.safetensors'} is damaged (")
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_resume_without_a_checkpoint_is_refused(folder, model_dir, tmp_path):
    """A typo in the output_dir of --resume true must not start a fresh run unnoticed."""
    out = tmp_path / "run"
    if folder == "empty":
        out.mkdir()
    line = one_line_exit_2(THREE + ["--model", model_dir, "--output_dir", str(out), "--resume", "true"])
    there = "does not exist" if folder == "missing" else "holds no complete checkpoint"
    assert f"output_dir: --resume true, but {out} {there}" in line and "leave out --resume" in line
    assert sorted(os.listdir(tmp_path)) == ([] if folder == "missing" else ["run"]) and not list(out.glob("*"))


def test_checkpoints_and_final_follow_the_umask(straight):
    """Like any file the user writes (not mkdtemp's 0700 or the 0600 weights save_pretrained leaves)."""
    from checkpoint import list_checkpoints
    umask = os.umask(0)
    os.umask(umask)
    for root in list_checkpoints(straight) + [os.path.join(straight, "final")]:
        assert os.stat(root).st_mode & 0o777 == 0o777 & ~umask, root
        for path in glob.glob(os.path.join(root, "**", "*"), recursive=True):
            expected = (0o777 if os.path.isdir(path) else 0o666) & ~umask
            assert os.stat(path).st_mode & 0o777 == expected, path


def test_bad_input_exits_2_from_the_command_line_too(tmp_path):
    one_line_exit_2(["--group_size", "eight", "--output_dir", str(tmp_path)], timeout=60)


def test_model_folder_without_weights_gives_one_line_and_exit_2(model_dir, tmp_path):
    folder = tmp_path / "no_weights"
    shutil.copytree(model_dir, folder)
    os.remove(folder / "model.safetensors")
    line = one_line_exit_2(THREE + ["--model", str(folder), "--output_dir", str(tmp_path / "out")])
    assert "model:" in line and str(folder) in line and not os.path.exists(tmp_path / "out" / "metrics.jsonl")


def _truncate(path):
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)


def _flip(path):
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        handle.write(b"\xff" * 64)


def _overwrite(data):
    def spoil(path):
        with open(path, "wb") as handle:
            handle.write(data)
    return spoil


DAMAGE = {
    "truncated optimizer.pt": ("optimizer.pt", _truncate),
    "flipped bytes in optimizer.pt": ("optimizer.pt", _flip),
    "garbage trainer_state.json": ("trainer_state.json", _overwrite(b"\x00\xffgarbage")),
    "trainer_state.json without iteration": ("trainer_state.json", _overwrite(b"[]")),
    "truncated model.safetensors": ("model/model.safetensors", _truncate),
    "missing model.safetensors": ("model/model.safetensors", os.remove),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_checkpoint_files_raise_checkpoint_error(damage, straight, tmp_path):
    """Cheap checks before any model is built: each damaged file is named."""
    from checkpoint import CheckpointError, latest_checkpoint, load_trainer_state
    shutil.copytree(straight, tmp_path / "run")
    latest = latest_checkpoint(str(tmp_path / "run"))
    name, spoil = DAMAGE[damage]
    spoil(os.path.join(latest, name))
    with pytest.raises(CheckpointError, match=re.escape(f"{latest}: {os.path.dirname(name) or name}")):
        load_trainer_state(latest)


@pytest.mark.parametrize("damage", ["truncated optimizer.pt", "garbage trainer_state.json",
                                    "truncated model.safetensors"])
def test_resume_from_a_damaged_checkpoint_gives_one_line_and_exit_2(damage, straight, model_dir, tmp_path):
    """Through train.py --resume: one line naming the file, exit 2, and nothing written (the check
    runs before the config dump, the environments and the model)."""
    from checkpoint import latest_checkpoint
    out = str(tmp_path / "run")
    shutil.copytree(straight, out)
    os.remove(os.path.join(out, "config.json"))
    name, spoil = DAMAGE[damage]
    spoil(os.path.join(latest_checkpoint(out), name))
    line = one_line_exit_2(THREE + ["--model", model_dir, "--output_dir", out, "--resume", "true"])
    assert f"{latest_checkpoint(out)}: {name}" in line and "delete this folder" in line
    assert not os.path.exists(os.path.join(out, "config.json"))


@pytest.mark.parametrize("data", ["unset", "empty folder", "empty split"])
def test_a_real_alfworld_that_is_not_set_up_gives_one_line_and_exit_2(data, model_dir, tmp_path, monkeypatch):
    """No ALFWORLD_DATA, or a folder without json_2.1.1, fails in config validation (nothing loaded); a
    json_2.1.1 without games of the split fails at the first reset, after the model loaded: either way
    an error line that says what to run, no traceback."""
    pytest.importorskip("alfworld")             # without the package, validate() refuses earlier (tested above)
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    if data != "unset":
        monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "data"))
    if data == "empty split":
        (tmp_path / "data" / "json_2.1.1").mkdir(parents=True)
    result = run_train(FAST + ["--model", model_dir, "--output_dir", str(tmp_path / "run"), "--env_backend", "real"])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    if data != "empty split":
        assert len(lines) == 1, result.stderr[-3000:]   # nothing loaded, nothing printed before it
    needle = "ALFWORLD_DATA" if data == "unset" else "no ALFWorld games"
    assert lines[-1].startswith("error: ") and needle in lines[-1]
    from checkpoint import earlier_run
    assert earlier_run(str(tmp_path / "run")) == []             # the failed setup left no result behind
    fixed = run_train(FAST + ["--model", model_dir, "--output_dir", str(tmp_path / "run"), "--iterations", "1"])
    assert fixed.returncode == 0, fixed.stderr[-3000:]          # so the corrected rerun is not refused


def test_dry_run_checks_the_setup_and_writes_nothing(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    result = run_train(["--model", model_dir, "--output_dir", str(out), "--dry_run", "true"], timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"env_backend": "builtin"' in result.stdout and "dry run: the config is valid" in result.stdout
    assert not out.exists()
    pytest.importorskip("alfworld")
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)
    line = one_line_exit_2(["--model", model_dir, "--output_dir", str(out), "--dry_run", "true",
                            "--env_backend", "real"])
    assert "ALFWORLD_DATA" in line and not out.exists()


def test_help_says_which_defaults_a_bare_run_uses():
    result = run_train(["--help"], timeout=60)
    assert result.returncode == 0
    assert "paper" in result.stdout and "EMBEDDED_DEFAULTS" in result.stdout and "iterations=16" in result.stdout


def test_a_retriever_lost_mid_run_keeps_the_iterations_done(straight, model_dir, tmp_path):
    """The 3rd rollout fails (retriever gone): exit 1 with one line, a checkpoint of the 2 iterations done
    although none was due (save_every 10), and the resumed run ends equal to the uninterrupted one."""
    from checkpoint import list_checkpoints
    out = str(tmp_path / "run")
    args = THREE + ["--model", model_dir, "--output_dir", out, "--save_every", "10"]
    result = fault_run("retriever", 3, args)
    assert result.returncode == 1 and "retriever" in error_line(result)
    assert [os.path.basename(path) for path in list_checkpoints(out)] == ["iter_000002"]
    resumed = run_train(args + ["--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(weights(os.path.join(straight, "final")), weights(os.path.join(out, "final")))
    assert [row["iteration"] for row in read_metrics(out)] == list(range(1, ITERATIONS + 1))


def test_lora_resume_keeps_the_trained_adapter_and_final_is_a_whole_model(model_dir, tmp_path):
    """LoRA checkpoints hold only the adapter: resuming must load it onto the base model (a resumed run ends
    equal to an uninterrupted one), and final/ is the merged model, usable as --model."""
    pytest.importorskip("peft")
    lora = ["--lora_r", "4", "--model", model_dir]
    straight_out, split_out = str(tmp_path / "straight"), str(tmp_path / "split")
    assert run_train(THREE + lora + ["--output_dir", straight_out]).returncode == 0
    two = THREE + lora + ["--output_dir", split_out, "--iterations", "2"]
    assert run_train(two).returncode == 0
    resumed = run_train(THREE + lora + ["--output_dir", split_out, "--resume", "true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = weights(os.path.join(straight_out, "final"))
    assert_same_weights(final, weights(os.path.join(split_out, "final")))
    base = weights(model_dir)
    assert any(not torch.equal(final[k], base[k]) for k in base)   # the adapter learned something, merged in
    again = run_train(FAST + ["--model", os.path.join(straight_out, "final"), "--output_dir", str(tmp_path / "again"),
                              "--iterations", "1"])
    assert again.returncode == 0, again.stderr[-3000:]


def file_digests(folder):
    """{relative path: sha256} of every file under folder."""
    return {os.path.relpath(path, folder): hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(path)}


def test_a_fresh_run_into_an_earlier_run_is_refused_until_overwrite(straight, model_dir, tmp_path):
    """Without --resume or --overwrite the earlier run stays byte for byte; --overwrite replaces all of it."""
    from checkpoint import list_checkpoints
    out = str(tmp_path / "run")
    shutil.copytree(straight, out)
    before = file_digests(out)
    line = one_line_exit_2(THREE + ["--model", model_dir, "--output_dir", out])
    assert "holds an earlier run" in line and "--resume true" in line and "--overwrite true" in line
    assert file_digests(out) == before
    result = run_train(THREE + ["--model", model_dir, "--output_dir", out, "--iterations", "1", "--overwrite", "true"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["iteration"] for row in read_metrics(out)] == [1]
    assert [os.path.basename(path) for path in list_checkpoints(out)] == ["iter_000001"]


@pytest.mark.parametrize("other", [dict(shape="small"), dict(vocab_size=600)])   # more tensors; same, other shapes
def test_optimizer_state_of_another_model_raises_checkpoint_error(other, straight, tiny_model_factory):
    """Resuming with other model settings must fail on load, not with a shape error at the first step."""
    from checkpoint import CheckpointError, latest_checkpoint, load_optimizer_state
    optimizer = torch.optim.AdamW(tiny_model_factory(seed=0, **other).parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_optimizer_state(latest_checkpoint(straight), optimizer, scheduler)


# ---------------------------------------------------------------- safety


def python_sources():
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True):
        if not os.path.relpath(path, ROOT).startswith((".", "runs")):
            yield path, ast.parse(open(path, encoding="utf-8").read(), filename=path)


def test_every_torch_load_is_weights_only_and_no_code_is_trusted():
    """Loading a pickle can run arbitrary code: only weights_only loads, and no literal
    trust_remote_code=True anywhere in the repository."""
    checked = 0
    for path, tree in python_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "torch":
                assert "load" not in [a.name for a in node.names], path
            if not isinstance(node, ast.Call):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            trusted = keywords.get("trust_remote_code")
            assert not (isinstance(trusted, ast.Constant) and trusted.value is True), f"{path}:{node.lineno}"
            if ast.unparse(node.func) == "torch.load":
                flag = keywords.get("weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, f"{path}:{node.lineno}"
                checked += 1
    assert checked >= 2                              # checkpoint.py and the tests do load with torch.load


def test_remote_code_is_off_unless_asked():
    from cli import parse_config
    from config import TrainConfig
    assert TrainConfig().trust_remote_code is False and parse_config([]).trust_remote_code is False
    import train
    source = inspect.getsource(train.load_model)
    assert source.count("trust_remote_code=cfg.trust_remote_code") == 2


def test_checkpoints_hold_safetensors_and_plain_json(straight):
    from checkpoint import list_checkpoints
    for folder in list_checkpoints(straight) + [os.path.join(straight, "final")]:
        files = [os.path.relpath(p, folder) for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True)]
        assert any(f.endswith(".safetensors") for f in files), files
        assert not [f for f in files if f.endswith((".bin", ".pth", ".pkl", ".pickle"))], files
        assert {f for f in files if f.endswith(".pt")} <= {"optimizer.pt"}


def test_retriever_defaults_to_loopback():
    from envs.search import engine, real, retriever, server
    assert urlparse(retriever.DEFAULT_URL).hostname in LOOPBACK
    assert inspect.signature(real.RealSearchQA).parameters["retriever_url"].default == retriever.DEFAULT_URL
    assert inspect.signature(retriever.RetrieverClient).parameters["url"].default == retriever.DEFAULT_URL
    assert inspect.signature(engine.BuiltinSearchQA).parameters["retriever_url"].default is None   # in-process
    assert inspect.signature(server.make_server).parameters["host"].default in LOOPBACK
    assert "--host\", default=\"127.0.0.1\"" in inspect.getsource(server.main)


# ---------------------------------------------------------------- multi-process invariance


@pytest.mark.parametrize("mode", ["seq-mean-token-sum", "seq-mean-token-sum-norm"])
def test_two_processes_match_one_for_the_sum_modes(mode, tmp_path):
    """test_train.py covers token-mean and seq-mean-token-mean."""
    one, two = update_deltas(tmp_path, 1, mode, 2), update_deltas(tmp_path, 2, mode, 2)
    assert any(d.abs().max() > 1e-4 for d in one)
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"])  # token-mean: test_train.py
def test_accumulation_1x8_equals_8x1_for_every_mode(mode, tmp_path):
    whole, pieces = update_deltas(tmp_path, 1, mode, 8), update_deltas(tmp_path, 1, mode, 1)
    for a, b in zip(whole, pieces):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
