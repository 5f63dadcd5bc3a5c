"""The codec protocol: pixels ``(B, 3, T, H, W)`` in [-1, 1] ⇄ latents ``(B, C, T', H', W')``."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import torch


@runtime_checkable
class Codec(Protocol):
    """A latent codec (one per ``codec.kind``, registered in ``registry.py``)."""

    latent_channels: int
    spatial_factor: int
    temporal_factor: int
    # Each latent frame depends on its own pixel frame only (pixel frames are latent frames): cached windows of one
    # video may be joined into one run. False for a causal video VAE, whose latents depend on where a window starts.
    framewise: bool
    # ``codec.path`` defaults to the run's model folder (``--model DIR``): the codec is the folder's ``vae/``.
    reads_model_folder: bool

    @classmethod
    def from_config(cls, c) -> Codec:
        """The codec of the ``[codec]`` table."""
        ...

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


class DiffusersVAECodec:
    """What every codec around a stock diffusers video VAE does alike: loading it from a local folder (never
    downloaded), diffusers' own memory savers, moving it, the checks on what goes in, and running it on the VAE's
    device and dtype while tensors in and out stay where the caller has them.

    A family sets ``vae_class`` (the diffusers VAE class) and ``title`` (the VAE as messages name it), reads its
    factors in ``__init__`` and writes ``normalize`` / ``denormalize`` (how its pipelines scale latents) and its
    streams. Encoding takes the posterior's mode, so cached latents are deterministic.
    """

    vae_class: ClassVar[type]
    title: ClassVar[str]  # e.g. "Wan VAE"
    framewise: ClassVar[bool] = False  # causal in time: a window's latents depend on where the window starts
    reads_model_folder: ClassVar[bool] = True  # the model folder's vae/
    # Refuse pixel frame counts other than 1 + f·k (a VAE that does not drop the leftover frames itself).
    whole_frames_only: ClassVar[bool] = True
    latent_channels: int
    spatial_factor: int
    temporal_factor: int

    def __init__(self, vae, tiling: bool = False, slicing: bool = False) -> None:
        self.vae = vae.eval()
        if tiling:
            vae.enable_tiling()
        if slicing:
            vae.enable_slicing()

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, **options):
        """Load from a local diffusers folder (a model repo with ``vae/``, or the VAE folder itself)."""
        return cls(load_vae(cls.vae_class, path, dtype, cls.title), **options)

    @classmethod
    def from_config(cls, c):
        """Registry constructor from the ``[codec]`` table (``codec.path``: the model folder or its ``vae/``)."""
        path = require_folder(c.path, "codec.path", c.kind, "diffusers")
        return cls.from_pretrained(path, tiling=c.tiling, slicing=c.slicing)

    def to(self, device: str | torch.device):
        """Run the VAE on ``device`` (a GPU for `data prepare`); tensors in and out stay where the caller has them."""
        self.vae.to(device)
        return self

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's raw latents → what the DiT sees (the family pipelines' scaling)."""
        raise NotImplementedError

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """What the DiT sees → the VAE's raw latents."""
        raise NotImplementedError

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Raw latents on the VAE's device and dtype → its decoded sample (a family whose decoder takes more
        arguments overrides this)."""
        return self.vae.decode(z).sample

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1 + f·k, H, W)`` in [-1, 1] → normalised latents ``(B, C, 1 + k, H/s, W/s)`` (the mode)."""
        if pixels.ndim != 5 or pixels.shape[1] != 3:
            raise ValueError(f"expected RGB pixels (B, 3, T, H, W), got {tuple(pixels.shape)}")
        _, _, t, h, w = pixels.shape
        f = self.temporal_factor
        if self.whole_frames_only and (t - 1) % f:
            raise ValueError(f"the {self.title} needs 1 + {f}k frames (1, {1 + f}, {1 + 2 * f}, ...), got {t} frames")
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(f"pixel size {h}x{w} is not divisible by the {self.title}'s factor {self.spatial_factor}")
        weight = next(self.vae.parameters())
        z = self.vae.encode(pixels.to(weight.device, weight.dtype)).latent_dist.mode().float().to(pixels.device)
        return self.normalize(z)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``(B, C, 1 + k, h, w)`` → pixels ``(B, 3, 1 + f·k, h·s, w·s)`` in [-1, 1] (clamped)."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            shape = tuple(latents.shape)
            raise ValueError(f"expected latents (B, {self.latent_channels}, T, H, W) for the {self.title}, got {shape}")
        weight = next(self.vae.parameters())
        z = self.denormalize(latents.float()).to(weight.device, weight.dtype)
        return self._decode_raw(z).float().clamp(-1, 1).to(latents.device)


class WindowedVAECodec(DiffusersVAECodec):
    """A diffusers VAE without an exact stream (it carries no cache between calls, or normalises over time): each
    piece is encoded or decoded after a context of :attr:`stream_context` latents (``codecs/streaming.py``)."""

    stream_context: int  # latent frames a stream sees before each new piece (one temporal tile of diffusers' own)

    def stream_encoder(self):
        """Pixels in pieces → latents, each piece encoded after :attr:`stream_context` latents' worth of frames."""
        from tinyhistory.codecs.streaming import WindowedStreamEncoder

        return WindowedStreamEncoder(
            self.encode, self.temporal_factor, self.stream_context, self.latent_channels, self.spatial_factor
        )

    def stream_decoder(self):
        """Latents in pieces → pixels, each piece decoded after the last :attr:`stream_context` latents."""
        from tinyhistory.codecs.streaming import WindowedStreamDecoder

        return WindowedStreamDecoder(self.decode, self.temporal_factor, self.stream_context)
