"""The typed text condition every backbone takes: token states, their mask, and a pooled vector.

Wan reads only ``states`` (cross-attention over UMT5 states that are zero past each prompt); HunyuanVideo's MM-DiT
also needs the attention ``mask`` and CLIP's ``pooled`` vector. One type for all families keeps the training loop,
the objectives and the sampler free of family branches.

The *empty prompt* (classifier-free guidance's unconditional branch and stage II's text dropout) is the text
encoder's own encoding of ``""``, as the diffusers pipelines' negative prompt is; the tiny preset's committed
checkpoints were trained with all-zero states instead (``text.empty = "zeros"``).

On disk (the prompt cache ``text.cache``, a ``data prepare`` shard's shots, the cache's empty prompt) a condition is
one safetensors tensor per prompt and part, written by :meth:`TextCondition.to_tensors` and read by
:meth:`TextCondition.from_tensors`: only the names differ from file to file, so what is stored, in which dtype, and
how it comes back is decided here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

# What a condition holds, by the names its parts are stored under: states (L, D), mask (L,), pooled (P,).
PARTS = ("states", "mask", "pooled")


@dataclass
class TextCondition:
    states: torch.Tensor  # (B, L, D)
    mask: torch.Tensor | None = None  # (B, L) 1 on prompt tokens (families that need it)
    pooled: torch.Tensor | None = None  # (B, P) (families that need it)

    def __post_init__(self) -> None:
        if self.states.ndim != 3:
            raise ValueError(f"text states must be (B, L, D), got {tuple(self.states.shape)}")

    def __len__(self) -> int:
        return self.states.shape[0]

    def map(self, fn) -> TextCondition:
        """``fn`` applied to every tensor the condition holds (states, and mask and pooled where present)."""
        return TextCondition(
            fn(self.states),
            fn(self.mask) if self.mask is not None else None,
            fn(self.pooled) if self.pooled is not None else None,
        )

    def to(self, device: torch.device | str) -> TextCondition:
        return self.map(lambda x: x.to(device))

    def expand(self, batch: int) -> TextCondition:
        """A one-prompt condition repeated for ``batch`` samples."""
        if len(self) != 1:
            raise ValueError(f"only a single-prompt condition can be expanded, this one has {len(self)}")
        return self.map(lambda x: x.expand(batch, *x.shape[1:]))

    def where(self, keep: torch.Tensor, other: TextCondition) -> TextCondition:
        """Per sample: this condition where ``keep`` ``(B,)`` is true, else ``other`` (one prompt, broadcast)."""
        other = other.to(self.states.device)

        def pick(mine: torch.Tensor | None, theirs: torch.Tensor | None) -> torch.Tensor | None:
            if mine is None:
                return None
            k = keep.to(mine.device).view(-1, *[1] * (mine.ndim - 1))
            return torch.where(k, mine, theirs.to(mine.dtype).expand_as(mine))

        return TextCondition(
            pick(self.states, other.states), pick(self.mask, other.mask), pick(self.pooled, other.pooled)
        )

    @staticmethod
    def cat(parts: list[TextCondition]) -> TextCondition:
        """Stack conditions along the batch (the two halves of a guided batch, samples of a training batch)."""

        def join(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
            return None if any(t is None for t in tensors) else torch.cat(tensors)

        return TextCondition(
            torch.cat([p.states for p in parts]),
            join([p.mask for p in parts]),
            join([p.pooled for p in parts]),
        )

    def zeros_like(self) -> TextCondition:
        """One all-zero prompt shaped like this condition's samples."""
        return self.map(lambda x: torch.zeros_like(x[:1]))

    def to_tensors(
        self,
        name: Callable[[int, str, torch.Tensor], str],
        float_dtype: torch.dtype | None = None,
        mask_dtype: torch.dtype | None = None,
    ) -> dict[str, torch.Tensor]:
        """Each prompt's parts as separate tensors without the batch axis (CPU, contiguous), for a safetensors file.

        ``name(i, part, tensor)`` gives the name of prompt ``i``'s ``part`` (one of :data:`PARTS`; mask and pooled only
        where the condition has them), after any conversion, so a layout may write shape and dtype into the name.
        ``float_dtype``: the states' and pooled vectors' stored dtype, ``mask_dtype`` the mask's (None: as they are).
        """
        tensors = {}
        for part in PARTS:
            batch = getattr(self, part)
            if batch is None:
                continue
            dtype = mask_dtype if part == "mask" else float_dtype
            for i in range(len(self)):
                tensor = batch[i].to("cpu", dtype or batch.dtype).contiguous()
                tensors[name(i, part, tensor)] = tensor
        return tensors

    @classmethod
    def from_tensors(cls, read: Callable[[str], torch.Tensor], names: Mapping[str, str]) -> TextCondition:
        """One prompt's condition ``(1, ...)`` from what :meth:`to_tensors` stored.

        ``names`` maps ``"states"`` (and ``"mask"``, ``"pooled"`` where they were stored) to their names in the file;
        ``read(name)`` loads one (a dict's ``__getitem__``, a safetensors handle's ``get_tensor``). States and the
        pooled vector come back float32, the mask int64 (what the encoders give and the backbones take, whatever it
        was stored as: a shard keeps it as bool).
        """
        states, mask, pooled = (read(names[part])[None] if part in names else None for part in PARTS)
        return cls(states.float(), None if mask is None else mask.long(), None if pooled is None else pooled.float())
