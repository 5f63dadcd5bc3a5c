"""Sharded training (``train.parallel = "fsdp"``): PyTorch FSDP2 over the processes ``accelerate launch`` or
``torchrun`` started, for DiTs whose frozen base does not fit one card (Wan 14B, HunyuanVideo 12.8B).

DDP keeps a whole copy of the frozen base on every rank; that is what does not fit. Here every DiT block (the
adapter names its block lists, ``backbone.block_lists``) is one ``fully_shard`` unit and the whole stage loss is the
root unit (the patch embedding, condition embedder, output head, the history encoder and the enhancers): each rank
holds 1/N of every parameter, all-gathers one block for its forward and backward and frees it again. The frozen
base is sharded in its own dtype (bfloat16 at real size); the LoRA and the history encoder stay float32 and are
sharded too: every trainable parameter inside one unit then has one dtype (float32; the frozen ones may differ,
FSDP2 keeps a dtype per parameter), and their AdamW moments are split N ways as well. Compute runs under the same
autocast as a single-process run (no FSDP mixed-precision policy: the weights are all-gathered in their own dtype).

Checkpoints: what a user takes away (``lora.safetensors``, the portable LoRA, ``history_encoder.safetensors``,
``config.json``) is written once, by rank 0, from full tensors gathered by
``get_model_state_dict(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)`` — the same files a
single-process run writes, and never the frozen base. The optimizer's state is saved sharded with
``torch.distributed.checkpoint`` (DCP): every rank writes its own part, and DCP reshards on load, so a run saved on
2 ranks resumes on 1 (or more).

With one process there is nothing to shard: the plain model trains, and its optimizer state still goes through DCP,
so a checkpoint of either kind resumes under the other process count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from tinyhistory.assemble import HistoryDiT

# The sharded optimizer state inside a checkpoint's ``state/`` folder (a DCP checkpoint: one file per rank + metadata).
OPTIMIZER_DIR = "optimizer"
# Where the trained weights live under the stage loss module (the FSDP root), as state-dict names.
MODEL_PREFIX = "model."


def distributed() -> bool:
    """Whether several processes train together (a process group of more than one rank)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def dit_blocks(model: HistoryDiT) -> Iterator[nn.Module]:
    """Every DiT block, from the block lists the backbone adapter names (``block_lists``): the sharding units."""
    transformer = model.backbone.transformer
    for name in model.backbone.block_lists:
        yield from getattr(transformer, name)


def outside_blocks(model: HistoryDiT) -> Iterator[nn.Parameter]:
    """The trainable parameters of the root unit (everything but the DiT blocks: the history encoder, enhancers).

    Call it inside the root's forward, where these are the gathered (unsharded) tensors. A step in which some rank
    does not use one of them (stage II: an empty history) would otherwise leave its gradient unset there and set on
    another rank, and the ranks' reduce-scatters would no longer match (DDP's ``find_unused_parameters`` case).
    """
    prefixes = tuple(f"backbone.transformer.{name}." for name in model.backbone.block_lists)
    for name, param in model.named_parameters():
        if param.requires_grad and not name.startswith(prefixes):
            yield param


def shard(root: nn.Module, model: HistoryDiT, device_type: str) -> int:
    """``fully_shard`` each DiT block of ``model``, then ``root`` (the module whose forward is the whole loss, so its
    pre-forward hook gathers the parameters outside the blocks: embeddings, head, history encoder, enhancers).

    Call it before the optimizer is built (the parameters become DTensors). Returns the number of units.
    """
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    units = 0
    for block in dit_blocks(model):
        fully_shard(block, mesh=mesh)
        units += 1
    fully_shard(root, mesh=mesh)
    return units + 1


def local_bytes(model: nn.Module) -> dict[str, int]:
    """The bytes of parameters this rank holds: ``frozen`` (the base) and ``trained``, sharded or whole."""
    sizes = {"frozen": 0, "trained": 0}
    for param in model.parameters():
        local = param.to_local() if isinstance(param, DTensor) else param
        sizes["trained" if param.requires_grad else "frozen"] += local.numel() * local.element_size()
    return sizes


def gather_trained(root: nn.Module, model: HistoryDiT) -> dict[str, torch.Tensor]:
    """Full CPU tensors of what a checkpoint holds, keyed by ``model``'s state-dict names; on rank 0 only (every rank
    must call it: the gathers are collective). The frozen base is never gathered.

    The trained parameters and the buffers come from one ``get_model_state_dict`` call; a frozen history encoder
    (``train.freeze_encoder``) or enhancer is still written to the checkpoint, so its parameters are gathered here
    one by one (small modules).
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    gathered = get_model_state_dict(root, options=options)
    rank0 = not distributed() or dist.get_rank() == 0
    state = {k[len(MODEL_PREFIX) :]: v for k, v in gathered.items() if k.startswith(MODEL_PREFIX)}
    for prefix, modules in (("producers.", model.producers), ("enhancers.", model.enhancers)):
        for name, param in modules.named_parameters():
            if param.requires_grad:
                continue  # gathered above
            full = param.full_tensor() if isinstance(param, DTensor) else param  # every rank, in the same order
            if rank0:
                state[prefix + name] = full.detach().cpu()
    return state if rank0 else {}


def save_optimizer(folder: str | Path, root: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """The optimizer's state as a DCP checkpoint in ``folder/state/optimizer`` (every rank writes its shard)."""
    state = get_optimizer_state_dict(root, _plain(optimizer))
    dcp.save({"optimizer": state}, checkpoint_id=Path(folder) / "state" / OPTIMIZER_DIR, no_dist=not distributed())


def load_optimizer(folder: str | Path, root: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Take back what :func:`save_optimizer` wrote, resharded to this run's processes (any number)."""
    path = Path(folder) / "state" / OPTIMIZER_DIR
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(
            f"{path} is missing: {Path(folder).parent} was not trained with train.parallel = 'fsdp' (resume it with "
            "the parallel setting it was trained with)"
        )
    plain = _plain(optimizer)
    state = {"optimizer": get_optimizer_state_dict(root, plain)}
    dcp.load(state, checkpoint_id=path, no_dist=not distributed())
    set_optimizer_state_dict(root, plain, optim_state_dict=state["optimizer"])


def _plain(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer inside Accelerate's wrapper (the state-dict helpers look at its param groups)."""
    return getattr(optimizer, "optimizer", optimizer)
