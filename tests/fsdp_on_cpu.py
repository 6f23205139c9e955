"""Run a script under accelerate's FSDP2 code path on CPU processes: `accelerate launch --config_file
configs/accelerate/fsdp.yaml --num_processes 2 --mixed_precision no tests/fsdp_on_cpu.py SCRIPT ARGS...`.

Why a shim: accelerate 1.16 takes its FSDP path only with an accelerator device. On CPU
(`Accelerator(cpu=True)`, what train.py does without CUDA) it silently falls back to DDP
(distributed_type MULTI_CPU, the model wrapped in DistributedDataParallel); without `cpu=True` and
without CUDA it runs every process alone (distributed_type NO). torch's FSDP2 itself works on CPU with
gloo, so this sets the state accelerate would have set on GPUs (distributed_type FSDP and the plugin
built from the launcher's FSDP_* variables), then runs the script: `prepare` shards the model with
`fully_shard` exactly as on GPUs, and the project's code takes its FSDP branches.
"""

import os
import runpy
import sys

from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_build_state = AcceleratorState.__init__


def build_state_with_fsdp(self, *args, **kwargs):
    _build_state(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.fsdp_plugin = kwargs.get("fsdp_plugin") or FullyShardedDataParallelPlugin()


_prepare = Accelerator.prepare


def prepare_and_report(self, *args, **kwargs):
    """`Accelerator.prepare`, then one line per process saying how the model's weights came out (a test
    reads it: DTensor means sharded by fully_shard)."""
    prepared = _prepare(self, *args, **kwargs)
    for thing in prepared if isinstance(prepared, (tuple, list)) else (prepared,):
        if hasattr(thing, "parameters"):
            print(f"fsdp_on_cpu: rank {self.process_index} of {self.num_processes}, {self.distributed_type}, "
                  f"weights {type(next(thing.parameters())).__name__}", flush=True)
    return prepared


if __name__ == "__main__":
    AcceleratorState.__init__ = build_state_with_fsdp
    Accelerator.prepare = prepare_and_report
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))
    runpy.run_path(sys.argv[0], run_name="__main__")
