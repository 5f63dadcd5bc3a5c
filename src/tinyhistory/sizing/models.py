"""The released models every family declares, read through the registry: the one place sizing learns about families.

Why this exists: the cost model and the planner need the exact architecture of the DiTs, VAEs and text encoders the
real presets train on, and neither may download anything. Each family declares them on its own classes (``released``
on the backbone adapter, the codec and the text encoder, under a ``# -- sizing facts (sizing/ reads these) --``
block); this module finds them by the preset's names (``backbone.family``, ``codec.kind``, ``text.kind`` and
``base``), so a preset names its model once, by its ``base``, and no tool tests a family or a model by name. Built on
the ``meta`` device, a 14B DiT costs no memory and runs its forward in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from tinyhistory.config import RunConfig, load_config, preset_names
from tinyhistory.registry import BACKBONES, CODECS, TEXT_ENCODERS
from tinyhistory.sizing.facts import ReleasedDiT


@dataclass(frozen=True)
class Released:
    """A preset's released model: the DiT, the VAE's config and each text-encoder component's config, and the classes
    that declare and build them (the family's adapter, codec and text encoder)."""

    adapter: type
    codec: type
    text: type
    dit: ReleasedDiT
    vae: dict
    text_components: dict[str, dict]

    @property
    def name(self) -> str:
        return self.dit.name


def released(cfg: RunConfig) -> Released | None:
    """The released model a preset's ``base`` names in its family, or None (a CPU preset built from its
    ``[backbone]`` table). A family that declares the DiT must declare its VAE and text encoder too."""
    adapter = BACKBONES.get(cfg.backbone.family)
    dit = adapter.released.get(cfg.base)
    if dit is None:
        return None
    codec, text = CODECS.get(cfg.codec.kind), TEXT_ENCODERS.get(cfg.text.kind)
    if cfg.base not in codec.released:
        raise RuntimeError(f"codec.kind = {cfg.codec.kind!r} declares no released VAE for base {cfg.base!r}")
    return Released(adapter, codec, text, dit, codec.released[cfg.base], dict(text.released))


def released_presets() -> dict[str, Released]:
    """Every preset of a released model, by preset name (what ``cost`` and ``plan`` cover at real size)."""
    out = {}
    for name in preset_names():
        model = released(load_config(name))
        if model is not None:
            out[name] = model
    return out


def get_config(name: str) -> dict:
    """The ``transformer/config.json`` of the released DiT called ``name`` in any family (e.g. ``"Wan2.2-TI2V-5B"``);
    a ValueError names the known ones."""
    known = {dit.name: dit.config for family in BACKBONES.names() for dit in BACKBONES.get(family).released.values()}
    try:
        return known[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; released DiTs: {', '.join(known)}") from None


def meta_transformer(cfg: RunConfig) -> nn.Module:
    """The real-size DiT of a preset's released model on the ``meta`` device: exact shapes, no weights, no memory."""
    model = released(cfg)
    if model is None:
        raise ValueError(f"preset {cfg.preset!r} (base {cfg.base!r}) names no released model")
    return model.adapter.meta_transformer(model.dit.config)


def component_params(model_class: type, component: str, config: dict) -> int:
    """Exact parameter count of a text encoder's ``component`` of ``config`` (built by its class on meta)."""
    return sum(p.numel() for p in model_class.meta_model(component, config).parameters())
