"""The HunyuanVideo VAE (diffusers ``AutoencoderKLHunyuanVideo``) behind the codec protocol.

Latents are scaled the way the HunyuanVideo pipelines do: ``z · scaling_factor`` after encoding (the image-to-video
and FramePack pipelines) and ``z / scaling_factor`` before decoding (every HunyuanVideo pipeline); there is no
per-channel mean/std as in Wan. We take the posterior's mode, as ``HunyuanVideoImageToVideoPipeline`` does
(``sample_mode="argmax"``), so cached latents are deterministic. The VAE is causal in time: ``1 + 4k`` frames become
``1 + k`` latent frames; 16 channels, 8×8 spatial for the released model.

Streaming (generation) is windowed, not exact: the VAE's GroupNorms normalise over time, so no piecewise call equals
a whole-video call (``codecs/streaming.py``). ``tiling`` and ``slicing`` are diffusers' own memory savers for small
GPUs (tiles in space and time, one sample at a time).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLHunyuanVideo

from tinyhistory.codecs.base import load_vae, require_folder
from tinyhistory.codecs.streaming import WindowedStreamDecoder, WindowedStreamEncoder


class HunyuanVAECodec:
    framewise = False  # causal in time: a window's latents depend on where the window starts

    def __init__(self, vae: AutoencoderKLHunyuanVideo, tiling: bool = False, slicing: bool = False) -> None:
        self.vae = vae.eval()
        cfg = vae.config
        self.latent_channels: int = cfg.latent_channels
        self.spatial_factor: int = cfg.spatial_compression_ratio
        self.temporal_factor: int = cfg.temporal_compression_ratio
        self.scaling_factor: float = float(cfg.scaling_factor)
        # Streams see this many latent frames before each new piece: one temporal tile of diffusers' own long-video
        # path (``tile_sample_min_num_frames`` 16 frames = 4 latents), so a piece has the context a tile has.
        self.stream_context: int = vae.tile_sample_min_num_frames // self.temporal_factor
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, **options) -> HunyuanVAECodec:
        """Load from a local diffusers folder (a model repo with ``vae/``, or the VAE folder itself)."""
        return cls(load_vae(AutoencoderKLHunyuanVideo, path, dtype, "HunyuanVideo VAE"), **options)

    @classmethod
    def from_config(cls, c) -> HunyuanVAECodec:
        """Registry constructor from the ``[codec]`` table (``codec.path``: the model folder or its ``vae/``)."""
        path = require_folder(c.path, "codec.path", c.kind, "diffusers")
        return cls.from_pretrained(path, tiling=c.tiling, slicing=c.slicing)

    def to(self, device: str | torch.device):
        """Run the VAE on ``device`` (a GPU for `data prepare`); tensors in and out stay where the caller has them."""
        self.vae.to(device)
        return self

    def stream_encoder(self) -> WindowedStreamEncoder:
        """Pixels in pieces → latents, each piece encoded after a context of :attr:`stream_context` latents' worth of
        frames. Not exact (see ``codecs/streaming.py``: this VAE normalises over time)."""
        return WindowedStreamEncoder(
            self.encode, self.temporal_factor, self.stream_context, self.latent_channels, self.spatial_factor
        )

    def stream_decoder(self) -> WindowedStreamDecoder:
        """Latents in pieces → pixels, each piece decoded after the last :attr:`stream_context` latents (not exact)."""
        return WindowedStreamDecoder(self.decode, self.temporal_factor, self.stream_context)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1 + 4k, H, W)`` in [-1, 1] → scaled latents ``(B, C, 1 + k, H/s, W/s)`` (the mode)."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"expected RGB pixels (B, 3, T, H, W), got {tuple(pixels.shape)}")
        _, _, t, h, w = pixels.shape
        if (t - 1) % self.temporal_factor:
            raise ValueError(
                f"the HunyuanVideo VAE needs 1 + {self.temporal_factor}k frames (1, 5, 9, ...), got {t} frames"
            )
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(
                f"pixel size {h}x{w} is not divisible by the HunyuanVideo VAE's factor {self.spatial_factor}"
            )
        weight = next(self.vae.parameters())
        latents = self.vae.encode(pixels.to(weight.device, weight.dtype)).latent_dist.mode().float().to(pixels.device)
        return latents * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents ``(B, C, 1 + k, h, w)`` → pixels ``(B, 3, 1 + 4k, h·s, w·s)`` in [-1, 1] (clamped)."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents (B, {self.latent_channels}, T, H, W) for the HunyuanVideo VAE, "
                f"got {tuple(latents.shape)}"
            )
        weight = next(self.vae.parameters())
        z = latents.float() / self.scaling_factor
        return self.vae.decode(z.to(weight.device, weight.dtype)).sample.float().clamp(-1, 1).to(latents.device)
