"""The Wan 2.1 / 2.2 VAE (diffusers ``AutoencoderKLWan``) behind the codec protocol.

Latents are normalised the way the Wan pipelines do (``(z − latents_mean) / latents_std`` per channel), so the DiT
sees what it was trained on. The VAE is causal in time: ``1 + 4k`` frames become ``1 + k`` latent frames (the
context-length arithmetic follows the paper's ``frames / 4`` convention, see ``geometry.py``). Wan 2.1: 16
channels, 8×8 spatial; Wan 2.2 TI2V-5B: 48 channels, 16×16 spatial (a 2×2 patchify inside the VAE).

``tiling`` and ``slicing`` are diffusers' own memory savers for small GPUs (tiles in space, one sample at a time).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan

from tinyhistory.codecs.base import DiffusersVAECodec
from tinyhistory.codecs.streaming import WanStreamDecoder, WanStreamEncoder


class WanVAECodec(DiffusersVAECodec):
    vae_class = AutoencoderKLWan
    title = "Wan VAE"
    whole_frames_only = False  # the VAE encodes frame 0, then whole chunks of 4, and drops the rest itself

    def __init__(self, vae: AutoencoderKLWan, tiling: bool = False, slicing: bool = False):
        super().__init__(vae, tiling, slicing)
        cfg = vae.config
        self.latent_channels: int = cfg.z_dim
        self.spatial_factor: int = cfg.scale_factor_spatial
        self.temporal_factor: int = cfg.scale_factor_temporal
        self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)

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

    # -- sizing facts (sizing/ reads these) ----------------------------------------------------------------------
    # vae/config.json of the released VAEs, keyed by the preset's ``base``: the Wan 2.1 VAE is AutoencoderKLWan's
    # default config (diffusers' convert_wan_to_diffusers.py, convert_vae: ``config={}``), which Wan 2.2 A14B keeps;
    # the Wan 2.2 VAE is the convert script's vae22_diffusers_config (latents_mean/std left out: normalisation
    # constants, not parameters).
    released = {
        "wan2.1-1.3b": {},
        "wan2.1-14b": {},
        "wan2.2-a14b-high": {},
        "wan2.2-ti2v-5b": {
            "base_dim": 160,
            "z_dim": 48,
            "is_residual": True,
            "in_channels": 12,
            "out_channels": 12,
            "decoder_base_dim": 256,
            "scale_factor_temporal": 4,
            "scale_factor_spatial": 16,
            "patch_size": 2,
        },
    }

    @classmethod
    def meta(cls, config: dict) -> WanVAECodec:
        """The codec around ``AutoencoderKLWan`` of ``config`` on the meta device in fp32, as generation keeps it
        (the normalisation constants, which a bare convert-script config omits, are filled to the latent width)."""
        z = int(config.get("z_dim", 16))
        with torch.device("meta"):
            vae = AutoencoderKLWan.from_config({**config, "latents_mean": [0.0] * z, "latents_std": [1.0] * z})
        return cls(vae)
