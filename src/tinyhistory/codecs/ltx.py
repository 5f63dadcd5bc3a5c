"""The LTX-Video VAE (diffusers ``AutoencoderKLLTXVideo``) behind the codec protocol.

Latents are normalised the way ``LTXPipeline`` does it (``_normalize_latents`` / ``_denormalize_latents``): per
channel with the VAE's ``latents_mean`` / ``latents_std`` *buffers* (stored with the weights, not in the config) and
its ``scaling_factor``, ``(z − mean) · s / std`` after encoding and ``z · std / s + mean`` before decoding, in that
order, so the DiT sees what it was trained on and a decode equals the pipeline's to the bit. We take the posterior's
mode (as ``HunyuanVAECodec`` does), so cached latents are deterministic.

The released VAE compresses 32× in space and 8× in time with a causal first frame: ``1 + 8k`` frames become
``1 + k`` latent frames of 128 channels. Its encoder is causal in time but its decoder is not
(``decoder_causal = False``: each latent frame's pixels also read the next latents), and diffusers' VAE carries no
cache between calls, so streaming is windowed (``codecs/streaming.py``), not exact, as for HunyuanVideo.

LTX-Video 0.9.1 and later decode with timestep conditioning (``timestep_conditioning``): the decoder then takes the
pipeline's ``decode_timestep``, whose default in ``LTXPipeline`` is 0 with no added noise; that is what
:meth:`LTXVAECodec.decode` passes.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLLTXVideo

from tinyhistory.codecs.base import WindowedVAECodec


class LTXVAECodec(WindowedVAECodec):
    vae_class = AutoencoderKLLTXVideo
    title = "LTX-Video VAE"

    def __init__(self, vae: AutoencoderKLLTXVideo, tiling: bool = False, slicing: bool = False) -> None:
        super().__init__(vae, tiling, slicing)
        cfg = vae.config
        self.latent_channels: int = cfg.latent_channels
        self.spatial_factor: int = vae.spatial_compression_ratio
        self.temporal_factor: int = vae.temporal_compression_ratio
        self.scaling_factor: float = float(cfg.scaling_factor)
        self.timestep_conditioning: bool = bool(cfg.timestep_conditioning)
        # Streams see this many latent frames before each new piece: one temporal tile of diffusers' own long-video
        # path (``tile_sample_min_num_frames`` 16 frames = 2 latents), so a piece has the context a tile has.
        self.stream_context: int = max(1, vae.tile_sample_min_num_frames // self.temporal_factor)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``latents_mean`` and ``latents_std`` as ``(1, C, 1, 1, 1)`` on ``like``'s device and dtype (the pipeline's
        ``.to(latents.device, latents.dtype)``)."""
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        return mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """``(z − mean) · s / std``, as ``LTXPipeline._normalize_latents``."""
        mean, std = self._stats(z)
        return (z - mean) * self.scaling_factor / std

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """``z · std / s + mean``, as ``LTXPipeline._denormalize_latents``."""
        mean, std = self._stats(latents)
        return latents * std / self.scaling_factor + mean

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder with LTXPipeline's default ``decode_timestep`` (0) and ``decode_noise_scale`` (= the timestep:
        no noise added) where it is timestep-conditioned (LTX-Video 0.9.1 and later)."""
        timestep = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype) if self.timestep_conditioning else None
        return self.vae.decode(z, timestep).sample

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    # vae/config.json of the released VAE by the preset's ``base``: Lightricks/LTX-Video's diffusers folder holds the
    # 0.9.0 VAE, whose config (diffusers' convert_ltx_to_diffusers.py, get_vae_config("0.9.0")) is
    # AutoencoderKLLTXVideo's defaults: 128 channels, 32× space, 8× time. The 0.9.1+ VAEs (timestep-conditioned
    # decoder) differ in size: give their folder with --model DIR.
    released = {"ltx-video": {}}

    @classmethod
    def meta(cls, config: dict) -> LTXVAECodec:
        """The codec around ``AutoencoderKLLTXVideo`` of ``config`` on the meta device in fp32 (as generation keeps
        it): exact shapes and parameter counts, no weights."""
        with torch.device("meta"):
            return cls(AutoencoderKLLTXVideo.from_config(dict(config)))
