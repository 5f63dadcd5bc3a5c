"""What a history costs at real size: exact FLOPs per denoising step and per generated second (``tinyhistory cost``).

Why this exists: the paper's claim is that a compressed history keeps long-video generation affordable where an
uncompressed one does not. Token counts (``tinyhistory context``) only hint at that; FLOPs say it, and they are exact
and machine-independent, so they can be computed on a laptop for a 14B model. Every number here is counted by
``torch.utils.flop_counter.FlopCounterMode`` *through the project's own modules* on the ``meta`` device (exact
shapes, no weights, no memory): the :class:`~tinyhistory.backbones.wan.WanBackbone` forward with the context tokens
each method really produces (right count, right positions), and the real history producers
(:class:`~tinyhistory.history.encoder.HistoryEncoder`, :class:`~tinyhistory.history.patchifier.LargePatchifier`, the
DiT's own patch embedding, :class:`~tinyhistory.history.streaming.IncrementalHistory`). Nothing is a formula, so the
numbers move when the code does.

Count conventions (``FlopCounterMode``): a matmul of ``(m, k) @ (k, n)`` is ``2·m·n·k`` FLOPs, a convolution likewise
per output; attention through SDPA on meta tensors runs the math path, whose two batched matmuls (``QKᵀ``, ``AV``)
are counted (``4·S_q·S_kv·D`` per layer). Element-wise work (norms, RoPE, modulation, softmax, SiLU) is not counted.

Methods, all at the same target segment (``segment_seconds`` of latent frames, after ``history_seconds``):

* ``no_history``: the DiT on the segment alone;
* ``full``: every history latent frame uncompressed, through the DiT's patch embedding (a sliding window as long as
  the history);
* ``window``: the last :data:`WINDOW_FRAMES` latent frames uncompressed (``history.sliding_window``);
* ``framepack``: FramePack-style packing at the token budget of one 4×4×2 encoder (:func:`framepack_schedule`);
* ``proposed``: the history encoder at each rate set of :data:`PROPOSED_RATES` (several rates = several encoders).

Per row: the DiT FLOPs of one denoising step (one CFG branch, batch 1), the producer's FLOPs for the whole history
at once (a history given at the start) and per segment as generation runs it (``append``: the incremental
encoding of the newly generated segment; FramePack and the window rebuild their tokens every segment instead), and
``step`` = DiT + the per-segment producer cost spread over the segment's ``steps × branches`` DiT forwards (the
session encodes once per segment and both CFG branches share the tokens). With the history KV cache
(``history.kv_cache``, where the adapter has ``build_context_cache``) a step is one cached forward (targets only)
plus the per-segment cache build, once per branch (the two prompts give two caches), spread over ``steps``.

Block-causal rows (``history.context_attention = "block_causal"``, the proposed encoder, where the adapter has it):
the same cached step, plus the per-segment cache work of the incremental cache the session keeps: the blocks
completed since the last segment (about one second of history tokens) run through every DiT block, attending to
the whole cache and to themselves, **once for both CFG branches** (the context reads no prompt), averaged over one
cycle of segments and blocks like the encoder's append; spread over ``steps × branches`` forwards.

Tier rows (``history.tiers``, :data:`TIER_SETS`; ``tiers`` set on the row): the proposed encoders as tiers, the
newest seconds at the first rate and older history coarser (history/tiers.py), uncached and block-causal. The
producers' append is every rate encoding the new blocks (the session keeps every rate's tokens); the block-causal
cache work per segment is counted as the session does it over one cycle of moves (lcm of the segment and the move):
the new blocks' append, and at a move the recompute of everything from the moved chunk on (its coarser tokens and
every newer block, which attended to it), averaged over the cycle; ``cache_move_tflops`` is the moves' share of it
(what the recompute costs beyond appending the same new blocks).

Stacked tier rows (``history.tier_layout = "stacked"``, history/stacked.py; a tier set written ``RATES@stacked`` or
``RATES@stacked:WINDOW``, e.g. ``--tiers 4x4x2:20+8x8x4@stacked:20``): block-causal only. The step is the cached step
over what the targets read (each tier's span, the same tokens as the recompute layout); the producers' append is
every rate encoding the new blocks, as above; the cache work per segment is :class:`StackedTierCache` appending the
new blocks of every rate, attending to one window of cached blocks (all rates), averaged over one cycle of segments
and blocks. A move recomputes nothing (``cache_move_tflops`` = 0).

Depth: every block of a DiT's block list runs the same FLOPs on the same shapes, so each DiT count runs on shallow
copies (:meth:`CostModel.at_full_depth`: every list cut to one block, then each list to two) and is scaled to the
full depth exactly, ``F = F(1, …, 1) + Σᵢ (Lᵢ − 1)·(F(…, 2ᵢ, …) − F(1, …, 1))``: a 30-block Wan is counted with two
shallow forwards instead of one 30-block one (a test checks it against the count at full depth).

Rows the settings ask for but the preset's family refuses (HunyuanVideo's and LTX-Video's KV-cache and block-causal
rows), or another setting rules out (a stacked tier set without the block-causal rows), are not counted:
:class:`LeftOut` names each with the refusal's message (``CostModel.left_out``), printed under the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tinyhistory.assemble import HistoryDiT
from tinyhistory.backbones.base import Backbone, ContextTokens
from tinyhistory.config import RunConfig, load_config
from tinyhistory.geometry import BaseGeometry, Rate, get_base, history_grid, temporal_block
from tinyhistory.history.base import tokens_from_grid
from tinyhistory.history.patchifier import LargePatchifier
from tinyhistory.history.stacked import StackedTierCache
from tinyhistory.history.streaming import IncrementalHistory
from tinyhistory.history.tiers import TierPlan, select_tiers
from tinyhistory.registry import BACKBONES
from tinyhistory.sizing.models import released

METHODS = ("no_history", "full", "window", "framepack", "proposed")
# Rate sets of the proposed encoder reported by default: the paper's 4×4×2, a lighter 2×2×2 and two encoders.
PROPOSED_RATES: tuple[tuple[str, ...], ...] = (("4x4x2",), ("2x2x2",), ("4x4x2", "2x2x8"))
# The sliding-window baseline: the last three latent frames uncompressed.
WINDOW_FRAMES = 3
# FramePack's token budget is that of one encoder at this rate, so the two compare at equal DiT cost.
FRAMEPACK_BUDGET_RATE = Rate(4, 4, 2)
# FramePack tiers, newest to oldest: each an 8th of the tokens per latent frame of the one before (1×1×1 is the DiT's
# own patch embedding; the others are Large Patchifiers, the project's FramePack-equivalent kernels).
FRAMEPACK_TIERS = (Rate(1, 1, 1), Rate(2, 2, 2), Rate(4, 4, 4), Rate(8, 8, 8))
TERA = 1e12


@dataclass(frozen=True)
class TierSet:
    """One tier layout of the proposed encoders (``history.rates`` + ``history.tiers`` + ``history.tier_move``)."""

    rates: tuple[str, ...]  # newest (finest) first
    seconds: tuple[float, ...]  # every tier's length but the last's
    move: float  # seconds moved to the next tier at once
    layout: str = "recompute"  # history.tier_layout
    window: float = 0.0  # the stacked layout's history.context_window (seconds)

    @classmethod
    def parse(cls, text: str, move: float) -> TierSet:
        """``"4x4x2:20+8x8x4"`` (rate:seconds for every tier but the last, newest first) → a tier set; a suffix
        ``@stacked`` or ``@stacked:SECONDS`` takes the stacked layout with that context window (default 20 s)."""
        tiers, _, layout = text.partition("@")
        name, _, window = layout.partition(":")
        if layout and name != "stacked":
            raise ValueError(f"tiers {text!r}: the layout after @ is 'stacked' or 'stacked:SECONDS'")
        try:
            seconds = float(window) if window else DEFAULT_STACKED_WINDOW
        except ValueError:
            raise ValueError(f"tiers {text!r}: the stacked window is seconds, e.g. @stacked:20") from None
        if not 0 < seconds < math.inf:
            raise ValueError(f"tiers {text!r}: the stacked window must be positive seconds")
        plain = cls._parse_tiers(tiers, move)
        return cls(plain.rates, plain.seconds, move, "stacked", seconds) if layout else plain

    @classmethod
    def _parse_tiers(cls, text: str, move: float) -> TierSet:
        parts = text.split("+")
        rates, seconds = [], []
        for i, part in enumerate(parts):
            rate, _, length = part.partition(":")
            Rate.parse(rate)
            rates.append(rate)
            if i < len(parts) - 1:
                try:
                    seconds.append(float(length))
                except ValueError:
                    raise ValueError(f"tier {part!r} of {text!r} needs its seconds, e.g. 4x4x2:20") from None
            elif length:
                raise ValueError(f"the last tier of {text!r} holds the rest of the history: give no seconds")
        if len(rates) < 2:
            raise ValueError(f"tiers {text!r} need at least two rates, e.g. 4x4x2:20+8x8x4")
        return cls(tuple(rates), tuple(seconds), move)

    def overrides(self) -> list[str]:
        """The config overrides that lay the preset's history out as this tier set (what ``tinyhistory cost``
        counts and ``tinyhistory plan`` sizes for the same spec): the stacked layout with its cache and window."""
        rates = ",".join(f'"{r}"' for r in self.rates)
        seconds = ",".join(f"{x:g}" for x in self.seconds)
        out = [
            'history.method="proposed"',
            f"history.rates=[{rates}]",
            f"history.tiers=[{seconds}]",
            f"history.tier_move={self.move:g}",
        ]
        if self.layout == "stacked":
            out += [
                "history.kv_cache=true",
                'history.context_attention="block_causal"',
                'history.tier_layout="stacked"',
                f"history.context_window={self.window:g}",
            ]
        return out

    def __str__(self) -> str:
        tiers = [f"{r}:{s:g}s" for r, s in zip(self.rates, self.seconds, strict=False)] + [self.rates[-1]]
        stacked = f", stacked, window {self.window:g}s" if self.layout == "stacked" else ""
        return "+".join(tiers) + f" (moves of {self.move:g}s{stacked})"


# The example: the newest 20 s at 4×4×2, older history at 8×8×4, moved 10 s at a time.
TIER_SETS: tuple[TierSet, ...] = (TierSet(("4x4x2", "8x8x4"), (20.0,), 10.0),)
# The stacked layout's context window when a tier set names none (``@stacked``), seconds (history.context_window).
DEFAULT_STACKED_WINDOW = 20.0
T = TypeVar("T")


@dataclass(frozen=True)
class CostSettings:
    """What to count. ``None`` takes the preset's value (frame size ``data.height × data.width``, ``data.fps``)."""

    preset: str = "wan2.2-ti2v-5b"
    height: int | None = None
    width: int | None = None
    fps: float | None = None
    segment_seconds: float = 1.0
    history_seconds: tuple[float, ...] = (5.0, 20.0, 60.0, 120.0, 300.0, 600.0)
    steps: int = 30
    cfg: bool = True
    methods: tuple[str, ...] = METHODS
    # Rate sets of the ``proposed`` rows; several rates in one set = several encoders, tokens concatenated.
    proposed_rates: tuple[tuple[str, ...], ...] = PROPOSED_RATES
    kv_cache: bool = True  # also the history-KV-cache rows, where the adapter has build_context_cache
    # also the block-causal incremental-cache rows (proposed only), where the adapter has use_block_causal
    block_causal: bool = True
    # tiered proposed encoders (``history.tiers``): uncached and block-causal rows for each (with ``proposed``)
    tier_sets: tuple[TierSet, ...] = TIER_SETS

    @property
    def branches(self) -> int:
        """DiT forwards per denoising step: two with classifier-free guidance (conditional + unconditional)."""
        return 2 if self.cfg else 1


@dataclass
class CostRow:
    """One method at one history length. FLOPs in TFLOPs (10¹²); ``history_overhead`` relative to ``no_history``."""

    preset: str
    method: str
    rates: list[str]
    history_seconds: float
    history_frames: int
    kv_cache: bool
    context_tokens: int
    dit_step_tflops: float  # one DiT forward: one denoising step of one CFG branch
    producer_tflops: float  # the producer on the whole history at once
    append_tflops: float  # the producer per generated segment (incremental where the method allows)
    # KV cache rows: building the cache once, for one branch; block-causal rows: the per-segment cache work (the
    # newest blocks appended), once for both branches
    cache_build_tflops: float
    step_tflops: float  # DiT + producer (+ cache build) per denoising step of one branch
    second_tflops: float  # everything per generated second: steps × branches DiT forwards + producer (+ builds)
    history_overhead: float  # step_tflops / no-history step − 1
    schedule: list[dict] | None = field(default=None)  # framepack: tiers newest → oldest
    context_attention: str = "full"  # "block_causal": the incremental cache's rows
    tiers: list[float] | None = None  # tier rows: every tier's seconds but the last's (rates: newest first)
    tier_move: float | None = None  # tier rows: seconds moved to the next tier at once
    # tier rows, block-causal: the moves' share of cache_build_tflops per segment (recompute beyond the append)
    cache_move_tflops: float = 0.0
    tier_layout: str | None = None  # tier rows: history.tier_layout ("recompute" or "stacked")
    context_window: float | None = None  # stacked tier rows: history.context_window (seconds)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LeftOut:
    """Rows the settings ask for that are not counted, and why: the preset's family refuses them (its message), or
    another setting rules them out. ``tinyhistory cost`` prints one line each under the table, so a missing row is
    never mistaken for one that was forgotten."""

    rows: str  # which rows, e.g. "the KV-cache rows (history.kv_cache)"
    why: str  # the refusal's own message

    def __str__(self) -> str:
        return f"left out: {self.rows}: {self.why}"


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()``'s result and the FLOPs it ran (``FlopCounterMode``; no autograd: generation runs none)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn()
    return out, counter.get_total_flops()


@contextmanager
def shallow(backbones: list[Backbone], depths: tuple[int, ...]) -> Iterator[None]:
    """Every backbone's block lists (``block_lists``, in order) cut to their first ``depths[i]`` blocks, restored on
    exit: the adapters read their blocks from the transformer at every call, so a count in here runs a shallower DiT
    (its caches, built in here too, hold that many blocks)."""
    saved = []
    try:
        for backbone in backbones:
            for name, depth in zip(backbone.block_lists, depths, strict=True):
                blocks = getattr(backbone.transformer, name)
                saved.append((backbone.transformer, name, blocks))
                setattr(backbone.transformer, name, nn.ModuleList(list(blocks)[:depth]))
        yield
    finally:
        for transformer, name, blocks in saved:
            setattr(transformer, name, blocks)


def meta_backbone(cfg: RunConfig) -> Backbone:
    """The preset's DiT adapter around its real-size transformer on the meta device (no weights are read).

    Real presets take the ``config.json`` of the released DiT their ``base`` names, which the family declares
    (:mod:`tinyhistory.sizing.models`); a preset without one (tiny) builds its DiT from its ``[backbone]`` table.
    """
    adapter = BACKBONES.get(cfg.backbone.family)
    model = released(cfg)
    if model is not None:
        return adapter(adapter.meta_transformer(model.dit.config))
    with torch.device("meta"):
        return adapter.from_config(cfg.backbone)


def framepack_schedule(frames: int, grid_hw: tuple[int, int], budget: int) -> list[tuple[Rate, int]]:
    """FramePack-style packing of ``frames`` latent frames in at most ``budget`` tokens: ``[(rate, frames)]``,
    newest → oldest.

    Schedule (decided here; FramePack itself fixes tier lengths and drops what is older): tiers 1×1×1, 2×2×2,
    4×4×4, 8×8×8 from the newest frame back, each in whole temporal blocks of its rate. Each finer tier takes as
    many blocks as the budget affords *while every older frame still fits at the coarsest tier*; the coarsest tier
    then covers what is left (a last partial block of < 8 frames gives no token, the floor rule of every producer).
    So the newest frames are sharpest, the whole history is covered, and the token count stays within the budget
    (it lands a few tokens under it, never over). ``grid_hw``: the DiT token grid of one latent frame.
    """
    h, w = grid_hw
    tiers = [r for r in FRAMEPACK_TIERS if h // r.h and w // r.w]
    per_block = {r: (h // r.h) * (w // r.w) for r in tiers}
    coarse = tiers[-1]

    def cover(n: int) -> int:
        return n // coarse.t * per_block[coarse]

    schedule: list[tuple[Rate, int]] = []
    left, remaining = budget, frames
    for rate in tiers:
        if rate == coarse:
            blocks = min(remaining // rate.t, left // per_block[rate])
        else:
            blocks = 0
            while (blocks + 1) * rate.t <= remaining and (blocks + 1) * per_block[rate] + cover(
                remaining - (blocks + 1) * rate.t
            ) <= left:
                blocks += 1
        if blocks:
            schedule.append((rate, blocks * rate.t))
            left -= blocks * per_block[rate]
            remaining -= blocks * rate.t
    return schedule


def steady_state_chunks(frames: int, block: int, segment: int) -> tuple[list[tuple[int, int]], int]:
    """What the session encodes after each generated segment, in steady state after ``frames`` history frames:
    ``(frames already encoded, new whole-block frames)`` per append over one cycle of segments and blocks (lcm of the
    segment and the temporal block), and the cycle's length in segments (to average over)."""
    encoded = frames // block * block
    pending = frames - encoded
    cycle = math.lcm(segment, block) // segment
    chunks = []
    for _ in range(cycle):
        pending += segment
        whole = pending // block * block
        if whole:
            chunks.append((encoded, whole))
            encoded += whole
            pending -= whole
    return chunks, cycle


class CostModel:
    """Counts one preset's costs; builds its meta-device DiT (and, for the KV-cache rows, a second one) once."""

    def __init__(self, settings: CostSettings):
        s = settings
        unknown = sorted(set(s.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; known methods: {', '.join(METHODS)}")
        if s.steps <= 0 or s.segment_seconds <= 0 or any(h <= 0 for h in s.history_seconds):
            raise ValueError("steps, segment seconds and history seconds must be positive")
        for rates in s.proposed_rates:
            if not rates:
                raise ValueError("a proposed rate set needs at least one rate, e.g. 4x4x2")
            for rate in rates:
                Rate.parse(rate)
        self.settings = s
        self.cfg = load_config(s.preset)
        self.base: BaseGeometry = get_base(self.cfg.base)
        data = self.cfg.data
        self.height = s.height or data.height or data.size
        self.width = s.width or data.width or data.size
        self.fps = s.fps or data.fps
        self.backbone = meta_backbone(self.cfg)
        model = released(self.cfg)
        self.model_name = model.name if model is not None else f"{s.preset} [backbone] table"
        bb, base = self.backbone, self.base
        if (bb.in_channels, bb.hidden_dim) != (base.latent_channels, base.hidden_dim):
            raise RuntimeError(f"geometry base {base.name!r} disagrees with the DiT of preset {s.preset!r}")
        self.latent_hw = (self.height // base.vae_spatial, self.width // base.vae_spatial)
        _, ph, pw = bb.patch_size
        self.grid_hw = (self.latent_hw[0] // ph, self.latent_hw[1] // pw)
        if min(self.grid_hw) == 0:
            raise ValueError(f"frames of {self.height}x{self.width} give no DiT token for preset {s.preset!r}")
        self.segment_frames = self.latent_frames(s.segment_seconds)
        for seconds in (s.segment_seconds, *s.history_seconds):
            if self.latent_frames(seconds) == 0:
                raise ValueError(
                    f"{seconds:g} s hold no latent frame at {self.fps:g} fps (one latent frame is "
                    f"{self.base.vae_temporal} frames)"
                )
        self.text_tokens = self.cfg.text.max_tokens
        self.text = bb.blank_text(1, self.text_tokens, "meta")
        self.dit = HistoryDiT(bb, nn.ModuleList())
        self.left_out: list[LeftOut] = []  # rows asked for but refused, in the order met
        self.kv_dit = self._kv_model() if s.kv_cache else None
        self.causal_dit = self._block_causal_model() if s.block_causal else None
        self._step_memo: dict[int, int] = {}  # context tokens → FLOPs of one step
        self._cached_memo: dict[int, tuple[int, int]] = {}  # context tokens → (cached step, cache build)
        self._causal_memo: dict[int, int] = {}  # context tokens → block-causal cached step
        self._stacked_memo: dict[int, int] = {}  # tokens the targets read → stacked layout's cached step
        with torch.device("meta"):
            self.patchifiers = {r: LargePatchifier(str(r), bb.patch_embedding) for r in FRAMEPACK_TIERS[1:]}
            self.encoders = {rates: self._proposed_model(rates) for rates in s.proposed_rates}
            tiered = s.tier_sets if "proposed" in s.methods else ()
            models = {spec: self._tiered_model(spec) for spec in tiered}
            self.tiered = {spec: model for spec, model in models.items() if model is not None}
        self._append_memo: dict[tuple[int, int], int] = {}  # (prior tokens, added tokens) → block-causal append
        # every meta DiT a count may run (the tiered models share self.backbone but the stacked layout's own), cut
        # together by at_full_depth; the depth of each of their block lists
        dits = [self.backbone, *(m.backbone for m in (self.kv_dit, self.causal_dit) if m is not None)]
        dits += [m.backbone for m in self.tiered.values()]
        self._dits = list({id(b): b for b in dits}.values())
        self.depths = tuple(len(getattr(bb.transformer, name)) for name in bb.block_lists)

    # -- building blocks -------------------------------------------------------------------------------------
    def at_full_depth(self, count: Callable[[], int | tuple[int, ...]]) -> int | tuple[int, ...]:
        """``count()`` (FLOPs through the meta DiTs, caches it needs built inside it; an int, or a tuple of counts
        that share the work of one run) at the DiTs' full depth, from shallow copies (:func:`shallow`): one block in
        every list, then two in each list in turn; each list's extra block is its per-block FLOPs, scaled to its
        length. Exact: a list's blocks are alike and see the same shapes."""

        def counted() -> tuple[int, ...]:
            out = count()
            return out if isinstance(out, tuple) else (out,)

        ones = tuple(1 for _ in self.depths)
        with shallow(self._dits, ones):
            base = counted()
        total = list(base)
        for i, depth in enumerate(self.depths):
            if depth > 1:
                with shallow(self._dits, ones[:i] + (2,) + ones[i + 1 :]):
                    deeper = counted()
                total = [t + (depth - 1) * (d - b) for t, d, b in zip(total, deeper, base, strict=True)]
        return tuple(total) if len(total) > 1 else total[0]

    def latent_frames(self, seconds: float) -> int:
        """Latent frames of ``seconds`` of video, the paper's convention (frames / temporal factor)."""
        return self.base.latent_frames(int(round(seconds * self.fps)))

    def _kv_model(self) -> HistoryDiT | None:
        """A second meta DiT with the history KV cache on, or None where the family refuses it (said in
        :attr:`left_out` when a method with a context asked for those rows)."""
        fresh = meta_backbone(self.cfg)
        try:
            fresh.use_kv_cache()
        except ValueError as exc:  # a family without it (HunyuanVideo, LTX-Video) refuses by name
            if any(method != "no_history" for method in self.settings.methods):
                self.left_out.append(LeftOut("the KV-cache rows (history.kv_cache)", str(exc)))
            return None
        return HistoryDiT(fresh, nn.ModuleList())

    def _block_causal_model(self) -> HistoryDiT | None:
        """A meta DiT with the block-causal context and the KV cache, or None where the family refuses it (said in
        :attr:`left_out` when the proposed encoder, whose rows these are, was asked for)."""
        fresh = meta_backbone(self.cfg)
        try:
            fresh.use_block_causal()
            fresh.use_kv_cache()
        except ValueError as exc:  # a family without it (HunyuanVideo, LTX-Video) refuses by name
            if "proposed" in self.settings.methods:
                rows = 'the block-causal rows (history.context_attention = "block_causal")'
                self.left_out.append(LeftOut(rows, str(exc)))
            return None
        return HistoryDiT(fresh, nn.ModuleList())

    def _proposed_model(self, rates: tuple[str, ...]) -> HistoryDiT:
        """The preset's history encoder(s) at ``rates``, as the training builds them (``HistoryDiT.from_config``)."""
        rate_list = ",".join(f'"{r}"' for r in rates)
        cfg = load_config(self.settings.preset, overrides=['history.method="proposed"', f"history.rates=[{rate_list}]"])
        return HistoryDiT.from_config(cfg, self.backbone)

    def _tiered_model(self, spec: TierSet) -> HistoryDiT | None:
        """The preset's encoders at ``spec``'s rates laid out as its tiers (``HistoryDiT.from_config``). The stacked
        layout gets its own block-causal meta DiT with the window (None without the block-causal rows: the layout
        exists only under that cache). A family without the stacked layout refuses it by name (a ValueError naming
        the family and ``history.tier_layout``): a stacked tier set is only counted when asked for."""
        cfg = load_config(self.settings.preset, overrides=spec.overrides())
        cfg.data.fps = self.fps  # the tiers' seconds at the counted frame rate
        if spec.layout != "stacked":
            return HistoryDiT.from_config(cfg, self.backbone)
        if not self.settings.block_causal:
            why = "the stacked layout exists only under the block-causal cache, whose rows are off (--no-block-causal)"
            self.left_out.append(LeftOut(f"the tier set {spec}", why))
            return None
        backbone = meta_backbone(self.cfg)
        backbone.use_context_window(1)  # a family without the stacked layout refuses it here, by name
        return HistoryDiT.from_config(cfg, backbone)

    def hr(self, frames: int) -> torch.Tensor:
        """Full-resolution history latents ``(1, C, frames, H, W)`` on meta."""
        return torch.empty(1, self.backbone.in_channels, frames, *self.latent_hw, device="meta")

    def lr(self, frames: int, rate: Rate) -> torch.Tensor:
        """The LR branch's latents for ``frames`` HR latent frames: pixels ÷ (rT, rH, rW) through the codec."""
        s = self.base.vae_spatial
        shape = (frames // rate.t, (self.height // rate.h) // s, (self.width // rate.w) // s)
        return torch.empty(1, self.backbone.in_channels, *shape, device="meta")

    def budget(self, frames: int) -> int:
        """Tokens of one 4×4×2 encoder on ``frames`` history frames (FramePack's budget)."""
        grid = (frames // self.backbone.patch_size[0], *self.grid_hw)
        return math.prod(history_grid(grid, FRAMEPACK_BUDGET_RATE))

    # -- producers: (context, whole-history FLOPs, per-segment FLOPs, schedule) -------------------------------
    def _window(self, frames: int, window: int) -> tuple[ContextTokens | None, int]:
        model = HistoryDiT(self.backbone, nn.ModuleList(), sliding_window=window)
        return count_flops(lambda: model.window_tokens(self.hr(frames)))

    def produce(
        self, method: str, rates: tuple[str, ...], frames: int
    ) -> tuple[ContextTokens | None, int, float, list[dict] | None]:
        """What ``method`` puts before the targets after ``frames`` history frames: (context, FLOPs to produce it
        from the whole history, producer FLOPs per generated segment, FramePack's schedule or None)."""
        if method == "no_history":
            return None, 0, 0, None
        if method == "full":
            context, whole = self._window(frames, frames)
            _, append = self._window(self.segment_frames, self.segment_frames)  # patch-embed the new frames only
            return context, whole, append, None
        if method == "window":
            context, flops = self._window(frames, WINDOW_FRAMES)  # rebuilt every segment, as the session does
            return context, flops, flops, None
        if method == "framepack":
            schedule = framepack_schedule(frames, self.grid_hw, self.budget(frames))
            context, flops = count_flops(lambda: self._pack(frames, schedule))
            rows = [
                {"rate": str(r), "frames": n, "tokens": n // r.t * (self.grid_hw[0] // r.h) * (self.grid_hw[1] // r.w)}
                for r, n in schedule
            ]
            return context, flops, flops, rows  # tiers shift as frames age: re-packed every segment
        model = self.encoders[rates]
        hr = self.hr(frames)
        lrs = [self.lr(frames, p.rate) if p.uses_lr else None for p in model.producers]
        context, whole = count_flops(lambda: model.encode_history(hr, lrs))
        return context, whole, self._append_flops(model, frames), None

    def _pack(self, frames: int, schedule: list[tuple[Rate, int]]) -> ContextTokens | None:
        """The FramePack context: each tier's frames through its kernel, oldest tier first, true block positions."""
        hr = self.hr(frames)
        parts, end = [], frames
        for rate, n in schedule:
            start = end - n
            chunk = hr[:, :, start:end]
            if rate == FRAMEPACK_TIERS[0]:
                parts.append(tokens_from_grid(self.backbone.patch_embed(chunk), rate, start))
            else:
                parts.append(self.patchifiers[rate](chunk, frame_offset=start))
            end = start
        return ContextTokens.concat(parts[::-1]) if parts else None

    def _append_flops(self, model: HistoryDiT, frames: int) -> float:
        """Producer FLOPs per generated segment in steady state, through :class:`IncrementalHistory` as the session
        drives it: after each segment every whole temporal block (lcm of the rates' rT) is encoded, with the frames
        the causal HR branch needs carried over; averaged over one cycle of segments and blocks."""
        producers = list(model.producers)
        chunks, cycle = steady_state_chunks(frames, temporal_block([p.rate for p in producers]), self.segment_frames)
        total = sum(self._one_append(p, model, encoded, new) for encoded, new in chunks for p in producers)
        return total / cycle

    def _one_append(self, producer, model: HistoryDiT, encoded: int, new: int) -> int:
        cache = IncrementalHistory(producer, model.backbone.patch_embed)
        state = {"frames_encoded": torch.tensor(encoded)}
        if cache.carry and encoded:
            state["tail"] = self.hr(min(cache.carry, encoded))
        cache.load_state_dict(state)
        lr_new = self.lr(new, producer.rate) if producer.uses_lr else None
        _, flops = count_flops(lambda: cache.append(self.hr(new), lr_new))
        return flops

    # -- the DiT ----------------------------------------------------------------------------------------------
    def _targets(self, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.segment_frames
        latents = torch.empty(1, self.backbone.in_channels, n, *self.latent_hw, device="meta")
        t = torch.full((1,), 0.5, device="meta")
        positions = (frames + torch.arange(n, device="meta"))[None]
        return latents, t, positions

    def dit_step(self, context: ContextTokens | None, frames: int) -> int:
        """One denoising step of one branch with ``context``. FLOPs depend on the token count only, so each count
        is run once (the first time, with that context's real positions) and reused."""
        k = context.num_tokens if context is not None else 0
        if k not in self._step_memo:
            latents, t, positions = self._targets(frames)

            def step() -> int:
                return count_flops(lambda: self.dit(latents, t, self.text, context, positions))[1]

            self._step_memo[k] = self.at_full_depth(step)
        return self._step_memo[k]

    def cached_step(self, context: ContextTokens, frames: int) -> tuple[int, int]:
        """(one cached denoising step, one cache build) with the history KV cache."""
        key = context.num_tokens
        if key not in self._cached_memo:
            model = self.kv_dit
            latents, t, positions = self._targets(frames)

            def step_and_build() -> tuple[int, int]:
                cache, build = count_flops(lambda: model.build_context_cache(context, self.text))
                step = count_flops(lambda: model(latents, t, self.text, None, positions, context_cache=cache))[1]
                return step, build

            self._cached_memo[key] = self.at_full_depth(step_and_build)
        return self._cached_memo[key]

    def causal_step(self, context: ContextTokens, frames: int) -> int:
        """One cached denoising step of one branch with the block-causal model (targets only)."""
        key = context.num_tokens
        if key not in self._causal_memo:
            model = self.causal_dit
            latents, t, positions = self._targets(frames)

            def step() -> int:
                cache = model.build_context_cache(context, None)  # shapes only: the FLOPs counted are the step's
                return count_flops(lambda: model(latents, t, self.text, None, positions, context_cache=cache))[1]

            self._causal_memo[key] = self.at_full_depth(step)
        return self._causal_memo[key]

    def causal_append(self, rates: tuple[str, ...], frames: int) -> float:
        """The block-causal cache's work per generated segment in steady state after ``frames`` history frames: the
        blocks the encoder completed since the last segment through every DiT block, attending to the cache of the
        blocks before them, once for both branches; averaged over one cycle of segments and blocks (as
        :meth:`_append_flops`)."""
        encoder = self.encoders[rates]
        chunks, cycle = steady_state_chunks(frames, temporal_block(encoder.rates), self.segment_frames)
        return sum(self._one_cache_append(encoder, encoded, new) for encoded, new in chunks) / cycle

    def _one_cache_append(self, encoder: HistoryDiT, encoded: int, new: int) -> int:
        """FLOPs of appending the tokens of ``new`` history frames to a block-causal cache of ``encoded`` frames."""
        old = self._tokens(encoder, 0, encoded) if encoded else None
        return self._count_append(old, self._tokens(encoder, encoded, new))

    def _tokens(self, encoder: HistoryDiT, start: int, frames: int) -> ContextTokens:
        """The encoder's tokens (with positions and blocks) for history frames ``start … start + frames``."""
        lrs = [self.lr(frames, p.rate) if p.uses_lr else None for p in encoder.producers]
        return encoder.encode_history(self.hr(frames), lrs, frame_offset=start)

    # -- tiers ------------------------------------------------------------------------------------------------
    def tier_context(self, model: HistoryDiT, frames: int) -> ContextTokens | None:
        """The tiered context after ``frames`` history frames (positions and blocks), as training and sessions see
        it."""
        lrs = [self.lr(frames, p.rate) if p.uses_lr else None for p in model.producers]
        return model.encode_history(self.hr(frames), lrs)

    def tier_cache_work(self, model: HistoryDiT, frames: int) -> tuple[float, float]:
        """The block-causal cache's work per segment with tiers in steady state after ``frames`` history frames, and
        the moves' share of it, over one cycle of moves (lcm of the segment and the move, in segments) as
        :meth:`GenerationSession.history_cache` does it: after each segment's whole blocks, the cache is kept up to
        the earliest frame whose tier changed (all of it without a move) and the tiered context from there on is
        appended, attending to what was kept. The share of the moves is that work less what appending the same
        new blocks to an unchanged cache would have cost."""
        plan: TierPlan = model.tiers
        segments = math.lcm(self.segment_frames, plan.move) // self.segment_frames
        encoded = frames // plan.block * plan.block
        pending = frames - encoded
        total = moves = 0
        for _ in range(segments):
            pending += self.segment_frames
            whole = pending // plan.block * plan.block
            if not whole:
                continue
            after = encoded + whole
            context = self.tier_context(model, after)
            keep = plan.unchanged(encoded, after)
            kept = self._tier_tokens_before(plan, after, keep)
            work = self._count_append(context.narrow(0, kept), context.narrow(kept))
            total += work
            if keep < encoded:  # a move: compare with appending the new blocks to the cache of before
                before = self.tier_context(model, encoded)
                new = context.narrow(self._tier_tokens_before(plan, after, encoded))
                moves += work - self._count_append(before, new)
            encoded, pending = after, pending - whole
        return total / segments, moves / segments

    def _tier_tokens_before(self, plan: TierPlan, frames: int, before: int) -> int:
        """How many tokens of the tiered context of ``frames`` frames lie before frame ``before`` (the context is in
        time order; counted from the layout, since meta tensors hold no values to compare)."""
        h, w = self.grid_hw
        count = 0
        for rate, (start, end) in zip(plan.rates, plan.spans(frames), strict=True):
            count += max(0, min(end, before) - start) // rate.t * (h // rate.h) * (w // rate.w)
        return count

    def _count_append(self, prior: ContextTokens | None, added: ContextTokens) -> int:
        """FLOPs of appending ``added`` to a block-causal cache of ``prior``'s tokens (None or none: an empty cache;
        FLOPs depend on the counts only, so each pair is counted once)."""
        prior = prior if prior is not None and prior.num_tokens else None
        key = (prior.num_tokens if prior is not None else 0, added.num_tokens)
        if key not in self._append_memo:
            model = self.causal_dit

            def append() -> int:
                cache = model.build_context_cache(prior, None) if prior is not None else None  # shapes only
                return count_flops(lambda: model.build_context_cache(added, None, cache))[1]

            self._append_memo[key] = self.at_full_depth(append)
        return self._append_memo[key]

    def _tier_rows(
        self, spec: TierSet, model: HistoryDiT, seconds: float, frames: int, baseline: int, per_second: float
    ) -> list[CostRow]:
        """A tier set's rows at one history length: uncached, and block-causal with its cache work and moves."""
        context, whole = count_flops(lambda: self.tier_context(model, frames))
        append = self._append_flops(model, frames)
        common = self._tier_fields(spec, seconds, frames, context.num_tokens, whole, append)
        rows = [self._row(common, self.dit_step(context, frames), append, baseline, per_second)]
        if self.causal_dit is not None:
            step = self.causal_step(context, frames)
            work, moves = self.tier_cache_work(model, frames)
            rows.append(self._row(common, step, append, baseline, per_second, work, cache_move_tflops=moves / TERA))
        return rows

    # -- the stacked tier layout -------------------------------------------------------------------------------
    def _rate_tokens(self, model: HistoryDiT, start: int, frames: int) -> list[ContextTokens]:
        """Every rate's tokens of history frames ``start … start + frames`` (positions from ``start``)."""
        lrs = [self.lr(frames, p.rate) if p.uses_lr else None for p in model.producers]
        return model.rate_tokens(self.hr(frames), lrs, frame_offset=start)

    def stacked_view(self, model: HistoryDiT, frames: int) -> tuple[ContextTokens, int]:
        """What the targets read after ``frames`` history frames with the stacked layout (each tier's span of every
        rate's tokens, with blocks) and the FLOPs of encoding every rate over the whole history."""
        plan: TierPlan = model.tiers
        whole = frames // plan.block * plan.block
        parts, flops = count_flops(lambda: self._rate_tokens(model, 0, whole))
        return model.with_blocks(select_tiers(plan, parts, whole)), flops

    def stacked_step(self, model: HistoryDiT, view: ContextTokens, frames: int) -> int:
        """One cached denoising step of one branch over the targets' view (the targets attend to it and themselves;
        the context's window does not enter a cached step)."""
        key = view.num_tokens
        if key not in self._stacked_memo:
            latents, t, positions = self._targets(frames)

            def step() -> int:
                cache = model.build_context_cache(view, None)  # shapes only: the FLOPs counted are the step's
                return count_flops(lambda: model(latents, t, self.text, None, positions, context_cache=cache))[1]

            self._stacked_memo[key] = self.at_full_depth(step)
        return self._stacked_memo[key]

    def stacked_cache_work(self, model: HistoryDiT, frames: int) -> float:
        """The stacked cache's work per generated segment in steady state after ``frames`` history frames, as the
        session does it (:class:`StackedTierCache`): after each segment the whole blocks completed, every rate,
        attending to one window of cached blocks; averaged over one cycle of segments and blocks. No move enters."""
        plan: TierPlan = model.tiers
        chunks, cycle = steady_state_chunks(frames, plan.block, self.segment_frames)
        return sum(self._stacked_append(model, encoded, new) for encoded, new in chunks) / cycle

    def _stacked_append(self, model: HistoryDiT, encoded: int, new: int) -> int:
        """FLOPs of appending ``new`` frames' blocks to a stacked cache of ``encoded`` frames: the cache holds the
        window the new blocks attend to (built uncounted, shapes only), then the append is counted."""
        plan: TierPlan = model.tiers
        first = max(0, encoded // plan.block - plan.window_blocks + 1)  # the oldest block a new block sees
        start = first * plan.block
        before = self._rate_tokens(model, start, encoded - start) if encoded > start else None
        tokens = self._rate_tokens(model, start, encoded + new - start)

        def append() -> int:
            cache = StackedTierCache(plan, first)
            if before is not None:
                cache.grow(model, before, encoded)  # shapes only: the FLOPs counted are the append's
            return count_flops(lambda: cache.grow(model, tokens, encoded + new))[1]

        return self.at_full_depth(append)

    def _stacked_row(
        self, spec: TierSet, model: HistoryDiT, seconds: float, frames: int, baseline: int, per_second: float
    ) -> CostRow:
        """A stacked tier set's row at one history length: the cached step over the targets' view, the producers'
        append (every rate) and the stacked cache's append, spread over every forward of the segment."""
        view, whole = self.stacked_view(model, frames)
        append = self._append_flops(model, frames)
        step = self.stacked_step(model, view, frames)
        work = self.stacked_cache_work(model, frames)
        common = self._tier_fields(spec, seconds, frames, view.num_tokens, whole, append)
        return self._row(common, step, append, baseline, per_second, work, context_window=spec.window)

    # -- rows -------------------------------------------------------------------------------------------------
    def variants(self) -> list[tuple[str, tuple[str, ...]]]:
        out: list[tuple[str, tuple[str, ...]]] = []
        for method in self.settings.methods:
            if method == "proposed":
                out += [("proposed", rates) for rates in self.settings.proposed_rates]
            else:
                out.append((method, ()))
        return out

    def rows(self) -> list[CostRow]:
        s = self.settings
        steps, branches = s.steps, s.branches
        per_second = 1 / (self.segment_frames * self.base.vae_temporal / self.fps)  # segments per generated second
        baseline = self.dit_step(None, 0)
        out: list[CostRow] = []
        for seconds in s.history_seconds:
            frames = self.latent_frames(seconds)
            for method, rates in self.variants():
                context, whole, append, schedule = self.produce(method, rates, frames)
                k = context.num_tokens if context is not None else 0
                used = list(rates) if schedule is None else [t["rate"] for t in schedule]
                common = self._fields(method, used, seconds, frames, k, whole, append, schedule=schedule)
                out.append(self._row(common, self.dit_step(context, frames), append, baseline, per_second))
                if self.kv_dit is not None and k:
                    cached, build = self.cached_step(context, frames)
                    total = cached + build / steps + append / (steps * branches)
                    out.append(
                        CostRow(
                            **common,
                            kv_cache=True,
                            dit_step_tflops=cached / TERA,
                            cache_build_tflops=build / TERA,
                            step_tflops=total / TERA,
                            second_tflops=((cached * steps + build) * branches + append) * per_second / TERA,
                            history_overhead=total / baseline - 1,
                        )
                    )
                if self.causal_dit is not None and k and method == "proposed":
                    step, work = self.causal_step(context, frames), self.causal_append(rates, frames)
                    out.append(self._row(common, step, append, baseline, per_second, work))
            for spec, model in self.tiered.items():
                if spec.layout == "stacked":
                    out.append(self._stacked_row(spec, model, seconds, frames, baseline, per_second))
                else:
                    out += self._tier_rows(spec, model, seconds, frames, baseline, per_second)
        return out

    def _fields(
        self,
        method: str,
        rates: list[str],
        seconds: float,
        frames: int,
        tokens: int,
        whole: float,
        append: float,
        **extra,
    ) -> dict:
        """What every row of one producer at one history length shares: its context and what producing it costs,
        on the whole history (``whole``) and per generated segment (``append``), FLOPs."""
        return dict(
            preset=self.settings.preset,
            method=method,
            rates=rates,
            history_seconds=seconds,
            history_frames=frames,
            context_tokens=tokens,
            producer_tflops=whole / TERA,
            append_tflops=append / TERA,
            **extra,
        )

    def _tier_fields(
        self, spec: TierSet, seconds: float, frames: int, tokens: int, whole: float, append: float
    ) -> dict:
        """:meth:`_fields` of a tier set's rows (the proposed encoders at its rates, its tiers, move and layout)."""
        tiers = dict(tiers=list(spec.seconds), tier_move=spec.move, tier_layout=spec.layout)
        return self._fields("proposed", list(spec.rates), seconds, frames, tokens, whole, append, **tiers)

    def _row(
        self,
        common: dict,
        step: int,
        append: float,
        baseline: int,
        per_second: float,
        work: float | None = None,
        **extra,
    ) -> CostRow:
        """One row from one branch's DiT step (``step``), spread over every forward of the segment: the producers'
        per-segment ``append`` and, on a block-causal row (``work`` given), the incremental cache's work per
        segment (one append serves both branches). ``work`` None: the uncached row. ``extra``: the tier rows'
        ``cache_move_tflops``, the stacked rows' ``context_window``."""
        s = self.settings
        forwards = s.steps * s.branches
        cached = work is not None
        build = work if cached else 0  # the uncached row builds no cache
        total = step + (build + append) / forwards
        return CostRow(
            **common,
            kv_cache=cached,
            dit_step_tflops=step / TERA,
            cache_build_tflops=build / TERA,
            step_tflops=total / TERA,
            second_tflops=(step * forwards + build + append) * per_second / TERA,
            history_overhead=total / baseline - 1,
            context_attention="block_causal" if cached else "full",
            **extra,
        )

    def header(self) -> str:
        """One line naming everything the table depends on."""
        s = self.settings
        n = self.segment_frames
        targets = n // self.backbone.patch_size[0] * self.grid_hw[0] * self.grid_hw[1]
        return (
            f"{s.preset} ({self.model_name}, meta device): {self.height}x{self.width}, {self.fps:g} fps, segments of "
            f"{n} latent frames ({targets:,} target tokens), {s.steps} steps x {s.branches} CFG branch"
            f"{'es' if s.branches > 1 else ''}, text {self.text_tokens} tokens"
        )


def cost_rows(settings: CostSettings) -> list[CostRow]:
    """Every row for ``settings`` (see :class:`CostModel`)."""
    return CostModel(settings).rows()


def markdown_table(rows: list[CostRow]) -> str:
    """The rows as a markdown table (what ``tinyhistory cost`` prints without ``--json``)."""
    out = [
        "| history s | method | rates | KV cache | context tokens | DiT TFLOPs/step | producer TFLOPs (whole history) "
        "| producer TFLOPs/segment | cache build TFLOPs | step TFLOPs | overhead | PFLOPs per generated s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cache = {False: "no", True: "yes"}  # the block-causal rows say "block-causal" (their build: once per segment)
    for r in rows:
        if r.schedule:  # framepack: each tier's rate and latent frames, newest first
            rates = " ".join(f"{t['rate']}:{t['frames']}f" for t in r.schedule)
        elif r.tiers is not None:  # tiers: each tier's rate and seconds, newest first, and the move
            rates = "+".join(f"{x}:{t:g}s" for x, t in zip(r.rates, r.tiers, strict=False))
            stacked = f", stacked, window {r.context_window:g}s" if r.tier_layout == "stacked" else ""
            rates += f"+{r.rates[-1]} (tiers, moves of {r.tier_move:g}s{stacked})"
        else:
            rates = "+".join(r.rates)
        kv = "block-causal" if r.context_attention == "block_causal" else cache[r.kv_cache]
        out.append(
            f"| {r.history_seconds:g} | {r.method} | {rates} | {kv} "
            f"| {r.context_tokens:,} | {r.dit_step_tflops:,.2f} | {r.producer_tflops:,.3f} | {r.append_tflops:,.3f} "
            f"| {r.cache_build_tflops:,.2f} | {r.step_tflops:,.2f} | {r.history_overhead:+.0%} "
            f"| {r.second_tflops / 1e3:,.2f} |"
        )
    return "\n".join(out)
