"""Is this model folder the preset's model — its family *and* its variant — before any work?

The family check (``backbones.base.check_model_folder``: ``model_index.json``'s pipeline class) lets every Wan folder
through every Wan preset, yet the Wan variants are different models: Wan 2.1 T2V (16 latent channels, an 8× VAE),
Wan 2.2 TI2V-5B (48 channels, a 16× VAE, per-token timesteps: ``expand_timesteps``), Wan 2.2 A14B (two experts:
``transformer`` for high noise, ``transformer_2`` for low). A Wan 2.1 folder under the TI2V-5B preset was accepted by
``plan``, ``data prepare`` and ``train`` without a word (seen in issue 27): caches at the wrong fps, a plan for the
wrong model, a run that only fails — if at all — deep inside the DiT. Here the folder's own configs are compared with
what the preset's base (``tinyhistory.geometry``) and its variant need, and a mismatch is one line naming the folder,
each key that differs, its value, what the preset expects, and the preset that would fit the folder.

Only structure is compared (latent channels, VAE factors, patch size, experts, ``expand_timesteps``), not sizes:
the tests and fine-tunes use smaller DiTs of the same structure. The one size that is compared is the DiT's width
when it is that of *another* Wan model (a 14B folder under a 1.3B preset), which is then certainly the wrong model.
HunyuanVideo has one preset and its own check of the pipeline class; the tiny and miniature presets build or train
their own DiT: neither is in ``VARIANTS``, so neither is checked here.

The configs are read as JSON (no weights, nothing built), so ``plan`` checks a folder in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tinyhistory.geometry import BaseGeometry, get_base
from tinyhistory.paths import resolve_path


@dataclass(frozen=True)
class Variant:
    """What a preset's base model is beyond its geometry: ``name`` for messages, the ``preset`` that trains on it,
    ``expand_timesteps`` (the TI2V pipelines' per-token timesteps) and ``experts`` (2: A14B's ``transformer_2``)."""

    name: str
    preset: str
    expand_timesteps: bool
    experts: int


# Keyed by the preset's ``base``, whose geometry (tinyhistory.geometry.get_base: the preset's [geometry] and
# [backbone]) holds the latent channels, VAE factors, patch and width.
VARIANTS: dict[str, Variant] = {
    "wan2.1-1.3b": Variant("Wan 2.1 T2V-1.3B", "wan2.1-t2v-1.3b", expand_timesteps=False, experts=1),
    "wan2.1-14b": Variant("Wan 2.1 T2V-14B", "wan2.1-t2v-14b", expand_timesteps=False, experts=1),
    "wan2.2-ti2v-5b": Variant("Wan 2.2 TI2V-5B", "wan2.2-ti2v-5b", expand_timesteps=True, experts=1),
    "wan2.2-a14b-high": Variant("Wan 2.2 T2V-A14B", "wan2.2-t2v-a14b", expand_timesteps=False, experts=2),
}


@dataclass(frozen=True)
class _Folder:
    """What the checks read of a folder (``None``: the file or key is absent, so nothing is said about it)."""

    expand_timesteps: bool | None
    experts: int | None
    in_channels: int | None
    patch: tuple[int, ...] | None
    hidden: int | None
    z_dim: int | None
    vae_spatial: int | None
    vae_temporal: int | None


def _read(path: Path) -> dict | None:
    """A config file's JSON object, None when absent; a damaged one is named (never skipped: it could hide one)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise ValueError(f"{path}: cannot read this model config ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a model config (expected a JSON object, got {type(data).__name__})")
    return data


def _vae_config(codec_folder: Path | None) -> tuple[Path | None, dict | None]:
    """The VAE's ``config.json`` where the Wan codec loads it: ``DIR/vae/`` of a model folder, or ``DIR`` itself."""
    if codec_folder is None:
        return None, None
    path = codec_folder / "vae" / "config.json" if (codec_folder / "vae").is_dir() else codec_folder / "config.json"
    return path, _read(path)


def _read_folder(folder: Path, transformer: str, codec_folder: Path | None) -> tuple[_Folder, dict[str, str]]:
    """The folder's structure and, per field, the file and key it was read from (for the message)."""
    index = _read(folder / "model_index.json") or {}
    dit = _read(folder / transformer / "config.json") or {}
    vae_path, vae = _vae_config(codec_folder)
    vae = vae or {}
    second = index.get("transformer_2")
    experts = None
    if "transformer" in index or "transformer_2" in index:
        experts = 2 if isinstance(second, list) and second and second[0] is not None else 1
    hidden = None
    if isinstance(dit.get("num_attention_heads"), int) and isinstance(dit.get("attention_head_dim"), int):
        hidden = dit["num_attention_heads"] * dit["attention_head_dim"]
    patch = dit.get("patch_size")
    has_vae = vae_path is not None and bool(vae)
    found = _Folder(
        expand_timesteps=bool(index.get("expand_timesteps", False)) if index else None,
        experts=experts,
        in_channels=dit.get("in_channels"),
        patch=tuple(patch) if isinstance(patch, list) else None,
        hidden=hidden,
        z_dim=vae.get("z_dim"),
        # diffusers' AutoencoderKLWan defaults (8, 4): the Hub's Wan 2.1 VAE configs predate these keys
        vae_spatial=vae.get("scale_factor_spatial", 8) if has_vae else None,
        vae_temporal=vae.get("scale_factor_temporal", 4) if has_vae else None,
    )
    dit_file = f"{transformer}/config.json"
    vae_file = str(vae_path.relative_to(folder)) if vae_path and vae_path.is_relative_to(folder) else str(vae_path)
    where = {
        "expand_timesteps": "model_index.json expand_timesteps",
        "experts": "model_index.json transformer_2",
        "in_channels": f"{dit_file} in_channels",
        "patch": f"{dit_file} patch_size",
        "hidden": f"{dit_file} num_attention_heads × attention_head_dim",
        "z_dim": f"{vae_file} z_dim",
        "vae_spatial": f"{vae_file} scale_factor_spatial",
        "vae_temporal": f"{vae_file} scale_factor_temporal",
    }
    return found, where


def _expected(base: BaseGeometry, variant: Variant) -> dict:
    return {
        "expand_timesteps": variant.expand_timesteps,
        "experts": variant.experts,
        "in_channels": base.latent_channels,
        "patch": tuple(base.patch),
        "z_dim": base.latent_channels,
        "vae_spatial": base.vae_spatial,
        "vae_temporal": base.vae_temporal,
    }


def _shown(field: str, value) -> str:
    """A value as the user would read it in the file (``transformer_2``: present or not)."""
    if field == "experts":
        return "a second expert" if value == 2 else "none"
    if field == "patch":
        return json.dumps(list(value))
    return json.dumps(value)


def _differences(found: _Folder, base: BaseGeometry, variant: Variant) -> dict[str, tuple]:
    """Field → (found, expected) for every structural key the folder states and the variant contradicts."""
    out = {}
    for field, want in _expected(base, variant).items():
        have = getattr(found, field)
        if have is not None and have != want:
            out[field] = (have, want)
    other_widths = {get_base(b).hidden_dim for b in VARIANTS if get_base(b).hidden_dim != base.hidden_dim}
    if found.hidden is not None and found.hidden != base.hidden_dim and found.hidden in other_widths:
        out["hidden"] = (found.hidden, base.hidden_dim)
    return out


def check_variant(folder: str | Path, base_name: str, preset: str, transformer: str = "transformer",
                  codec_folder: str | Path | None = None) -> None:  # fmt: skip
    """Refuse (``ValueError``, one line) a model ``folder`` that is not the variant of ``base_name`` (a preset's
    ``base``): the line names the folder, each differing key with its value and what ``preset`` expects, and the
    presets the folder would fit. ``codec_folder``: where the Wan VAE is read (the folder itself unless
    ``codec.path`` names another). Bases without a ``VARIANTS`` entry, and files or keys absent from the folder, are
    not checked here (the family and parts checks name a missing file)."""
    variant = VARIANTS.get(base_name)
    if variant is None:
        return
    folder = resolve_path(folder)
    codec = resolve_path(codec_folder) if codec_folder else None
    found, where = _read_folder(folder, transformer, codec)
    base = get_base(base_name)
    differences = _differences(found, base, variant)
    if not differences:
        return
    said = "; ".join(
        f"{where[field]} = {_shown(field, have)} where {variant.name} has {_shown(field, want)}"
        for field, (have, want) in differences.items()
    )
    fits = [v.preset for b, v in VARIANTS.items() if not _differences(found, get_base(b), v)]
    hint = f"; it looks like {' or '.join(fits)}: give that --preset" if fits else ""
    raise ValueError(f"model folder {folder} is not a {variant.name} model (preset {preset!r}): {said}{hint}")


def check_model_variant(cfg, folder: str | Path | None = None) -> None:
    """The family, then :func:`check_variant`, for a run config (``RunConfig``): its model folder (``folder``, else
    ``model.path``) against its ``base``, the VAE read where the run reads it (``codec.path``, else the folder, when
    the codec is Wan's VAE). The family comes first so that a folder of another family is named as such, not by a
    key of a config it does not share. Nothing to check without a model folder or for a base not in ``VARIANTS``."""
    folder = folder or cfg.model.path
    if not folder or cfg.base not in VARIANTS:
        return
    from tinyhistory.backbones.base import check_model_folder
    from tinyhistory.registry import BACKBONES

    check_model_folder(resolve_path(folder), BACKBONES.get(cfg.backbone.family), ())
    codec = (cfg.codec.path or folder) if cfg.codec.kind == "wan" else None
    check_variant(folder, cfg.base, cfg.preset, cfg.model.transformer, codec)
