"""Run train.py with one injected fault, for test_reliability.py: a SIGKILL at a chosen point, or NaNs.

    python tests/fault_run.py POINT N TRAIN_ARGS...

POINT is where the N-th occurrence kills the process, with no chance to clean up:
    optimizer  half-way through writing optimizer.pt of the N-th checkpoint
    update     after the N-th iteration's optimizer steps, before its metrics and checkpoint
    prune      half-way through deleting an old checkpoint (the first one removed, N = 1)
    nan        not a crash: every advantage is NaN from the start, so updates turn non-finite
    retriever  not a crash: the N-th rollout raises RetrieverError (the retriever went away), a clean exit

Faults are injected by patching module attributes before train.main runs (train.py imports these
names inside train()), so the production code carries no test hooks.
"""

import os
import shutil
import signal
import sys
import types

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import checkpoint  # noqa: E402
import grpo  # noqa: E402
import train  # noqa: E402
from envs.search.retriever import RetrieverError  # noqa: E402


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def on_call(function, n, before=None, after=None):
    """`function` that runs `before(*args)` or `after(*args)` on its n-th call."""
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if before and calls[0] == n:
            before(*args)
        result = function(*args, **kwargs)
        if after and calls[0] == n:
            after(*args)
        return result
    return wrapped


def half_written(obj, path, *args, **kwargs):
    """Save, cut the file to half its bytes (what a killed writer leaves) and die."""
    real_save(obj, path, *args, **kwargs)
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) // 2)
    die()


def half_deleted(path, *args, **kwargs):
    """Delete one file under `path`, then die before the rest is gone."""
    os.remove(next(os.path.join(folder, files[0]) for folder, _, files in os.walk(path) if files))
    die()


def retriever_gone(*args):
    raise RetrieverError("retriever http://127.0.0.1:9/retrieve: connection refused after 3 tries")


def nan_advantages(*args, **kwargs):
    return real_advantages(*args, **kwargs) * float("nan")


if __name__ == "__main__":
    point, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    real_save, real_advantages = torch.save, grpo.group_advantages
    if point == "optimizer":              # only checkpoint.py's view of torch and shutil is changed
        checkpoint.torch = types.SimpleNamespace(save=on_call(real_save, n, before=half_written), load=torch.load)
    elif point == "update":
        train.update_policy = on_call(train.update_policy, n, after=lambda *args: die())   # train's own binding
    elif point == "prune":
        checkpoint.shutil = types.SimpleNamespace(rmtree=on_call(shutil.rmtree, n, before=half_deleted))
    elif point == "nan":
        train.group_advantages = nan_advantages
    elif point == "retriever":
        train.rollout = on_call(train.rollout, n, before=retriever_gone)
    else:
        sys.exit(f"unknown point {point!r}")
    sys.exit(train.main(argv))
