"""Atomic checkpoints and resume.

A checkpoint is a folder `checkpoints/iter_000010/` with
    model/               save_pretrained (safetensors) + tokenizer: loadable by transformers and vLLM
    optimizer.pt         optimizer and scheduler state (tensors and numbers only: loaded with weights_only)
    trainer_state.json   iteration, best evaluation, skill bandit, metric history length
It is written under a temporary name and renamed when complete, so a crash (even SIGKILL) mid-write
leaves either the previous checkpoints or a stray `.tmp-*` folder that resume ignores and removes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

PREFIX = "iter_"


def checkpoint_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def save_checkpoint(output_dir: str, iteration: int, model, tokenizer, optimizer, scheduler, state: dict,
                    keep: int = 2) -> str:
    """Write checkpoint `iteration` atomically (call on the main process only); return its path."""
    root = checkpoint_dir(output_dir)
    os.makedirs(root, exist_ok=True)
    final = os.path.join(root, f"{PREFIX}{iteration:06d}")
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=root)
    model.save_pretrained(os.path.join(tmp, "model"), safe_serialization=True)
    tokenizer.save_pretrained(os.path.join(tmp, "model"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
               os.path.join(tmp, "optimizer.pt"))
    with open(os.path.join(tmp, "trainer_state.json"), "w") as handle:
        json.dump({**state, "iteration": iteration}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if os.path.exists(final):
        shutil.rmtree(final)
    os.replace(tmp, final)                      # the checkpoint appears complete or not at all
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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


def latest_checkpoint(output_dir: str) -> str | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_trainer_state(path: str) -> dict:
    """The JSON state of a checkpoint; a clear error if it is unreadable."""
    try:
        with open(os.path.join(path, "trainer_state.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise RuntimeError(f"checkpoint {path} is corrupt or incomplete ({error}); delete it to resume "
                           f"from the previous one") from error


def load_optimizer_state(path: str, optimizer, scheduler) -> None:
    """Restore optimizer and scheduler (safe load: tensors and plain containers only)."""
    try:
        state = torch.load(os.path.join(path, "optimizer.pt"), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        raise RuntimeError(f"checkpoint {path}: optimizer.pt is corrupt ({error}); delete the checkpoint "
                           f"to resume from the previous one") from error
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
