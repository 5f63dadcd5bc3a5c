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

This module names no model: each base's geometry (VAE factors, patch, latent channels, DiT width) is declared by the
preset that trains it (its ``[geometry]`` and ``[backbone]`` tables, :func:`preset_geometry`), so a new family or
variant is its preset plus its adapter and codec files.
"""

from __future__ import annotations

import functools
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


def temporal_block(rates: list[Rate]) -> int:
    """Latent frames that every encoder takes whole: the lcm of the temporal rates (1 without encoders).

    History splits, cache offsets and incremental encoding all move in these steps, so LR latents stay aligned.
    """
    return math.lcm(*[r.t for r in rates]) if rates else 1


# A preset's ``[geometry]`` table: what its other tables do not say about its model's shape. The VAE's factors always;
# the patch, latent channels and width only where ``[backbone]`` does not give ``patch_size``, ``in_channels`` and
# ``num_attention_heads`` × ``attention_head_dim`` (the presets whose DiT comes from the user's folder), so each value
# is written once. It is not part of the run config: a run's saved config.json names its ``base``, which always
# resolves here to the same geometry (new keys in a run config would also make every older run refuse to resume).
GEOMETRY = "geometry"
_FROM_BACKBONE = {
    "patch": ("patch_size",),
    "latent_channels": ("in_channels",),
    "hidden_dim": ("num_attention_heads", "attention_head_dim"),
}
_GEOMETRY_KEYS = ("vae_spatial", "vae_temporal", *_FROM_BACKBONE)
_HOW_TO_DECLARE = (
    "a base is declared by a preset (presets/<name>.toml) with base = NAME and a [geometry] table: vae_spatial and "
    "vae_temporal (the VAE's factors), and patch = [t, h, w], latent_channels, hidden_dim where its [backbone] table "
    "does not give patch_size, in_channels, num_attention_heads and attention_head_dim"
)


def preset_geometry(data: dict, where: str) -> BaseGeometry:
    """The geometry that a preset's tables (:func:`tinyhistory.config.read_preset`) declare for its ``base``.

    ``where`` names the preset in errors. A value missing from both ``[geometry]`` and ``[backbone]``, or written in
    both, is an error naming the keys: a default would silently give a model another shape.
    """
    name = data.get("base")
    if not isinstance(name, str) or not name:
        raise ValueError(f'{where}: base = {name!r} must name the preset\'s model geometry, e.g. base = "tiny"')
    table, backbone = data.get(GEOMETRY, {}), data.get("backbone", {})
    if not isinstance(table, dict):
        raise ValueError(f"{where}: {GEOMETRY} must be a table ([{GEOMETRY}]), got {table!r}")
    unknown = sorted(set(table) - set(_GEOMETRY_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key 'geometry.{unknown[0]}'; allowed keys: {', '.join(_GEOMETRY_KEYS)}")

    def value(key: str) -> object:
        return _declared(key, table, backbone, name, where)

    patch = value("patch")
    if not isinstance(patch, list) or len(patch) != 3:
        raise ValueError(f"{where}: the geometry's patch must be 3 positive integers [t, h, w], got {patch!r}")
    return BaseGeometry(
        name=name,
        vae_spatial=_positive_int(value("vae_spatial"), "vae_spatial", where),
        vae_temporal=_positive_int(value("vae_temporal"), "vae_temporal", where),
        patch=tuple(_positive_int(p, "patch", where) for p in patch),
        latent_channels=_positive_int(value("latent_channels"), "latent_channels", where),
        hidden_dim=_positive_int(value("hidden_dim"), "hidden_dim", where),
    )


def _declared(key: str, table: dict, backbone: dict, name: str, where: str) -> object:
    """``geometry.<key>``, else what the preset's ``[backbone]`` says of it (never both, never neither)."""
    names = _FROM_BACKBONE.get(key, ())
    given = [f"backbone.{n}" for n in names if n in backbone]
    if key in table and given:
        raise ValueError(f"{where}: geometry.{key} and {' and '.join(given)} both describe the model; keep one")
    if key in table:
        return table[key]
    if not names or len(given) < len(names):
        raise ValueError(f"{where}: base {name!r} does not declare geometry.{key}; {_HOW_TO_DECLARE}")
    if key == "hidden_dim":  # the DiT's width: heads × head dim
        return math.prod(_positive_int(backbone[n], f"backbone.{n}", where) for n in names)
    return backbone[names[0]]


def _positive_int(value: object, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where}: the geometry's {key} must be a positive integer, got {value!r}")
    return value


@functools.cache
def bases() -> dict[str, BaseGeometry]:
    """Every base that a packaged preset declares, by name (read once: the preset files are data, no torch).

    Two presets may train one base only if they declare the same geometry for it.
    """
    # config.py imports this module (a config checks its base), so the preset reader is imported on first use.
    from tinyhistory.config import preset_names, read_preset

    found: dict[str, tuple[BaseGeometry, str]] = {}
    for preset in preset_names():
        geometry = preset_geometry(read_preset(preset), f"presets/{preset}.toml")
        first = found.setdefault(geometry.name, (geometry, preset))
        if first[0] != geometry:
            raise ValueError(
                f"presets {first[1]!r} and {preset!r} both train base {geometry.name!r} with different geometries "
                f"({first[0]} and {geometry}); give one of them its own base name"
            )
    return {name: geometry for name, (geometry, _) in sorted(found.items())}


def get_base(name: str) -> BaseGeometry:
    """The geometry of base ``name``, as the preset that trains it declares (:func:`bases`).

    Base names are stored in checkpoints' config.json and in cache keys: a name keeps its geometry for good.
    """
    known = bases()
    if name not in known:
        raise ValueError(f"unknown base {name!r}; known bases: {', '.join(known)}; {_HOW_TO_DECLARE}")
    return known[name]


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
