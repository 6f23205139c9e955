"""What changes when the policy's weights are sharded over the processes (FSDP2 under accelerate).

With sharded weights every forward all-gathers each layer's weights: a collective call that every
process must make in step. Training forwards are in step (update.py runs the same number of
micro-batches on every process), but rollout, evaluation and the scoring passes are not: each process
plays its own episodes, which end after different numbers of turns and tokens. So those stages run
inside `whole_weights`: the weights are gathered once, every forward in it is local, and they are
sharded again on the way out. A checkpoint holds the whole weights and the whole optimizer state
(`full_state_dict`, `full_optimizer_state`: collectives, every process calls them), so it loads on any
number of processes and resumes by `load_full_optimizer_state`. With unsharded weights (one process,
DDP) all of this is plain and changes nothing.
"""

from __future__ import annotations

from contextlib import contextmanager

try:
    from torch.distributed.fsdp import FSDPModule
except ImportError:          # a torch built without distributed support, or older than 2.6: nothing is sharded
    FSDPModule = ()


def is_sharded(accelerator) -> bool:
    """True when `accelerator.prepare` sharded the policy's weights over the processes (FSDP2)."""
    return getattr(accelerator, "is_fsdp2", False)


@contextmanager
def whole_weights(model, accelerator):
    """Gather the sharded weights for the duration (one all-gather per FSDP unit, every process at once),
    so forwards inside need no collective calls; shard them again after. Costs the memory of the whole
    model in its compute dtype while inside, as generation on ZeRO-3 does.

    FSDP2's `set_reshard_after_forward(False)` keeps gathered weights after each forward; on the way
    out the decoder layers get back the config's `fsdp_reshard_after_forward`, and the rest (the root
    and the embedding/norm/head group, which accelerate keeps gathered after forward) False.
    """
    if not is_sharded(accelerator):
        yield
        return
    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        plugin = accelerator.state.fsdp_plugin
        layer_names = set(plugin.transformer_cls_names_to_wrap or ())
        for unit in units:
            unit.reshard()
            is_layer = any(cls.__name__ in layer_names for cls in type(unit).__mro__)
            unit.set_reshard_after_forward(bool(plugin.reshard_after_forward) and is_layer, recurse=False)


def full_state_dict(accelerator, model) -> dict | None:
    """The whole weights for save_pretrained on the main process (None elsewhere and when not sharded:
    the model's own state_dict is whole). A collective under FSDP: every process must call it."""
    if not is_sharded(accelerator):
        return None
    state_dict = accelerator.get_state_dict(model)
    return state_dict if accelerator.is_main_process else None


def full_optimizer_state(accelerator, model, optimizer) -> dict | None:
    """The whole optimizer state, keyed by parameter names, on the main process (None elsewhere and when
    not sharded: the optimizer's own state_dict is whole). Each process holds only its shard's moments,
    so a checkpoint of the main process's own state_dict would not resume. A collective under FSDP."""
    if not is_sharded(accelerator):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if accelerator.is_main_process else None


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    """Load a `full_optimizer_state` into a sharded optimizer: each process keeps its shard of it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
