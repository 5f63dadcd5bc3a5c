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

import torch
from diffusers import AutoencoderKLHunyuanVideo

from tinyhistory.codecs.base import WindowedVAECodec


class HunyuanVAECodec(WindowedVAECodec):
    vae_class = AutoencoderKLHunyuanVideo
    title = "HunyuanVideo VAE"

    def __init__(self, vae: AutoencoderKLHunyuanVideo, tiling: bool = False, slicing: bool = False) -> None:
        super().__init__(vae, tiling, slicing)
        cfg = vae.config
        self.latent_channels: int = cfg.latent_channels
        self.spatial_factor: int = cfg.spatial_compression_ratio
        self.temporal_factor: int = cfg.temporal_compression_ratio
        self.scaling_factor: float = float(cfg.scaling_factor)
        # Streams see this many latent frames before each new piece: one temporal tile of diffusers' own long-video
        # path (``tile_sample_min_num_frames`` 16 frames = 4 latents), so a piece has the context a tile has.
        self.stream_context: int = vae.tile_sample_min_num_frames // self.temporal_factor

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents ``· scaling_factor`` (the image-to-video and FramePack pipelines)."""
        return z * self.scaling_factor

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """``/ scaling_factor`` before decoding (every HunyuanVideo pipeline)."""
        return latents / self.scaling_factor

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    # vae/config.json of the released VAE by the preset's ``base``: hunyuanvideo-community/HunyuanVideo's is
    # AutoencoderKLHunyuanVideo's defaults (diffusers' convert script builds it with them: 16 channels, 8× space, 4×
    # time, blocks 128-256-512-512).
    released = {"hunyuanvideo": {}}

    @classmethod
    def meta(cls, config: dict) -> HunyuanVAECodec:
        """The codec around ``AutoencoderKLHunyuanVideo`` of ``config`` on the meta device in fp32 (as generation
        keeps it): exact shapes and parameter counts, no weights."""
        with torch.device("meta"):
            return cls(AutoencoderKLHunyuanVideo.from_config(dict(config)))
