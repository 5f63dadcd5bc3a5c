"""Checkpoints: model weights as safetensors, training state loadable with ``weights_only=True``.

Layout of a checkpoint folder::

    config.json                       resolved run config
    transformer/                      diffusers ``save_pretrained`` of the (tiny, fully trained) DiT, or
    lora.safetensors                  a LoRA on the base DiT named by ``backbone.base_transformer`` (stage II)
    history_encoder.safetensors       every history producer's weights (absent for no-history)
    cross_attention.safetensors       the cross-attention enhancers (only with ``history.cross_attention``)
    state/optimizer.pt                optimizer + scheduler state (tensors and numbers only)
    state/trainer.json                step, RNG states (as lists of bytes), data position
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file, save_file

from tinyhistory.config import RunConfig, config_from_dict
from tinyhistory.paths import PROJECT_ROOT, resolve_path
from tinyhistory.system import HistoryDiT
from tinyhistory.train.lora import load_lora, lora_state_dict, merge_lora

ENCODER_FILE = "history_encoder.safetensors"
CROSS_ATTENTION_FILE = "cross_attention.safetensors"
LORA_FILE = "lora.safetensors"


def save_weights(model: HistoryDiT, cfg: RunConfig, folder: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write the config, the DiT (diffusers format) and the history producers, optionally cast (e.g. fp16)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save(folder / "config.json")
    transformer = model.backbone.transformer
    if cfg.train.lora_rank > 0:
        state = {k: _cast(v, dtype) for k, v in lora_state_dict(transformer).items()}
        save_file(state, str(folder / LORA_FILE), metadata={"format": "pt", "lora_rank": str(cfg.train.lora_rank)})
    else:
        if dtype is not None and dtype != next(transformer.parameters()).dtype:
            # save_pretrained writes the module's own tensors, so cast a copy (the small models this is used for)
            transformer = copy.deepcopy(transformer).to(dtype)
        transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    metadata = {"methods": cfg.history.method, "rates": ",".join(cfg.history.rates)}
    for modules, name in ((model.producers, ENCODER_FILE), (model.enhancers, CROSS_ATTENTION_FILE)):
        if len(modules):
            state = {k: _cast(v, dtype) for k, v in modules.state_dict().items()}
            save_file(state, str(folder / name), metadata=metadata)


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return (tensor.to(dtype) if dtype is not None else tensor).detach().cpu().contiguous()


def base_transformer_reference(folder: str | Path) -> str:
    """How a LoRA checkpoint names its base: relative to the project root when inside it, else absolute."""
    folder = Path(folder).resolve()
    return str(folder.relative_to(PROJECT_ROOT)) if folder.is_relative_to(PROJECT_ROOT) else str(folder)


def load_model(
    folder: str | Path, dtype: torch.dtype = torch.float32, merge: bool = False
) -> tuple[HistoryDiT, RunConfig]:
    """Load a checkpoint folder written by :func:`save_weights` (always as ``dtype``, fp32 by default).

    ``merge``: fold a LoRA into the DiT's weights (inference only; the model can no longer be trained as a LoRA).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a tinyhistory checkpoint (no config.json)")
    cfg = config_from_dict(json.loads(config_path.read_text()))
    if (folder / LORA_FILE).is_file():
        base = resolve_path(cfg.backbone.base_transformer)
        if not (base / "config.json").is_file():
            raise FileNotFoundError(
                f"{folder}: the LoRA's base transformer {cfg.backbone.base_transformer!r} was not found ({base})"
            )
        transformer = WanTransformer3DModel.from_pretrained(base, torch_dtype=dtype)
        load_lora(transformer, folder / LORA_FILE, cfg.train.lora_rank)
        if merge:
            merge_lora(transformer)
    else:
        transformer = WanTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=dtype)
    model = HistoryDiT.from_config(cfg, transformer=transformer)
    for modules, name in ((model.producers, ENCODER_FILE), (model.enhancers, CROSS_ATTENTION_FILE)):
        if len(modules):
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"{folder}: this model ({cfg.history.method!r}) needs {name}")
            modules.load_state_dict({k: v.to(dtype) for k, v in load_file(str(path)).items()})
    return model.to(dtype), cfg


def trained_steps(folder: str | Path) -> int | None:
    """The last step in a checkpoint folder's ``train_log.jsonl`` (committed checkpoints carry their log)."""
    log = Path(folder) / "train_log.jsonl"
    if not log.is_file():
        return None
    steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines() if line.strip()]
    return max(steps) if steps else None


def save_training_state(folder: str | Path, optimizer, scheduler, step: int, data_rng: list[torch.Tensor]) -> None:
    """Optimizer, scheduler, step, and the window-sampling RNG of every process (``data_rng[rank]``)."""
    folder = Path(folder) / "state"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "optimizer.pt.tmp"
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp)
    tmp.replace(folder / "optimizer.pt")
    trainer = {
        "step": step,
        "data_rng": data_rng[0].tolist(),
        "data_rng_per_process": [state.tolist() for state in data_rng],
        "torch_rng": torch.get_rng_state().tolist(),
    }
    tmp = folder / "trainer.json.tmp"
    tmp.write_text(json.dumps(trainer))
    tmp.replace(folder / "trainer.json")


def load_training_state(
    folder: str | Path, optimizer, scheduler, generator: torch.Generator, rank: int = 0, processes: int = 1
) -> int:
    """Restore what :func:`save_training_state` wrote; each process takes back its own sampling RNG."""
    folder = Path(folder) / "state"
    blob = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    trainer = json.loads((folder / "trainer.json").read_text())
    per_process = trainer.get("data_rng_per_process", [trainer["data_rng"]])
    if len(per_process) != processes:
        raise ValueError(
            f"{folder.parent} was written by {len(per_process)} training process(es); resume it with the same "
            f"number (this run has {processes}), or start a new run folder"
        )
    generator.set_state(torch.tensor(per_process[rank], dtype=torch.uint8))
    torch.set_rng_state(torch.tensor(trainer["torch_rng"], dtype=torch.uint8))
    return int(trainer["step"])
