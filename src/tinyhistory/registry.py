"""One registry per seam: the names a config may use, and where each implementation lives.

The config validates names against these tables at load time without importing torch or diffusers (entries are
``"module:attribute"`` strings, imported on first use). Adding a base-model family is one adapter file, one line in
``BACKBONES`` and one preset; nothing in ``assemble.py``, ``train/`` or ``generate/`` names a family.
"""

from __future__ import annotations

import importlib
from typing import Any


class Registry:
    """Names → lazily imported implementations for one config key (e.g. ``backbone.family``)."""

    def __init__(self, key: str, entries: dict[str, str]):
        self.key = key
        self._entries = dict(entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name: str) -> None:
        """Raise a ValueError naming the config key, the bad value and every registered name."""
        if name not in self._entries:
            raise ValueError(f"{self.key} = {name!r} is not allowed; expected one of {', '.join(self._entries)}")

    def get(self, name: str) -> Any:
        self.check(name)
        module, attributes = self._entries[name].split(":")
        found = importlib.import_module(module)
        for attribute in attributes.split("."):
            found = getattr(found, attribute)
        return found


BACKBONES = Registry(
    "backbone.family",
    {
        "wan": "tinyhistory.backbones.wan:WanBackbone",
        "hunyuan": "tinyhistory.backbones.hunyuan:HunyuanBackbone",
        "ltx": "tinyhistory.backbones.ltx:LTXBackbone",
    },
)

CODECS = Registry(
    "codec.kind",
    {
        "pixel": "tinyhistory.codecs.pixel:PixelUnshuffleCodec",
        "wan": "tinyhistory.codecs.wan:WanVAECodec",
        "hunyuan": "tinyhistory.codecs.hunyuan:HunyuanVAECodec",
        "ltx": "tinyhistory.codecs.ltx:LTXVAECodec",
        "learned": "tinyhistory.codecs.learned:LearnedCodec",
    },
)

TEXT_ENCODERS = Registry(
    "text.kind",
    {
        "minilm": "tinyhistory.text.minilm:MiniLMTextEncoder",
        "umt5": "tinyhistory.text.umt5:UMT5TextEncoder",
        "hunyuan": "tinyhistory.text.hunyuan:HunyuanTextEncoder",
        "t5": "tinyhistory.text.t5:T5TextEncoder",
    },
)

# A history method names the factory ``(method, rate, history config, backbone) -> producer or None`` of the module
# that turns history latents into context tokens.
HISTORY_METHODS = Registry(
    "history.method",
    {
        "proposed": "tinyhistory.history.encoder:HistoryEncoder.from_config",
        "only_lr": "tinyhistory.history.encoder:HistoryEncoder.from_config",
        "without_lr": "tinyhistory.history.encoder:HistoryEncoder.from_config",
        "large_patchifier": "tinyhistory.history.patchifier:LargePatchifier.from_config",
        "no_history": "tinyhistory.history.base:no_producer",
    },
)
