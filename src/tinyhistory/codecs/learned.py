"""A small learned image autoencoder: the tiny preset's stand-in for the paper's video VAEs.

Why it exists: with a lossless pixel-unshuffle "latent" every DiT token must paint raw 8×8-pixel blocks, which the
tiny DiT cannot learn from a few thousand frames, and the pictures become block mosaics. The paper's DiTs work on a
VAE latent whose decoder turns any latent into a smooth image. This codec gives the tiny preset the same kind of
bottleneck: 16 latent channels at 8× spatial compression (192 → 16 values, the HunyuanVideo VAE's spatial ratio),
trained for reconstruction (L1 + LPIPS, the project's own LPIPS) on the training footage only, by
``tinyhistory codec train`` (:mod:`tinyhistory.codecs.learned_train`).

It is *framewise* (each frame on its own, ``temporal_factor = 1``): a causal 3D VAE costs ~100 s a training step on a
2-core CPU, a 2D one about a second. Latents are normalised per channel with the training footage's mean and std
(stored with the weights), as Wan's pipelines normalise its VAE latents, so the DiT sees unit-scale inputs.

A codec folder holds ``config.json`` (the architecture and the normalisation) and ``codec.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tinyhistory.codecs.streaming import FramewiseStream

WEIGHTS_FILE = "codec.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class AutoencoderConfig:
    latent_channels: int = 16
    # Widths at 1/2, 1/4 and 1/8 of the frame (three stride-2 stages: 8× spatial). The full-resolution stem and head
    # are one conv each at the first width, which keeps a training step cheap on a CPU.
    channels: tuple[int, ...] = (32, 64, 128)
    # Per latent channel, measured on the training frames after training: latents = (z − mean) / std.
    latent_mean: list[float] = field(default_factory=list)
    latent_std: list[float] = field(default_factory=list)

    @property
    def spatial_factor(self) -> int:
        return 2 ** len(self.channels)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FrameAutoencoder(nn.Module):
    """``(N, 3, H, W)`` in [-1, 1] ⇄ ``(N, C, H/8, W/8)`` raw latents (deterministic: no sampling, no KL term)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        widths = list(config.channels)
        down: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        previous = widths[0]
        for width in widths:
            down += [nn.Conv2d(previous, width, 3, stride=2, padding=1), ResBlock(width)]
            previous = width
        down += [_norm(previous), nn.SiLU(), nn.Conv2d(previous, config.latent_channels, 1)]
        self.encoder = nn.Sequential(*down)
        up: list[nn.Module] = [nn.Conv2d(config.latent_channels, widths[-1], 3, padding=1), ResBlock(widths[-1])]
        previous = widths[-1]
        for width in reversed(widths):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(previous, width, 3, padding=1)]
            up += [ResBlock(width)] if width != widths[0] else []
            previous = width
        up += [_norm(previous), nn.SiLU(), nn.Conv2d(previous, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(frames))


def save_autoencoder(model: FrameAutoencoder, folder: str | Path) -> None:
    """``config.json`` + ``codec.safetensors`` in ``folder`` (written under temporary names, then renamed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(weights, str(tmp))
    tmp.replace(folder / WEIGHTS_FILE)
    config = asdict(model.config) | {"channels": list(model.config.channels)}
    (folder / (CONFIG_FILE + ".tmp")).write_text(json.dumps(config, indent=2) + "\n")
    (folder / (CONFIG_FILE + ".tmp")).replace(folder / CONFIG_FILE)


def load_autoencoder(folder: str | Path) -> FrameAutoencoder:
    """The autoencoder saved in ``folder`` by :func:`save_autoencoder`; errors name the folder and what is missing."""
    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"learned codec folder {folder} lacks {name} (expected what `tinyhistory codec train` writes)"
            )
    raw = json.loads((folder / CONFIG_FILE).read_text())
    try:
        config = AutoencoderConfig(**{**raw, "channels": tuple(raw["channels"])})
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{folder / CONFIG_FILE}: not a learned codec config ({exc})") from None
    model = FrameAutoencoder(config)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval()


class LearnedCodec:
    """The codec protocol around a trained :class:`FrameAutoencoder` (framewise, normalised latents)."""

    temporal_factor = 1
    framewise = True  # each latent frame depends on its own pixel frame only: cached windows may be concatenated
    reads_model_folder = False  # its own weights (or none), never a model folder's vae/

    def __init__(self, model: FrameAutoencoder, batch_frames: int = 64):
        self.model = model.eval().requires_grad_(False)
        c = model.config
        if len(c.latent_mean) != c.latent_channels or len(c.latent_std) != c.latent_channels:
            raise ValueError(
                f"the learned codec has no latent statistics for its {c.latent_channels} channels (a folder from "
                "an unfinished `tinyhistory codec train`?)"
            )
        self.latent_channels: int = c.latent_channels
        self.spatial_factor: int = c.spatial_factor
        self.batch_frames = batch_frames  # frames per autoencoder call (bounds memory on long windows)
        self._mean = torch.tensor(c.latent_mean).view(1, -1, 1, 1, 1)
        self._std = torch.tensor(c.latent_std).view(1, -1, 1, 1, 1)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LearnedCodec:
        return cls(load_autoencoder(folder))

    @classmethod
    def from_config(cls, c) -> LearnedCodec:
        """Registry constructor from the ``[codec]`` table (``codec.path``: the folder `codec train` wrote)."""
        from tinyhistory.codecs.base import require_folder
        from tinyhistory.paths import resolve_path

        return cls.from_pretrained(resolve_path(require_folder(c.path, "codec.path", c.kind, "learned codec")))

    def to(self, device: str | torch.device) -> LearnedCodec:
        self.model.to(device)
        return self

    def _framewise(self, x: torch.Tensor, call) -> torch.Tensor:
        """``(B, C, T, H, W)`` → ``call`` on every frame, ``batch_frames`` at a time → ``(B, C', T, H', W')``."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        device = next(self.model.parameters()).device
        out = torch.cat([call(chunk.to(device)).to(x.device) for chunk in frames.split(self.batch_frames)])
        return out.reshape(b, t, *out.shape[1:]).transpose(1, 2)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` in [-1, 1] → normalised latents ``(B, C, T, H/8, W/8)``."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"expected RGB pixels (B, 3, T, H, W), got {tuple(pixels.shape)}")
        h, w = pixels.shape[-2:]
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(f"pixel size {h}x{w} is not divisible by the learned codec's factor {self.spatial_factor}")
        z = self._framewise(pixels.float(), self.model.encode)
        return (z - self._mean.to(z.device)) / self._std.to(z.device)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → pixels ``(B, 3, T, H, W)`` in [-1, 1] (clamped)."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected latents (B, {self.latent_channels}, T, H, W) for the learned codec, got "
                f"{tuple(latents.shape)}"
            )
        z = latents.float() * self._std.to(latents.device) + self._mean.to(latents.device)
        return self._framewise(z, self.model.decode).clamp(-1, 1)

    def stream_encoder(self) -> FramewiseStream:
        return FramewiseStream(self.encode)

    def stream_decoder(self) -> FramewiseStream:
        return FramewiseStream(self.decode)


def reconstruction_loss(model: FrameAutoencoder, frames: torch.Tensor, lpips, lpips_weight: float) -> dict:
    """L1 + ``lpips_weight``·LPIPS of the reconstruction of ``(N, 3, H, W)`` frames in [-1, 1]."""
    recon = model(frames)
    l1 = F.l1_loss(recon, frames)
    perceptual = lpips(recon, frames).mean() if lpips_weight > 0 else recon.new_zeros(())
    return {"loss": l1 + lpips_weight * perceptual, "l1": l1, "lpips": perceptual}
