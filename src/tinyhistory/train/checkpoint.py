"""Checkpoints: model weights as safetensors, training state loadable with ``weights_only=True``.

Layout of a checkpoint folder::

    config.json                       resolved run config
    transformer/                      diffusers ``save_pretrained`` of the (tiny, fully trained) DiT
    history_encoder.safetensors       every history producer's weights (absent for no-history)
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
from tinyhistory.system import HistoryDiT

ENCODER_FILE = "history_encoder.safetensors"


def save_weights(model: HistoryDiT, cfg: RunConfig, folder: str | Path, dtype: torch.dtype | None = None) -> None:
    """Write the config, the DiT (diffusers format) and the history producers, optionally cast (e.g. fp16)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save(folder / "config.json")
    transformer = model.backbone.transformer
    if dtype is not None and dtype != next(transformer.parameters()).dtype:
        # save_pretrained writes the module's own tensors, so cast a copy (the small models this is used for)
        transformer = copy.deepcopy(transformer).to(dtype)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    if len(model.producers):
        enc = {
            k: (v.to(dtype) if dtype is not None else v).detach().cpu().contiguous()
            for k, v in model.producers.state_dict().items()
        }
        save_file(
            enc,
            str(folder / ENCODER_FILE),
            metadata={"methods": cfg.history.method, "rates": ",".join(cfg.history.rates)},
        )


def load_model(folder: str | Path, dtype: torch.dtype = torch.float32) -> tuple[HistoryDiT, RunConfig]:
    """Load a checkpoint folder written by :func:`save_weights` (always as ``dtype``, fp32 by default)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a tinyhistory checkpoint (no config.json)")
    cfg = config_from_dict(json.loads(config_path.read_text()))
    transformer = WanTransformer3DModel.from_pretrained(folder / "transformer", torch_dtype=dtype)
    model = HistoryDiT.from_config(cfg, transformer=transformer)
    if len(model.producers):
        path = folder / ENCODER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: method {cfg.history.method!r} needs {ENCODER_FILE}")
        model.producers.load_state_dict({k: v.to(dtype) for k, v in load_file(str(path)).items()})
    return model.to(dtype), cfg


def save_training_state(folder: str | Path, optimizer, scheduler, step: int, generator: torch.Generator) -> None:
    folder = Path(folder) / "state"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "optimizer.pt.tmp"
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp)
    tmp.replace(folder / "optimizer.pt")
    trainer = {
        "step": step,
        "data_rng": generator.get_state().tolist(),
        "torch_rng": torch.get_rng_state().tolist(),
    }
    tmp = folder / "trainer.json.tmp"
    tmp.write_text(json.dumps(trainer))
    tmp.replace(folder / "trainer.json")


def load_training_state(folder: str | Path, optimizer, scheduler, generator: torch.Generator) -> int:
    folder = Path(folder) / "state"
    blob = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    trainer = json.loads((folder / "trainer.json").read_text())
    generator.set_state(torch.tensor(trainer["data_rng"], dtype=torch.uint8))
    torch.set_rng_state(torch.tensor(trainer["torch_rng"], dtype=torch.uint8))
    return int(trainer["step"])
