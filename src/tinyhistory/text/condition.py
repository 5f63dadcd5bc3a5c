"""The typed text condition every backbone takes: token states, their mask, and a pooled vector.

Wan reads only ``states`` (cross-attention over UMT5 states that are zero past each prompt); HunyuanVideo's MM-DiT
also needs the attention ``mask`` and CLIP's ``pooled`` vector. One type for all families keeps the training loop,
the objectives and the sampler free of family branches.

The *empty prompt* (classifier-free guidance's unconditional branch and stage II's text dropout) is the text
encoder's own encoding of ``""``, as the diffusers pipelines' negative prompt is; the tiny preset's committed
checkpoints were trained with all-zero states instead (``text.empty = "zeros"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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
