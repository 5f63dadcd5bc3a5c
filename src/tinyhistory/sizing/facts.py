"""The shape of a family's sizing facts: what a released checkpoint is, in data (no torch, no diffusers).

Why here and not in each adapter: every family declares the same kind of fact, and the sizing tools read it the same
way; the values themselves live with the family (``released`` on the backbone adapter, the codec and the text
encoder classes), under a ``# -- sizing facts (sizing/ reads these) --`` block.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReleasedDiT:
    """One released DiT of a family, keyed in its adapter's ``released`` by the preset's ``base`` name.

    ``name``: the checkpoint as outputs name it; ``config``: its ``transformer/config.json`` as diffusers writes it;
    ``second_expert``: the checkpoint has a ``transformer_2/`` of the same config that generation also loads (Wan 2.2
    A14B's low-noise expert), as ``model_index.json``'s ``boundary_ratio`` says for a model folder; ``source``: where
    the numbers come from.
    """

    name: str
    config: dict = field(hash=False)
    second_expert: bool = False
    source: str = ""

    @property
    def kwargs(self) -> dict:
        """Constructor kwargs (diffusers' ``_class_name`` / ``_diffusers_version`` dropped)."""
        return {k: v for k, v in self.config.items() if not k.startswith("_")}
