"""Token-grid and context-length arithmetic (pure Python, no torch).

The paper's encoding rate ``rH×rW×rT`` is relative to the DiT's own patchified token grid (SPEC §2, §9): a
rate of 4×4×2 turns every 4×4 block of DiT tokens in 2 latent frames into one history token. Only this reading
reproduces every number the paper prints (5,460 tokens for 20 s of 480×832 HunyuanVideo; 195/780/390/1,560
tokens per second for Wan 2.1 at 16 fps).

Two accountings are kept apart on purpose:

* ``history_tokens`` counts the real token grid of a concrete history (floor on odd grids, like a strided conv
  without padding: 15 latent rows at rate 4 with patch 2 give 7 token rows);
* ``history_tokens_per_second`` is the paper's nominal "CTX/s": full tokens per second divided by the rate volume.
  It is what Table 1/2 of the paper print (195 for 4×4×2 on Wan 2.1 480p), and it is *not* the floor grid divided
  by seconds (that would be 182 there).

Latent frames follow the paper's convention: ``frames / temporal_factor`` (not ``1 + (frames - 1) / 4``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALLOWED_RATE_FACTORS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Rate:
    """An encoding rate, relative to the DiT token grid: ``h × w × t``."""

    h: int
    w: int
    t: int

    def __post_init__(self) -> None:
        for name, value in (("h", self.h), ("w", self.w), ("t", self.t)):
            if value not in ALLOWED_RATE_FACTORS:
                raise ValueError(
                    f"rate factor {name}={value} is not supported; each factor must be one of {ALLOWED_RATE_FACTORS}"
                )

    @classmethod
    def parse(cls, text: str) -> Rate:
        """Parse ``"4x4x2"`` (also ``4×4×2``) as height × width × time."""
        parts = text.lower().replace("×", "x").split("x")
        if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"rate {text!r} is not of the form HxWxT, e.g. '4x4x2'")
        h, w, t = (int(p) for p in parts)
        return cls(h=h, w=w, t=t)

    @property
    def volume(self) -> int:
        return self.h * self.w * self.t

    def __str__(self) -> str:
        return f"{self.h}x{self.w}x{self.t}"


@dataclass(frozen=True)
class BaseGeometry:
    """What a base model's VAE and patchifier do to a video's shape.

    ``vae_spatial`` / ``vae_temporal``: codec downsampling; ``patch``: the DiT's (t, h, w) patch size.
    """

    name: str
    vae_spatial: int
    vae_temporal: int
    patch: tuple[int, int, int]
    latent_channels: int
    hidden_dim: int

    def latent_frames(self, frames: int) -> int:
        """Latent frames in the paper's accounting (frames / temporal factor, floored)."""
        return frames // self.vae_temporal

    def token_grid(self, height: int, width: int, frames: int) -> tuple[int, int, int]:
        """(T, H, W) of the DiT token grid for a video of this size."""
        pt, ph, pw = self.patch
        return (
            self.latent_frames(frames) // pt,
            height // self.vae_spatial // ph,
            width // self.vae_spatial // pw,
        )


BASES: dict[str, BaseGeometry] = {
    "wan2.1-1.3b": BaseGeometry("wan2.1-1.3b", 8, 4, (1, 2, 2), 16, 1536),
    "wan2.1-14b": BaseGeometry("wan2.1-14b", 8, 4, (1, 2, 2), 16, 5120),
    "wan2.2-ti2v-5b": BaseGeometry("wan2.2-ti2v-5b", 16, 4, (1, 2, 2), 48, 3072),
    "wan2.2-a14b-high": BaseGeometry("wan2.2-a14b-high", 8, 4, (1, 2, 2), 16, 5120),
    "hunyuanvideo": BaseGeometry("hunyuanvideo", 8, 4, (1, 2, 2), 16, 3072),
    # LTX-Video 0.9.x 2B: 32× space, 8× time, 128 channels, patch 1 (one DiT token is 32×32 pixels × 8 frames).
    "ltx-video": BaseGeometry("ltx-video", 32, 8, (1, 1, 1), 128, 2048),
    # The embedded tiny preset: lossless pixel-unshuffle (4×4 spatial, no temporal compression).
    "tiny": BaseGeometry("tiny", 4, 1, (1, 2, 2), 48, 256),
    # The miniature of the paper (preset ``miniature``): the learned framewise codec (8× spatial, 16 channels).
    "miniature": BaseGeometry("miniature", 8, 1, (1, 2, 2), 16, 256),
}


def temporal_block(rates: list[Rate]) -> int:
    """Latent frames that every encoder takes whole: the lcm of the temporal rates (1 without encoders).

    History splits, cache offsets and incremental encoding all move in these steps, so LR latents stay aligned.
    """
    return math.lcm(*[r.t for r in rates]) if rates else 1


def get_base(name: str) -> BaseGeometry:
    try:
        return BASES[name]
    except KeyError:
        raise ValueError(f"unknown base {name!r}; known bases: {', '.join(sorted(BASES))}") from None


def history_grid(token_grid: tuple[int, int, int], rate: Rate) -> tuple[int, int, int]:
    """(T, H, W) of the history-token grid: floor division of the DiT token grid by the rate."""
    t, h, w = token_grid
    return t // rate.t, h // rate.h, w // rate.w


@dataclass(frozen=True)
class ContextReport:
    base: str
    height: int
    width: int
    fps: float
    seconds: float
    rates: tuple[str, ...]
    token_grid: tuple[int, int, int]
    full_tokens: int
    history_tokens: int
    full_tokens_per_second: float
    history_tokens_per_second: float
    compression: float

    def as_dict(self) -> dict:
        return {
            "base": self.base,
            "height": self.height,
            "width": self.width,
            "fps": self.fps,
            "seconds": self.seconds,
            "rates": list(self.rates),
            "token_grid_thw": list(self.token_grid),
            "full_tokens": self.full_tokens,
            "history_tokens": self.history_tokens,
            "full_tokens_per_second": self.full_tokens_per_second,
            "history_tokens_per_second": self.history_tokens_per_second,
            "compression": self.compression,
        }


def context_report(
    base: BaseGeometry, height: int, width: int, fps: float, seconds: float, rates: list[Rate]
) -> ContextReport:
    """Full-context and compressed-history token counts for a history of ``seconds`` at ``fps``.

    Several rates mean several encoders whose tokens are concatenated, so their counts add up.
    """
    if height <= 0 or width <= 0 or fps <= 0 or seconds <= 0:
        raise ValueError(f"height, width, fps and seconds must be positive (got {height}, {width}, {fps}, {seconds})")
    frames = int(round(fps * seconds))
    grid = base.token_grid(height, width, frames)
    full = math.prod(grid)
    history = sum(math.prod(history_grid(grid, r)) for r in rates)

    # Per second: the paper's nominal accounting (see module docstring).
    _, h_tok, w_tok = base.token_grid(height, width, 0)
    full_per_second = h_tok * w_tok * fps / base.vae_temporal / base.patch[0]
    history_per_second = sum(full_per_second / r.volume for r in rates)
    return ContextReport(
        base=base.name,
        height=height,
        width=width,
        fps=fps,
        seconds=seconds,
        rates=tuple(str(r) for r in rates),
        token_grid=grid,
        full_tokens=full,
        history_tokens=history,
        full_tokens_per_second=full_per_second,
        history_tokens_per_second=history_per_second,
        compression=full / history if history else math.inf,
    )
