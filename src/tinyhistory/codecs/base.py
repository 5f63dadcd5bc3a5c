"""The codec protocol: pixels ``(B, 3, T, H, W)`` in [-1, 1] ⇄ latents ``(B, C, T', H', W')``."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Codec(Protocol):
    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...
