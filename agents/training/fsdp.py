"""FSDP2 for a Hugging Face causal LM: shard it over the process group with float32 master weights and a
narrower compute dtype, and move whole (unsharded) model and optimizer states in and out of it.

Torch only (no Ray): the RLlib learner and ``benchmarks/gpu_learner.py`` share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

#: Gathered to rank 0's CPU only: no GPU ever holds a whole copy, and the other ranks get an empty dict.
_FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)
_FULL = StateDictOptions(full_state_dict=True)


def shard_policy(
    root: torch.nn.Module, model: torch.nn.Module, reference: torch.nn.Module | None, compute_dtype: torch.dtype
) -> None:
    """Shard in place: one FSDP unit per decoder layer of ``model`` and of the frozen ``reference``, so only
    one or two layers are gathered at a time; the reference's embeddings and head as a unit of their own,
    gathered by :func:`gathered`; everything else of ``model`` (embeddings, LM head, final norm) in the unit
    of ``root``, the module whose ``__call__`` runs the training forward pass.

    ``root`` rather than ``model`` is the outer unit because the loss calls the decoder and the head
    separately (``masked_token_logprobs``), never ``model.__call__``, whose hooks FSDP would need; and
    ``root``'s call is what tells FSDP when to reduce-scatter the gradients of the embeddings.

    The sharded parameters keep their dtype (float32 master weights: AdamW's updates at lr 1e-6 are far
    below bfloat16's resolution); units are gathered in ``compute_dtype`` and gradients reduced in float32.
    """
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for lm in (reference, model):
        if lm is not None:
            for layer in lm.get_decoder().layers:
                fully_shard(layer, mp_policy=policy)
    if reference is not None:
        fully_shard(reference, mp_policy=policy)
    fully_shard(root, mp_policy=policy)


@contextmanager
def gathered(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` with its own unit gathered (its sub-units gather themselves when called): for a frozen
    module whose ``__call__`` is bypassed, as :func:`shard_policy` does with the reference."""
    if not isinstance(module, FSDPModule):
        yield module
        return
    module.unshard()
    try:
        yield module
    finally:
        module.reshard()


def is_sharded(model: torch.nn.Module) -> bool:
    return any(isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters())


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict on rank 0's CPU ({} elsewhere). A collective: every rank must call it."""
    return get_model_state_dict(model, options=_FULL_ON_RANK0)


def load_full_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> Any:
    """Load an unsharded state dict, which every rank holds, into the sharded ``model``."""
    return set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=strict))


def full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's unsharded state on rank 0's CPU, in ``optimizer.state_dict()``'s own layout (parameters
    numbered in order): the very state an unsharded optimizer over the same parameters holds, so that
    checkpoints move between FSDP and DDP. A collective: every rank must call it."""
    if not optimizer.state:  # torch would initialise the state with a zero-gradient step, which counts in AdamW
        return optimizer.state_dict()
    state = get_optimizer_state_dict(model, optimizer, options=_FULL_ON_RANK0)
    if not state:
        return {}
    index = {fqn: i for i, fqn in enumerate(fqn for group in state["param_groups"] for fqn in group["params"])}
    return {
        "state": {index[fqn]: value for fqn, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [index[fqn] for fqn in group["params"]]} for group in state["param_groups"]
        ],
    }


def load_full_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a state in ``optimizer.state_dict()``'s layout (from :func:`full_optimizer_state` or an unsharded
    optimizer), which every rank holds, into the optimizer of the sharded ``model``."""
    if not state["state"]:  # nothing to shard (and see full_optimizer_state)
        optimizer.load_state_dict(state)
        return
    names = {id(p): fqn for fqn, p in model.named_parameters()}
    fqns = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {
        "state": {fqns[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [
            {**group, "params": [fqns[int(i)] for i in group["params"]]} for group in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(model, optimizer, by_name, options=_FULL)
