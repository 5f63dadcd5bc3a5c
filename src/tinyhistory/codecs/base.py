"""The codec protocol: pixels ``(B, 3, T, H, W)`` in [-1, 1] ⇄ latents ``(B, C, T', H', W')``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Codec(Protocol):
    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def to(self, device: str | torch.device) -> Codec: ...

    def encode(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...

    def stream_encoder(self):
        """Pixels pushed in pieces → exactly the latents of one :meth:`encode` (``push``, ``state_dict``)."""
        ...

    def stream_decoder(self):
        """Latents pushed in pieces → exactly the pixels of one :meth:`decode`."""
        ...


def require_folder(path: str | Path, key: str, kind: str, what: str) -> Path:
    """A config's model folder, checked when it is first needed (training from a cache needs no VAE or text encoder,
    so a config without one is valid until then)."""
    if not str(path):
        raise ValueError(
            f"{key} must name a local {what} folder when {key.split('.')[0]}.kind = {kind!r} (or give the model "
            "folder with --model DIR)"
        )
    return Path(path)


def crop_to_factor(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """Keep the top-left ``(H, W)`` of ``(..., H, W)`` pixels that are multiples of a codec's spatial ``factor``."""
    h, w = pixels.shape[-2:]
    return pixels[..., : h // factor * factor, : w // factor * factor]


def load_vae(model_class, path: str | Path, dtype: torch.dtype, what: str):
    """A diffusers VAE from a local folder (never downloaded): a model repo's ``vae/`` subfolder, or the VAE folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    subfolder = "vae" if (path / "vae").is_dir() else None
    return model_class.from_pretrained(
        path, subfolder=subfolder, torch_dtype=dtype, local_files_only=True, use_safetensors=True
    )


def check_causal_frames(frames: int, temporal_factor: int, key: str) -> None:
    """A causal VAE encodes ``1 + f·k`` frames; any other count would silently lose frames at the end. Name ``key``."""
    if temporal_factor > 1 and (frames - 1) % temporal_factor:
        example = 1 + temporal_factor * max(1, (frames - 1) // temporal_factor)
        raise ValueError(
            f"{key} = {frames}: a causal VAE with temporal factor {temporal_factor} encodes 1 + {temporal_factor}k "
            f"frames (e.g. {example}); other frame counts lose frames at the end"
        )
