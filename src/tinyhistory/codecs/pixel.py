"""Lossless pixel-unshuffle codec for the ``tiny`` preset.

64×64 RGB becomes a 16×16×48 "latent" (factor 4), mirroring Wan 2.2's 48 latent channels, with no temporal
compression. It is exact (``decode(encode(x)) == x``), so every number the tiny preset measures is about the
history encoder and the DiT, never about a codec's reconstruction error.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinyhistory.codecs.streaming import FramewiseStream


class PixelUnshuffleCodec:
    temporal_factor = 1
    framewise = True  # each latent frame depends on its own pixel frame only: cached windows may be concatenated
    reads_model_folder = False  # its own weights (or none), never a model folder's vae/

    def __init__(self, factor: int = 4, channels: int = 3):
        self.spatial_factor = factor
        self.latent_channels = channels * factor * factor

    @classmethod
    def from_config(cls, c) -> PixelUnshuffleCodec:
        """Registry constructor from the ``[codec]`` table."""
        return cls(factor=c.factor)

    def to(self, device: str | torch.device):
        """No weights: runs wherever its input is."""
        return self

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` → ``(B, 3·f², T, H/f, W/f)``."""
        b, c, t, h, w = pixels.shape
        f = self.spatial_factor
        if h % f or w % f:
            raise ValueError(f"pixel size {h}x{w} is not divisible by the codec factor {f}")
        frames = pixels.transpose(1, 2).reshape(b * t, c, h, w)
        latents = F.pixel_unshuffle(frames, f)
        return latents.reshape(b, t, c * f * f, h // f, w // f).transpose(1, 2)

    def stream_encoder(self) -> FramewiseStream:
        return FramewiseStream(self.encode)

    def stream_decoder(self) -> FramewiseStream:
        return FramewiseStream(self.decode)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Exact inverse of :meth:`encode`."""
        b, c, t, h, w = latents.shape
        f = self.spatial_factor
        frames = latents.transpose(1, 2).reshape(b * t, c, h, w)
        pixels = F.pixel_shuffle(frames, f)
        return pixels.reshape(b, t, c // (f * f), h * f, w * f).transpose(1, 2)
