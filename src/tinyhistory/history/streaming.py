"""Incremental history encoding: encode only new latent frames and append their tokens (SPEC §6, §9).

The HR branch is causal in time, so a chunk that starts on a block boundary needs only ``receptive_field`` earlier
latent frames (rounded up to whole blocks) to give exactly the tokens a full re-encode would give; the LR branch
works block by block and needs none. The outputs for the carried-over frames are dropped.
"""

from __future__ import annotations

import math

import torch

from tinyhistory.backbones.base import ContextTokens


class IncrementalHistory:
    """A growing cache of history tokens for one producer (encoder or patchifier)."""

    def __init__(self, producer, patch_embed=None, with_features: bool = False):
        self.producer = producer
        self.patch_embed = patch_embed
        self.with_features = with_features  # keep the HR features too (cross-attention enhancement)
        self.block = producer.rate.t
        # Carried-over latent frames, rounded up to whole temporal blocks so kept outputs align.
        self.carry = math.ceil(producer.receptive_field / self.block) * self.block
        self.frames_encoded = 0
        self._tail: torch.Tensor | None = None  # (B, C, ≤carry, H, W) last HR latent frames seen
        self._parts: list[ContextTokens] = []

    @torch.no_grad()
    def append(self, hr_new: torch.Tensor, lr_new: torch.Tensor | None = None) -> ContextTokens:
        """Encode ``hr_new`` ``(B, C, n, H, W)`` (n a multiple of the rate's rT) and append its tokens."""
        n = hr_new.shape[2]
        if n % self.block:
            raise ValueError(
                f"incremental chunks must hold a multiple of rT={self.block} latent frames; got {n} frames"
            )
        prefix = self._tail if self._tail is not None else hr_new[:, :, :0]
        hr_input = torch.cat([prefix, hr_new], dim=2)
        skip_blocks = prefix.shape[2] // self.block
        lr_input = None
        if lr_new is not None:
            # The LR branch has no temporal receptive field; pad with placeholder blocks that are dropped below.
            pad = lr_new[:, :, :1].expand(-1, -1, skip_blocks, -1, -1) if skip_blocks else lr_new[:, :, :0]
            lr_input = torch.cat([pad, lr_new], dim=2)
        offset = self.frames_encoded - prefix.shape[2]
        tokens = self.producer(
            hr_input, lr_input, self.patch_embed, frame_offset=offset, return_features=self.with_features
        )
        per_block = tokens.num_tokens // (hr_input.shape[2] // self.block)
        new = tokens.narrow(skip_blocks * per_block)
        self._parts.append(new)
        self.frames_encoded += n
        self._tail = hr_input[:, :, hr_input.shape[2] - min(self.carry, hr_input.shape[2]) :] if self.carry else None
        return new

    @property
    def context(self) -> ContextTokens:
        if not self._parts:
            raise ValueError("no history has been appended yet")
        if len(self._parts) > 1:  # keep one tensor, so that reading the context stays cheap as history grows
            self._parts = [ContextTokens.concat(self._parts)]
        return self._parts[0]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to continue exactly: the tokens so far, the carried frames and the frame count."""
        state = {"frames_encoded": torch.tensor(self.frames_encoded)}
        if self._parts:
            ctx = self.context
            state["tokens"], state["positions"] = ctx.tokens, ctx.positions
            if ctx.features is not None:
                state["features"] = ctx.features
        if self._tail is not None:
            state["tail"] = self._tail
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.frames_encoded = int(state["frames_encoded"])
        self._parts = []
        if "tokens" in state:  # the producer's own tokens: its index marks them again (ContextTokens.sources)
            tokens = ContextTokens(state["tokens"], state["positions"], state.get("features"))
            self._parts = [tokens.from_source(self.producer.source)]
        self._tail = state.get("tail")
