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

from pathlib import Path

import torch
from diffusers import AutoencoderKLLTXVideo

from tinyhistory.codecs.base import load_vae, require_folder
from tinyhistory.codecs.streaming import WindowedStreamDecoder, WindowedStreamEncoder


class LTXVAECodec:
    framewise = False  # causal in time: a window's latents depend on where the window starts

    def __init__(self, vae: AutoencoderKLLTXVideo, tiling: bool = False, slicing: bool = False) -> None:
        self.vae = vae.eval()
        cfg = vae.config
        self.latent_channels: int = cfg.latent_channels
        self.spatial_factor: int = vae.spatial_compression_ratio
        self.temporal_factor: int = vae.temporal_compression_ratio
        self.scaling_factor: float = float(cfg.scaling_factor)
        self.timestep_conditioning: bool = bool(cfg.timestep_conditioning)
        # Streams see this many latent frames before each new piece: one temporal tile of diffusers' own long-video
        # path (``tile_sample_min_num_frames`` 16 frames = 2 latents), so a piece has the context a tile has.
        self.stream_context: int = max(1, vae.tile_sample_min_num_frames // self.temporal_factor)
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, **options) -> LTXVAECodec:
        """Load from a local diffusers folder (a model repo with ``vae/``, or the VAE folder itself)."""
        return cls(load_vae(AutoencoderKLLTXVideo, path, dtype, "LTX-Video VAE"), **options)

    @classmethod
    def from_config(cls, c) -> LTXVAECodec:
        """Registry constructor from the ``[codec]`` table (``codec.path``: the model folder or its ``vae/``)."""
        path = require_folder(c.path, "codec.path", c.kind, "diffusers")
        return cls.from_pretrained(path, tiling=c.tiling, slicing=c.slicing)

    def to(self, device: str | torch.device):
        """Run the VAE on ``device`` (a GPU for `data prepare`); tensors in and out stay where the caller has them."""
        self.vae.to(device)
        return self

    def stream_encoder(self) -> WindowedStreamEncoder:
        """Pixels in pieces → latents, each piece encoded after a context of :attr:`stream_context` latents' worth of
        frames (not exact: see the module docstring)."""
        return WindowedStreamEncoder(
            self.encode, self.temporal_factor, self.stream_context, self.latent_channels, self.spatial_factor
        )

    def stream_decoder(self) -> WindowedStreamDecoder:
        """Latents in pieces → pixels, each piece decoded after the last :attr:`stream_context` latents (not exact: the
        decoder also reads later latents, which a stream does not have yet)."""
        return WindowedStreamDecoder(self.decode, self.temporal_factor, self.stream_context)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``latents_mean`` and ``latents_std`` as ``(1, C, 1, 1, 1)`` on ``like``'s device and dtype (the pipeline's
        ``.to(latents.device, latents.dtype)``)."""
        mean = self.vae.latents_mean.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        std = self.vae.latents_std.view(1, -1, 1, 1, 1).to(like.device, like.dtype)
        return mean, std

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1 + 8k, H, W)`` in [-1, 1] → normalised latents ``(B, C, 1 + k, H/32, W/32)`` (the mode)."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"expected RGB pixels (B, 3, T, H, W), got {tuple(pixels.shape)}")
        _, _, t, h, w = pixels.shape
        f = self.temporal_factor
        if (t - 1) % f:
            raise ValueError(f"the LTX-Video VAE needs 1 + {f}k frames (1, {1 + f}, {1 + 2 * f}, ...), got {t} frames")
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(f"pixel size {h}x{w} is not divisible by the LTX-Video VAE's factor {self.spatial_factor}")
        weight = next(self.vae.parameters())
        z = self.vae.encode(pixels.to(weight.device, weight.dtype)).latent_dist.mode().float().to(pixels.device)
        mean, std = self._stats(z)
        return (z - mean) * self.scaling_factor / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, C, 1 + k, h, w)`` → pixels ``(B, 3, 1 + 8k, 32h, 32w)`` in [-1, 1] (clamped)."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents (B, {self.latent_channels}, T, H, W) for the LTX-Video VAE, "
                f"got {tuple(latents.shape)}"
            )
        weight = next(self.vae.parameters())
        z = latents.float()
        mean, std = self._stats(z)
        z = (z * std / self.scaling_factor + mean).to(weight.device, weight.dtype)
        # LTXPipeline's default decode_timestep (0) and decode_noise_scale (= decode_timestep: no noise added)
        timestep = torch.zeros(z.shape[0], device=z.device, dtype=z.dtype) if self.timestep_conditioning else None
        return self.vae.decode(z, timestep).sample.float().clamp(-1, 1).to(latents.device)
