"""Checkpoints: what trains, as safetensors; training state loadable with ``weights_only=True``.

A checkpoint never holds the frozen base model. Layout of a checkpoint folder::

    config.json                       resolved run config (``model.path`` names the user's base model folder)
    lora.safetensors                  the LoRA on the base DiT, diffusers keys (``train.dit = "lora"``, or a stage-II
                                      LoRA of the tiny preset on the DiT named by ``backbone.base_transformer``)
    lora_wan_comfyui.safetensors      the same LoRA in the family's portable layout (ComfyUI, WanPipeline)
    transformer/                      diffusers ``save_pretrained`` of a fully trained DiT (``train.dit = "full"``)
    history_encoder.safetensors       every history producer's weights (absent for no-history)
    cross_attention.safetensors       the cross-attention enhancers (only with ``history.cross_attention``)
    state/optimizer.pt                optimizer + scheduler state (tensors and numbers only); under
                                      ``train.parallel = "fsdp"`` the scheduler only, and the optimizer in
    state/optimizer/                  a sharded ``torch.distributed.checkpoint`` (one file per rank; train/parallel.py)
    state/trainer.json                step, RNG states (as lists of bytes), data position
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from peft.utils import set_peft_model_state_dict
from safetensors.torch import save_file

from tinyhistory.assemble import HistoryDiT, torch_dtype
from tinyhistory.config import RunConfig, config_from_dict
from tinyhistory.files import read_json, read_jsonl, read_tensors
from tinyhistory.hashing import hash_into
from tinyhistory.paths import PROJECT_ROOT, resolve_path
from tinyhistory.registry import BACKBONES
from tinyhistory.train.lora import LORA_FILE, PREFIX, has_lora, load_lora, merge_lora, save_lora
from tinyhistory.variants import check_model_variant

ENCODER_FILE = "history_encoder.safetensors"
CROSS_ATTENTION_FILE = "cross_attention.safetensors"


def save_weights(
    model: HistoryDiT,
    cfg: RunConfig,
    folder: str | Path,
    dtype: torch.dtype | None = None,
    gathered: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the config and what trained (LoRA or the whole DiT, history producers, enhancers), optionally cast.

    ``gathered``: full tensors of the trained weights and the producers'/enhancers' state by ``model``'s state-dict
    names, for a sharded model whose own parameters are per-rank shards (train/parallel.py ``gather_trained``); the
    files are the same as a single-process run writes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg.save(folder / "config.json")
    backbone = model.backbone
    if has_lora(backbone):
        save_lora(backbone, folder, cfg.train.lora_rank, dtype, _within(gathered, "backbone.transformer."))
    elif gathered is not None:
        raise ValueError("a sharded run trains a LoRA on a frozen base (train.dit = 'lora'), not the whole DiT")
    else:
        if dtype is not None and dtype != next(backbone.parameters()).dtype:
            # save_pretrained writes the module's own tensors, so cast a copy (the small models this is used for)
            backbone = copy.deepcopy(backbone).to(dtype)
        backbone.save_pretrained(folder / "transformer")
        backbone.write_model_index(folder)  # the folder can be the frozen base of a LoRA run (--model FOLDER)
    metadata = {"methods": cfg.history.method, "rates": ",".join(cfg.history.rates)}
    for modules, name, prefix in (
        (model.producers, ENCODER_FILE, "producers."),
        (model.enhancers, CROSS_ATTENTION_FILE, "enhancers."),
    ):
        if len(modules):
            state = modules.state_dict() if gathered is None else _within(gathered, prefix)
            if gathered is not None and state.keys() != modules.state_dict().keys():
                missing = sorted(modules.state_dict().keys() - state.keys())
                raise ValueError(f"the gathered weights lack {prefix}{missing[:3]} (cannot write {name})")
            save_file({k: _cast(v, dtype) for k, v in state.items()}, str(folder / name), metadata=metadata)


def _within(state: dict[str, torch.Tensor] | None, prefix: str) -> dict[str, torch.Tensor] | None:
    """The entries of ``state`` under ``prefix``, with the prefix taken off (``None`` stays ``None``)."""
    if state is None:
        return None
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return (tensor.to(dtype) if dtype is not None else tensor).detach().cpu().contiguous()


def weights_sha256(folder: str | Path) -> str:
    """The sha256 of a diffusers model folder's safetensors weights (all shards, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.safetensors")):
        hash_into(digest, path)
    return digest.hexdigest()


def find_base_transformer(folder: Path, reference: str, sha256: str) -> Path:
    """A LoRA checkpoint's base DiT: the path it names, looked up in the working directory and in the project
    checkout; with a recorded hash, the candidate whose weights match it (never a same-named folder of other
    weights), else an error that says what was found."""
    candidates = [Path(reference)] if Path(reference).is_absolute() else [Path(reference), PROJECT_ROOT / reference]
    present = [c for c in candidates if (c / "config.json").is_file()]
    if not present:
        raise FileNotFoundError(f"{folder}: the LoRA's base transformer {reference!r} was not found ({candidates[0]})")
    if not sha256:
        return resolve_path(reference) if resolve_path(reference) in present else present[0]
    for candidate in present:
        if weights_sha256(candidate) == sha256:
            return candidate
    raise ValueError(
        f"{folder}: the LoRA's base transformer {reference!r} has other weights than it was trained on "
        f"({', '.join(str(c) for c in present)}; expected sha256 {sha256[:12]}…)"
    )


def base_transformer_reference(folder: str | Path) -> str:
    """How a LoRA checkpoint names its base: relative to the project root when inside it, else absolute."""
    folder = Path(folder).resolve()
    return str(folder.relative_to(PROJECT_ROOT)) if folder.is_relative_to(PROJECT_ROOT) else str(folder)


def read_config(folder: str | Path, model_path: str | None = None) -> RunConfig:
    """A checkpoint's config; ``model_path`` (``--model DIR``) replaces the base model folder it names."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: not a tinyhistory checkpoint (no config.json)")
    data = read_json(config_path, "checkpoint config")
    if not isinstance(data, dict):
        raise ValueError(f"{config_path}: not a tinyhistory checkpoint config (expected a JSON object)")
    if model_path:
        data.setdefault("model", {})["path"] = str(model_path)
    return config_from_dict(data)


def load_base(folder: Path, cfg: RunConfig, dtype: torch.dtype | None = None):
    """The frozen or trained DiT a checkpoint builds on: the user's model folder (``train.dit = "lora"``), the base
    named by ``backbone.base_transformer`` (a LoRA on a trained tiny DiT), or the checkpoint's own ``transformer/``."""
    adapter = BACKBONES.get(cfg.backbone.family)
    if cfg.train.dit == "lora":
        if not cfg.model.path:
            raise ValueError(f"{folder}: this LoRA checkpoint names no base model folder; give it with --model DIR")
        check_model_variant(cfg)  # the checkpoint's preset names the variant its LoRA and encoder were trained on
        base_dtype = dtype or torch_dtype(cfg.model.dtype)
        return adapter.from_pretrained(resolve_path(cfg.model.path), cfg.model.transformer, base_dtype)
    if (folder / LORA_FILE).is_file():
        base = find_base_transformer(folder, cfg.backbone.base_transformer, cfg.backbone.base_transformer_sha256)
        return adapter.from_transformer_folder(base, dtype or torch.float32)
    return adapter.from_transformer_folder(folder / "transformer", dtype or torch.float32)


def load_model(
    folder: str | Path,
    dtype: torch.dtype | None = None,
    merge: bool = False,
    model_path: str | None = None,
    with_lora: bool = True,
) -> tuple[HistoryDiT, RunConfig]:
    """Load a checkpoint folder written by :func:`save_weights`.

    ``dtype``: everything in this dtype; by default what trained is float32 and a frozen base keeps ``model.dtype``.
    ``merge``: fold a LoRA into the DiT's weights (inference only). ``model_path``: the base model folder, when it
    moved since training. ``with_lora=False``: the base and the history producers without the checkpoint's LoRA
    (stage II starts a fresh one).
    """
    folder = Path(folder)
    cfg = read_config(folder, model_path)
    model = HistoryDiT.from_config(cfg, load_base(folder, cfg, dtype))
    if with_lora and (folder / LORA_FILE).is_file():
        load_lora(model.backbone, folder / LORA_FILE, cfg.train.lora_rank)
        if merge:
            merge_lora(model.backbone)
    _load_modules(model, cfg.history.method, folder)
    if dtype is not None:
        model.to(dtype)
    return model, cfg


def _load_modules(model: HistoryDiT, method: str, folder: Path) -> None:
    """The history producers' and enhancers' weights from ``folder`` (``method``: ``history.method``, to name what
    needs a missing file)."""
    for modules, name in ((model.producers, ENCODER_FILE), (model.enhancers, CROSS_ATTENTION_FILE)):
        if len(modules):
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"{folder}: this model ({method!r}) needs {name}")
            first = next(modules.parameters(), None)
            if first is None:  # e.g. only-LR: the DiT's own patch embedding, no weights of its own to load
                continue
            dtype = first.dtype
            state = {k: v.to(dtype) for k, v in read_tensors(path, name.removesuffix(".safetensors")).items()}
            try:
                modules.load_state_dict(state)
            except RuntimeError as exc:
                first = str(exc).strip().splitlines()[:2]
                raise ValueError(f"{path}: does not fit this checkpoint's config.json ({' '.join(first)})") from None


def restore_trained(model: HistoryDiT, method: str, folder: str | Path) -> None:
    """Put a checkpoint's trained weights into ``model`` in place (resume): the LoRA or the whole DiT, and the
    history producers and enhancers. The frozen base is not read again.

    ``method``: ``history.method``, to name what needs a missing file. A whole DiT is read by ``model``'s own adapter
    (the family ``backbone.family`` built it), so nothing else of the run's config is needed here."""
    folder = Path(folder)
    transformer = model.backbone.transformer
    if (folder / LORA_FILE).is_file():
        state = {k[len(PREFIX) :]: v.float() for k, v in read_tensors(folder / LORA_FILE, "LoRA file").items()}
        result = set_peft_model_state_dict(transformer, state)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{folder / LORA_FILE}: unexpected LoRA keys {result.unexpected_keys[:3]}")
    else:
        trained = type(model.backbone).from_transformer_folder(folder / "transformer")
        transformer.load_state_dict(trained.transformer.state_dict())
    _load_modules(model, method, folder)


def trained_steps(folder: str | Path) -> int | None:
    """The last step in a checkpoint folder's ``train_log.jsonl`` (committed checkpoints carry their log)."""
    log = Path(folder) / "train_log.jsonl"
    if not log.is_file():
        return None
    steps = [record.get("step", 0) for record in read_jsonl(log, "training log", drop_damaged=True)]
    return max(steps) if steps else None


def save_training_state(folder: str | Path, optimizer, scheduler, step: int, data_rng: list[torch.Tensor]) -> None:
    """Optimizer, scheduler, step, and the window-sampling RNG of every process (``data_rng[rank]``).

    ``optimizer=None``: the optimizer's state is written elsewhere (sharded, train/parallel.py); the scheduler's and
    the rest still here. ``state/trainer.json`` is written last: a folder holding it holds the whole state.
    """
    folder = Path(folder) / "state"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "optimizer.pt.tmp"
    blob = {"scheduler": scheduler.state_dict()}
    if optimizer is not None:
        blob["optimizer"] = optimizer.state_dict()
    with open(tmp, "wb") as f:  # through a Python file, so a full disk is an OSError, not torch's "unexpected pos"
        torch.save(blob, f)
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
    folder: str | Path,
    optimizer,
    scheduler,
    generator: torch.Generator,
    rank: int = 0,
    processes: int = 1,
    reshard: bool = False,
) -> int:
    """Restore what :func:`save_training_state` wrote; each process takes back its own sampling RNG.

    ``optimizer=None``: its state is restored elsewhere (sharded). ``reshard``: the state may come from another
    number of processes (a sharded run's optimizer is resharded by DCP); rank ``r`` then takes the saved sampling
    RNG of rank ``r`` when there was one, else a stream of its own seeded from the RNG of rank 0 and ``r`` (the
    windows then differ from an uninterrupted run's, the weights and the optimizer's state do not).
    """
    folder = Path(folder) / "state"
    blob = torch.load(folder / "optimizer.pt", weights_only=True)
    if optimizer is not None:
        optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    trainer = read_json(folder / "trainer.json", "training state")
    per_process = trainer.get("data_rng_per_process", [trainer["data_rng"]])
    if len(per_process) != processes and not reshard:
        raise ValueError(
            f"{folder.parent} was written by {len(per_process)} training process(es); resume it with the same "
            f"number (this run has {processes}), or start a new run folder"
        )
    if rank < len(per_process):
        generator.set_state(torch.tensor(per_process[rank], dtype=torch.uint8))
    else:
        seed = int(torch.tensor(per_process[0], dtype=torch.uint8)[:8].view(torch.int64).abs().item())
        generator.manual_seed(seed + rank)
    torch.set_rng_state(torch.tensor(trainer["torch_rng"], dtype=torch.uint8))
    return int(trainer["step"])
