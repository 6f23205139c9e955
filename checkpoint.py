"""Atomic checkpoints and resume.

A checkpoint is a folder `checkpoints/iter_000010/` with
    model/               save_pretrained (safetensors) + tokenizer: loadable by transformers and vLLM
    optimizer.pt         optimizer and scheduler state (tensors and numbers only: loaded with weights_only)
    trainer_state.json   iteration, best evaluation, skill bandit, metric history length
It is written under a temporary name and renamed when complete, so a crash (even SIGKILL) mid-write
leaves either the previous checkpoints or a stray `.tmp-*` folder that resume ignores and removes;
old checkpoints are renamed to a `.tmp-*` name before they are deleted, for the same reason.
Resuming checks every file of the checkpoint before the model is built and raises CheckpointError,
naming the file, when one is damaged.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import zipfile

import torch

PREFIX = "iter_"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from (damaged or foreign files): bad input, exit code 2."""


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def checkpoint_path(output_dir: str, iteration: int) -> str:
    return os.path.join(checkpoint_dir(output_dir), f"{PREFIX}{iteration:06d}")


def save_checkpoint(output_dir: str, iteration: int, model, tokenizer, optimizer, scheduler, state: dict,
                    keep: int = 2, state_dict: dict | None = None, optimizer_state: dict | None = None) -> str:
    """Write checkpoint `iteration` atomically (call on the main process only); return its path.
    `state_dict`, `optimizer_state`: the whole weights and optimizer state of a sharded model (None: the
    model's and the optimizer's own)."""
    root = checkpoint_dir(output_dir)
    os.makedirs(root, exist_ok=True)
    final = checkpoint_path(output_dir, iteration)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
    save_model(output_dir, os.path.join(tmp, "model"), model, tokenizer, state_dict)
    torch.save({"optimizer": optimizer.state_dict() if optimizer_state is None else optimizer_state,
                "scheduler": scheduler.state_dict()},
               os.path.join(tmp, "optimizer.pt"))
    with open(os.path.join(tmp, "trainer_state.json"), "w") as handle:
        json.dump({**state, "iteration": iteration}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    apply_umask(tmp)
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)                      # the checkpoint appears complete or not at all
    for old in list_checkpoints(output_dir)[:-keep]:
        doomed = tempfile.mkdtemp(prefix=".tmp-", dir=root)
        os.replace(old, os.path.join(doomed, "old"))  # a half-deleted folder is never listed as complete
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def save_final(output_dir: str, model, tokenizer, state_dict: dict | None = None) -> None:
    """The trained policy in output_dir/final, loadable with from_pretrained (and as --model): a LoRA
    policy is merged into its base model first (call last: merging changes the live model).
    `state_dict`: the whole weights of a sharded model (None: the model's own)."""
    final = os.path.join(output_dir, "final")
    save_model(output_dir, final, model.merge_and_unload() if hasattr(model, "merge_and_unload") else model,
               tokenizer, state_dict)
    apply_umask(final)


def save_model(output_dir: str, folder: str, model, tokenizer, state_dict: dict | None = None) -> None:
    """save_pretrained (safetensors) and the tokenizer, plus a copy of the run's config.json as
    config.RUN_CONFIG: a later `--model folder` with `--preset auto` keeps the sizes it was trained with.
    `state_dict`: the whole weights of a sharded model (None: the model's own)."""
    from config import RUN_CONFIG

    model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(folder)
    run_config = os.path.join(output_dir, "config.json")
    if os.path.isfile(run_config):
        with open(run_config) as source, open(os.path.join(folder, RUN_CONFIG), "w") as copy:
            copy.write(source.read())


def apply_umask(root: str) -> None:
    """Folders and files under root get the modes the user's umask gives new ones (mkdtemp makes 0700,
    and the weights are written 0600), so a checkpoint is as readable as anything else the user writes."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for folder, names, files in os.walk(root):
        for name in names:
            os.chmod(os.path.join(folder, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o666 & ~umask)


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
    root = checkpoint_dir(output_dir)
    if not os.path.isdir(root):
        return []
    names = sorted(name for name in os.listdir(root) if name.startswith(PREFIX))
    return [os.path.join(root, name) for name in names]


def clean_partial(output_dir: str) -> None:
    """Remove folders left by a write that was interrupted."""
    root = checkpoint_dir(output_dir)
    if os.path.isdir(root):
        for name in os.listdir(root):
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)


RUN_FILES = ("checkpoints", "final", "metrics.jsonl")          # what an earlier run would lose
DERIVED_FILES = ("gate_hist.jsonl", "curves.png", "config.json")  # rewritten by every run


def earlier_run(output_dir: str) -> list[str]:
    """The results of an earlier run in output_dir (empty when it holds none): a fresh run would replace
    them. A run that stopped in its setup leaves at most config.json, which is not a result."""
    return [name for name in RUN_FILES if os.path.exists(os.path.join(output_dir, name))]


def delete_run(output_dir: str) -> None:
    """Delete an earlier run's files (results only on request: `--overwrite true`)."""
    for name in RUN_FILES + DERIVED_FILES:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def check_output_dir(cfg) -> str | None:
    """Before anything is built: refuse a fresh run into an earlier run's folder (it stays whole) unless
    `overwrite` says to replace it; returns the checkpoint to resume from (None for a fresh run)."""
    if cfg.resume:
        found = latest_checkpoint(cfg.output_dir)
        if found is None:
            from config import ConfigError
            there = f"{cfg.output_dir} holds no complete checkpoint" if os.path.isdir(cfg.output_dir) else \
                f"{cfg.output_dir} does not exist"
            fix = ("--overwrite true to start afresh there" if earlier_run(cfg.output_dir)
                   else "leave out --resume to start a fresh run")
            raise ConfigError(f"output_dir: --resume true, but {there}; check the path, or {fix}")
        return found
    previous = earlier_run(cfg.output_dir)
    if previous and not cfg.overwrite:
        from config import ConfigError
        raise ConfigError(f"output_dir: {cfg.output_dir} holds an earlier run ({', '.join(previous)}); pass "
                          "--resume true to continue it, --overwrite true to replace it, or another --output_dir")
    return None


def start_output_dir(cfg, accelerator) -> None:
    """Once the envs and the model are built: delete the earlier run `overwrite` replaces, remove what an
    interrupted checkpoint write left, and write config.json, so a setup error writes nothing."""
    import dataclasses

    accelerator.wait_for_everyone()              # every process has looked before the main one deletes
    if accelerator.is_main_process:
        if not cfg.resume:
            delete_run(cfg.output_dir)
        os.makedirs(cfg.output_dir, exist_ok=True)
        clean_partial(cfg.output_dir)
        with open(os.path.join(cfg.output_dir, "config.json"), "w") as handle:
            json.dump(dataclasses.asdict(cfg), handle, indent=1)
    accelerator.wait_for_everyone()


def save_on_all(accelerator, output_dir: str, iteration: int, model, tokenizer, optimizer, scheduler, state: dict,
                keep: int, state_dict: dict | None = None, optimizer_state: dict | None = None) -> None:
    """`save_checkpoint` from the main process, every process waiting for it (collective-safe).
    `state_dict`, `optimizer_state`: the whole weights and optimizer state of a sharded model, gathered by
    every process before this call."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_checkpoint(output_dir, iteration, accelerator.unwrap_model(model), tokenizer, optimizer, scheduler,
                        state, keep, state_dict, optimizer_state)
    accelerator.wait_for_everyone()


def latest_checkpoint(output_dir: str) -> str | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def _damaged(path: str, what: str, error: Exception | str) -> CheckpointError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CheckpointError(f"checkpoint {path}: {what} is damaged ({reason}); delete this folder to resume from "
                           f"the previous checkpoint, or start without --resume")


def load_trainer_state(path: str) -> dict:
    """The JSON state of a checkpoint, after checking that every file of it can be read back.

    Cheap next to loading: the optimizer archive's CRCs are checked and the safetensors headers read,
    so a truncated or garbled file is reported before any model is built.
    """
    try:
        with open(os.path.join(path, "trainer_state.json")) as handle:
            state = json.load(handle)
    except (OSError, ValueError) as error:
        raise _damaged(path, "trainer_state.json", error) from error
    if not isinstance(state, dict) or type(state.get("iteration")) is not int or state["iteration"] < 0:
        raise _damaged(path, "trainer_state.json", "no iteration number in it")
    try:
        with zipfile.ZipFile(os.path.join(path, "optimizer.pt")) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as error:
        raise _damaged(path, "optimizer.pt", error) from error
    if bad is not None:
        raise _damaged(path, "optimizer.pt", f"checksum mismatch in {bad}")
    if not glob.glob(os.path.join(path, "model", "*.safetensors")):
        raise _damaged(path, "model/", "no .safetensors weights in it")
    damage = damaged_weights(os.path.join(path, "model"))
    if damage:
        raise _damaged(path, os.path.join("model", damage[0]), damage[1])
    return state


def damaged_weights(folder: str) -> tuple[str, str] | None:
    """(file name, reason) of the first safetensors file in folder whose header does not parse or does not
    cover the file (truncated, garbled), else None; reads headers only, so it is cheap before a model loads."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        try:
            with safe_open(file, framework="pt"):
                pass
        except (OSError, SafetensorError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            return os.path.basename(file), reason
    return None


def load_optimizer_state(path: str, optimizer, scheduler, load_optimizer=None) -> None:
    """Restore optimizer and scheduler (safe load: tensors and plain containers only). `load_optimizer`:
    how the saved optimizer state goes in (None: `optimizer.load_state_dict`; sharded models pass
    `sharded.load_full_optimizer_state`)."""
    try:
        state = torch.load(os.path.join(path, "optimizer.pt"), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise _damaged(path, "optimizer.pt", error) from error
    try:
        (load_optimizer or optimizer.load_state_dict)(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        for group in optimizer.param_groups:         # same count but other shapes loads, then fails at step
            for param in group["params"]:
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                        raise ValueError(f"a state of shape {tuple(value.shape)} for a parameter of shape "
                                         f"{tuple(param.shape)}")
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: optimizer.pt does not fit this model ({error}); resume with "
                              f"the model and lora settings of that run, or start without --resume") from error
