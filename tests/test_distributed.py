"""Beyond one process: the shipped accelerate configs parse and fit the project's configs, and under
FSDP2 (configs/accelerate/fsdp.yaml) 2 CPU processes make the same update as 1 and run train.py end to
end (checkpoint, resume, final/) as DDP does.

accelerate 1.16 takes its FSDP path only with an accelerator device; tests/fsdp_on_cpu.py makes it take
that path on CPU processes (gloo), where torch's FSDP2 works, and prints how the weights came out of
`prepare`, so these tests can tell that the weights really were sharded.
"""

import os
import sys

import pytest
import torch

from conftest import ROOT
from test_train import FAST, LAUNCH_CPU_PROCESSES, check_run, run_train, update_deltas

ACCELERATE_CONFIGS = os.path.join(ROOT, "configs", "accelerate")
LAUNCH_FSDP_ON_CPU = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                      os.path.join(ACCELERATE_CONFIGS, "fsdp.yaml"), "--num_processes", "2",
                      "--mixed_precision", "no", "--dynamo_backend", "no", os.path.join(ROOT, "tests", "fsdp_on_cpu.py")]


def test_fsdp_two_processes_make_the_same_update_as_one(tmp_path):
    """One SGD step at lr 1 (the change is the gradient) with the weights sharded over 2 processes: the
    gradient is reduce-scattered instead of all-reduced, float32 sums in another order, about 1e-7
    relative (measured: 4e-9 absolute on changes up to 3e-3); a wrong normalisation (a factor of 2) or
    a shard's gradient lost would fail by orders of magnitude."""
    one = update_deltas(tmp_path, 1, "token-mean", 2)
    two = update_deltas(tmp_path, 2, "token-mean", 2, launcher=LAUNCH_FSDP_ON_CPU)
    assert torch.load(str(tmp_path / "delta-2-2-token-mean.pt"), weights_only=True)["sharded"]
    assert any(d.abs().max() > 1e-4 for d in one)                 # the update is not trivially zero
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_fsdp_training_and_resume_match_ddp(model_dir, tmp_path):
    """train.py under FSDP2 on 2 processes for one iteration, then resumed from its checkpoint for a
    second, against DDP on 2 processes for two straight: the same rollouts (each process plays its own
    episodes on gathered weights), updates, FULL_STATE_DICT checkpoint (weights and optimizer state) and
    final/ weights.

    `--generation_batch_size 1` with a 3-task panel gives the processes different numbers of generate
    calls (2 and 1): with per-forward all-gathers that hangs or fails with a collective mismatch, so this
    run checks that rollout and evaluation really gather the weights first. The two runs' weights differ
    only by the order of float32 gradient sums (measured: identical); 1e-6 on AdamW steps of lr 1e-3
    leaves room for that and none for a lost gradient or lost optimizer moments (a step of about 1e-3).
    """
    args = FAST + ["--model", model_dir, "--eval_tasks", "3", "--generation_batch_size", "1"]
    one = args + ["--iterations", "1"]                          # the last flag wins
    fsdp, ddp = str(tmp_path / "fsdp"), str(tmp_path / "ddp")
    result = run_train(one + ["--output_dir", fsdp], launcher=LAUNCH_FSDP_ON_CPU)
    check_run(result, fsdp, iterations=1)
    for rank in (0, 1):
        assert f"fsdp_on_cpu: rank {rank} of 2, DistributedType.FSDP, weights DTensor" in result.stdout
    resumed = run_train(args + ["--output_dir", fsdp, "--resume", "true"], launcher=LAUNCH_FSDP_ON_CPU)
    assert resumed.returncode == 0 and "iteration 1 of 2 done" in resumed.stdout, resumed.stderr[-3000:]
    assert run_train(args + ["--output_dir", ddp], launcher=LAUNCH_CPU_PROCESSES).returncode == 0
    from safetensors.torch import load_file
    sharded, replicated = (load_file(os.path.join(run, "final", "model.safetensors")) for run in (fsdp, ddp))
    initial = load_file(os.path.join(model_dir, "model.safetensors"))
    assert max((sharded[name] - initial[name]).abs().max() for name in initial) > 1e-4   # it trained
    for name, weight in replicated.items():
        torch.testing.assert_close(sharded[name], weight, atol=1e-6, rtol=0, msg=name)


def _accelerate_config(name):
    from accelerate.commands.config.config_args import load_config_from_file
    return load_config_from_file(os.path.join(ACCELERATE_CONFIGS, name))


@pytest.mark.parametrize("name,kind", [("single_gpu.yaml", "NO"), ("multi_gpu.yaml", "MULTI_GPU"),
                                       ("fsdp.yaml", "FSDP"), ("deepspeed_zero2.yaml", "DEEPSPEED"),
                                       ("deepspeed_zero3.yaml", "DEEPSPEED")])
def test_accelerate_configs_parse_and_fit_the_paper_configs(name, kind):
    """accelerate's own loader reads each config; bf16; the paper configs' tasks_per_iter and
    mini_batch_size split over its num_processes (config.validate)."""
    from cli import parse_config
    from config import validate
    config = _accelerate_config(name)
    assert (str(config.distributed_type).split(".")[-1], config.mixed_precision) == (kind, "bf16")
    for benchmark in ("alfworld", "webshop", "search"):
        cfg = parse_config(["--config", os.path.join(ROOT, "configs", f"{benchmark}.yaml"), "--env_backend", "builtin",
                            "--model", "Qwen/Qwen2.5-0.5B-Instruct"])
        validate(cfg, world_size=config.num_processes)


def test_fsdp_config_wraps_a_qwen2_layer_and_saves_whole_weights():
    from transformers.models.qwen2 import modeling_qwen2
    fsdp = _accelerate_config("fsdp.yaml").fsdp_config
    assert fsdp["fsdp_version"] == 2 and fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert isinstance(getattr(modeling_qwen2, fsdp["fsdp_transformer_layer_cls_to_wrap"]), type)


@pytest.mark.parametrize("name,stage", [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_configs_build_a_plugin(name, stage):
    """The ZeRO configs as accelerate's DeepSpeed plugin reads them (train.py refuses DeepSpeed: README)."""
    pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
    from accelerate.utils import DeepSpeedPlugin
    config = _accelerate_config(name).deepspeed_config
    plugin = DeepSpeedPlugin(zero_stage=config["zero_stage"], gradient_clipping=config["gradient_clipping"],
                             gradient_accumulation_steps=config["gradient_accumulation_steps"],
                             offload_optimizer_device=config["offload_optimizer_device"],
                             offload_param_device=config["offload_param_device"])
    assert plugin.zero_stage == stage and plugin.deepspeed_config["zero_optimization"]["stage"] == stage

