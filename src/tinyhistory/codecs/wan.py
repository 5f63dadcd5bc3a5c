"""The Wan 2.1 / 2.2 VAE (diffusers ``AutoencoderKLWan``) behind the codec protocol.

Latents are normalised the way the Wan pipelines do (``(z − latents_mean) / latents_std`` per channel), so the DiT
sees what it was trained on. The VAE is causal in time: ``1 + 4k`` frames become ``1 + k`` latent frames (the
context-length arithmetic follows the paper's ``frames / 4`` convention, see ``geometry.py``). Wan 2.1: 16
channels, 8×8 spatial; Wan 2.2 TI2V-5B: 48 channels, 16×16 spatial (a 2×2 patchify inside the VAE).

``tiling`` and ``slicing`` are diffusers' own memory savers for small GPUs (tiles in space, one sample at a time).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from tinyhistory.codecs.base import load_vae, require_folder
from tinyhistory.codecs.streaming import WanStreamDecoder, WanStreamEncoder


class WanVAECodec:
    framewise = False  # causal in time: a window's latents depend on where the window starts

    def __init__(self, vae: AutoencoderKLWan, tiling: bool = False, slicing: bool = False):
        self.vae = vae.eval()
        cfg = vae.config
        self.latent_channels: int = cfg.z_dim
        self.spatial_factor: int = cfg.scale_factor_spatial
        self.temporal_factor: int = cfg.scale_factor_temporal
        self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, **options) -> WanVAECodec:
        """Load from a local diffusers folder (a model repo with ``vae/``, or the VAE folder itself)."""
        return cls(load_vae(AutoencoderKLWan, path, dtype, "Wan VAE"), **options)

    @classmethod
    def from_config(cls, c) -> WanVAECodec:
        """Registry constructor from the ``[codec]`` table (``codec.path``: the model folder or its ``vae/``)."""
        path = require_folder(c.path, "codec.path", c.kind, "diffusers")
        return cls.from_pretrained(path, tiling=c.tiling, slicing=c.slicing)

    def to(self, device: str | torch.device):
        """Run the VAE on ``device`` (a GPU for `data prepare`); tensors in and out stay where the caller has them."""
        self.vae.to(device)
        return self

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1 + 4k, H, W)`` in [-1, 1] → normalised latents ``(B, C, 1 + k, H/s, W/s)`` (the mode)."""
        b, c, t, h, w = pixels.shape
        if c != 3:
            raise ValueError(f"expected RGB pixels (B, 3, T, H, W), got {tuple(pixels.shape)}")
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(f"pixel size {h}x{w} is not divisible by the Wan VAE's factor {self.spatial_factor}")
        weight = next(self.vae.parameters())
        latents = self.vae.encode(pixels.to(weight.device, weight.dtype)).latent_dist.mode().float().to(pixels.device)
        return self.normalize(latents)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → pixels in [-1, 1] (clamped)."""
        weight = next(self.vae.parameters())
        z = self.denormalize(latents.float())
        return self.vae.decode(z.to(weight.device, weight.dtype)).sample.float().clamp(-1, 1).to(latents.device)

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's raw latents → what the DiT sees (the pipelines' per-channel mean/std)."""
        return (z - self._mean.to(z.device)) / self._std.to(z.device)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self._std.to(latents.device) + self._mean.to(latents.device)

    def stream_encoder(self) -> WanStreamEncoder:
        """Encode a video in pieces, exactly as one :meth:`encode` (the causal cache carried between calls)."""
        return WanStreamEncoder(self)

    def stream_decoder(self) -> WanStreamDecoder:
        """Decode latents in pieces, exactly as one :meth:`decode`."""
        return WanStreamDecoder(self)
