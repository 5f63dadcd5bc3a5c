"""Streaming generation: a storyboard becomes a video one segment at a time, every segment seeing the whole history.

    session = GenerationSession(model, setup, codec, encode_text)   # setup: generate.run.session_setup(cfg)
    session.start_from_video(frames)            # or start_from_image(image), or nothing
    clip = session.extend("A rabbit wakes up.", seconds=2.0)   # (T, H, W, 3) uint8
    session.save("story.session")               # pause ... GenerationSession.load(...) resumes exactly

Everything is counted in **latent frames**: a segment is ``segment_frames`` latent frames (the real presets' 1 s:
4 at 16 fps, 6 at 24 fps), positions and encoder blocks are latent frames, and the history is kept as latents. With
a causal video VAE (temporal factor f = 4) the first latent is one pixel frame and every later one four, so a
segment from nothing decodes to ``1 + f·(n − 1)`` frames and every later one to ``f·n``.

The codec is streamed exactly (``codecs/streaming.py``): a starting video or image is encoded in pieces, each
generated segment is decoded by a decoder that carries its causal cache from the segment before (it has also seen
the starting history's latents), and the LR branch's input is the decoded frames, quantised to uint8 as a real video
would be, downsampled by the rate and encoded by its own stream. One
:class:`~tinyhistory.history.streaming.IncrementalHistory` cache per encoder grows by whole temporal blocks. A
session's state is its latents, its stream and encoder caches and its random generator, so ``save``/``load``
continue bit for bit.

Sampling uses the diffusers flow-matching schedulers (Euler or UniPC, behind ``flow.NoiseSchedule``) with
classifier-free guidance: the unconditional branch sees the empty prompt (``text.empty``), the same history, and the
stage-II text dropout taught the model what that means. What the family's own pipeline does differently is read off
its adapter (:class:`~tinyhistory.backbones.base.SamplingRecipe`: the folder's scheduler, a second expert, a clean
first frame; a guidance embedding; a time shift by the token count), never by a family's or a scheduler's name here.

With the history KV cache (``history.kv_cache``) the history's keys and values are computed once per segment. With
``history.context_attention = "block_causal"`` they depend on nothing later (not on later blocks, not on the prompt),
so the session keeps them from segment to segment and appends only the blocks encoded since the last segment, once
for both CFG branches and across prompt switches; the sliding window's frames (if any) are the newest block, added
for one segment only. That cache is not saved: a loaded session rebuilds it from the saved history tokens at its
first segment (equal to the grown one within float rounding; a one-time cost of one pass over the history).

With tiered rates (``history.tiers``, ``history/tiers.py``) every encoder still encodes every new block, and the DiT
sees each tier's span of its encoder's tokens, oldest tier first. When whole chunks move to a coarser tier, the
block-causal cache keeps its prefix before the earliest moved chunk and recomputes the rest (the moved chunk's new
tokens and every newer block, which attended to it), so it always equals a fresh build at the current layout. With
``history.tier_layout = "stacked"`` (``history/stacked.py``) the cache holds every rate of every block, each attending
to a bounded window of blocks: a move recomputes nothing, and the targets read each tier's span of it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from tinyhistory.backbones import ContextTokens
from tinyhistory.backbones.base import Backbone, SamplingRecipe
from tinyhistory.codecs.streaming import LowResStream
from tinyhistory.data.windows import to_pixels, to_uint8
from tinyhistory.files import read_tensors
from tinyhistory.flow import FLOW_SAMPLERS, TIMESTEP_SCALE, FlowMatchingSchedule, flow_scheduler
from tinyhistory.geometry import temporal_block
from tinyhistory.history.stacked import StackedTierCache, stack_tiers
from tinyhistory.history.streaming import IncrementalHistory
from tinyhistory.history.tiers import select_tiers
from tinyhistory.paths import resolve_path
from tinyhistory.text.condition import TextCondition

if TYPE_CHECKING:
    from tinyhistory.config import DataConfig, ModelConfig

SAMPLERS = FLOW_SAMPLERS


@dataclass
class SamplingSettings:
    sampler: str = "euler"
    steps: int = 20
    guidance: float = 3.0  # classifier-free guidance (1 = off); `generate` defaults to the family's (HunyuanVideo: 1)
    # The embedded guidance of a guidance-distilled DiT (HunyuanVideo: the pipeline's ``guidance_scale``, 6.0); models
    # without a guidance embedding ignore it.
    distilled_guidance: float = 6.0
    seed: int = 0
    segment_frames: int = 8  # latent frames per segment (about one second at the tiny preset's 8 fps)
    # The scheduler's time shift; 0 = the model folder's scheduler config (the pipeline's), else 1.
    flow_shift: float = 0.0
    # The flow time below which the second expert takes the steps; 0 = the model folder's (Wan 2.2 A14B's
    # ``boundary_ratio``, 0.875). Only with a second expert: the folder's stock one or ``--low-noise``'s checkpoint.
    boundary: float = 0.0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.steps < 1 or self.segment_frames < 1:
            raise ValueError(f"steps and segment_frames must be positive, got {self.steps} and {self.segment_frames}")
        if not math.isfinite(self.flow_shift) or self.flow_shift < 0:
            raise ValueError(f"flow_shift must be a finite number >= 0 (0 = the model folder's), got {self.flow_shift}")
        if not 0.0 <= self.boundary < 1.0:
            raise ValueError(f"boundary must be a flow time in [0, 1) (0 = the model folder's), got {self.boundary}")
        for name in ("guidance", "distilled_guidance"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


@dataclass
class SegmentRecord:
    """What the CLI logs per segment (JSONL). Frame counts are latent frames; ``pixel_frames`` what was decoded."""

    index: int
    start_frame: int
    frames: int
    prompt: str
    history_frames: int
    context_tokens: int
    latency_s: float
    pixel_frames: int = 0


def sampling_recipe(backbone: Backbone | type[Backbone], model: ModelConfig) -> SamplingRecipe:
    """How the family's own pipeline samples from the run's model folder (``model``: the ``[model]`` table, its
    ``path`` and ``transformer``); without a folder, the defaults. The family's adapter reads the folder
    (:meth:`~tinyhistory.backbones.base.DiffusersBackbone.sampling_recipe`)."""
    folder = resolve_path(model.path) if model.path else None
    return backbone.sampling_recipe(folder, model.transformer)


def make_scheduler(settings: SamplingSettings, recipe: SamplingRecipe | None = None):
    """A diffusers flow-matching scheduler for ``settings.sampler``. The sampler of the model folder's pipeline
    (``recipe.sampler``) is built from the folder's own config (solver order, flow sigmas, its flow shift), as the
    pipeline builds it; ``settings.flow_shift`` > 0 replaces the shift (and any shifting by the token count)."""
    recipe = recipe or SamplingRecipe()
    folder = recipe.scheduler or {}
    # UniPC calls its shift ``flow_shift`` (Wan), the flow-matching Euler scheduler ``shift`` (HunyuanVideo).
    shift = settings.flow_shift or float(folder.get("flow_shift", folder.get("shift", 1.0)))
    own = recipe.scheduler if recipe.scheduler and settings.sampler == recipe.sampler else None
    return flow_scheduler(settings.sampler, shift, own, fixed_shift=bool(settings.flow_shift))


def segment_schedule(
    settings: SamplingSettings, recipe: SamplingRecipe, backbone: Backbone, tokens: int, device: torch.device | str
) -> FlowMatchingSchedule:
    """The ``settings.steps`` steps of one segment of ``tokens`` DiT tokens: :func:`make_scheduler`'s, shifted by
    the token count where the family's pipeline does (``backbone.timestep_shift``: LTX-Video's folder)."""
    scheduler = make_scheduler(settings, recipe)
    return FlowMatchingSchedule(scheduler, settings.steps, device, backbone.timestep_shift(tokens, scheduler.config))


def load_second_expert(
    backbone: Backbone, model: ModelConfig, recipe: SamplingRecipe, dtype: torch.dtype
) -> nn.Module | None:
    """The stock second expert the recipe names (Wan 2.2 A14B's low-noise ``transformer_2/``) from the model folder
    (``model.path``), of the same family as ``backbone``; None for one-expert models. It denoises the steps below
    ``recipe.boundary`` without history, as the pipeline switches experts (see ``WanBackbone.sampling_recipe``)."""
    if recipe.second_expert is None:
        return None
    return type(backbone).from_pretrained(resolve_path(model.path), recipe.second_expert, dtype).eval()


def expert_boundary(settings: SamplingSettings, recipe: SamplingRecipe, low_noise: nn.Module | None) -> float | None:
    """The flow time below which ``low_noise`` takes the steps: ``settings.boundary``, else the model folder's
    (``recipe.boundary``); None without a second expert. A boundary with no expert to hand the steps to, or an
    expert with no boundary, is refused by name."""
    boundary = settings.boundary or recipe.boundary
    if low_noise is None:
        if settings.boundary:
            raise ValueError(
                f"boundary {settings.boundary}: there is no second expert to take the steps below it (the model "
                "folder has none: give a low-noise checkpoint, `--low-noise`)"
            )
        return None
    if boundary is None:
        raise ValueError(
            "a low-noise expert needs the flow time below which it takes the steps: set the boundary (`--boundary`, "
            "e.g. 0.875 as Wan 2.2 A14B; the model folder names none)"
        )
    return boundary


def frame_shape(data: DataConfig) -> tuple[int, int]:
    """The run's frame ``(height, width)``: ``data.height × data.width`` when set, else ``data.size`` square."""
    return (data.height, data.width) if data.height else (data.size, data.size)


@dataclass(frozen=True)
class SessionSetup:
    """The few values of a run's config that a session reads, so that a session depends on them and on nothing else
    of the config. The whole config stays with the caller: ``tinyhistory generate`` and the studio build this from it
    with :func:`tinyhistory.generate.run.session_setup`.

    ``preset``, ``history_method`` and ``history_rates`` are the config's own values, written into a saved session's
    identity (:meth:`GenerationSession.identity`: a session resumes only under the same).
    """

    model: ModelConfig  # ``[model]``: the folder whose pipeline's scheduler, second expert and image conditioning apply
    height: int  # frame height × width in pixels (:func:`frame_shape` of ``[data]``)
    width: int
    fps: float  # ``data.fps``: how long a segment is in seconds
    segment_frames: int  # ``train.segment_frames``: latent frames per segment when no settings are given
    text_empty: str  # ``text.empty``: "encoded" = CFG's unconditional prompt is the encoder's "", else all zeros
    preset: str  # ``preset``
    history_method: str  # ``history.method``
    history_rates: tuple[str, ...]  # ``history.rates``


class GenerationSession:
    """One long generation. Not thread-safe; one segment at a time."""

    def __init__(
        self,
        model,
        setup: SessionSetup,
        codec,
        encode_text: Callable[[list[str]], TextCondition],
        settings: SamplingSettings | None = None,
        device: torch.device | str | None = None,
        low_noise: nn.Module | None = None,
    ):
        """``low_noise``: a second expert for the steps below ``settings.boundary`` instead of the model folder's
        stock one (``tinyhistory generate --low-noise``: another checkpoint's DiT, see
        :func:`tinyhistory.generate.run.load_low_noise_checkpoint`); it runs without history, as Wan 2.2 A14B's."""
        self.model = model.eval()
        self.setup = setup
        self.codec = codec
        self.encode_text = encode_text
        self.settings = settings or SamplingSettings(segment_frames=setup.segment_frames)
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        # how the family's pipeline samples from the model folder: its scheduler, a second expert, image conditioning
        self.recipe = sampling_recipe(model.backbone, setup.model)
        base_dtype = model.backbone.patch_embedding.weight.dtype
        # (loaded on the CPU; it visits the device at the first segment, or block by block when the caller
        # group-offloads it and sets ``low_noise_offloaded``)
        if low_noise is None:
            low_noise = load_second_expert(model.backbone, setup.model, self.recipe, base_dtype)
        self.low_noise = low_noise.eval() if low_noise is not None else None
        self.low_noise_offloaded = False
        expert_boundary(self.settings, self.recipe, self.low_noise)  # a boundary without an expert, or the reverse
        with_features = len(model.enhancers) > 0
        self.caches = [IncrementalHistory(p, model.backbone.patch_embed, with_features) for p in model.producers]
        self.block = temporal_block([p.rate for p in model.producers])
        self.generator = torch.Generator().manual_seed(self.settings.seed)
        self.height, self.width = setup.height, setup.width
        s = codec.spatial_factor
        patch = model.backbone.patch_size[1]
        for p in model.producers:
            smallest = s * patch * max(p.rate.h, p.rate.w)
            if min(self.height, self.width) < smallest:
                raise ValueError(
                    f"frames of {self.height}x{self.width} are too small for the history rate {p.rate}: one history "
                    f"token covers {smallest}x{smallest} pixels here (set data.height and data.width to at least that)"
                )
        # (1, C, T, h, w) every latent frame of the history so far (CPU)
        self.latents = torch.zeros(1, codec.latent_channels, 0, self.height // s, self.width // s)
        self.encoder = codec.stream_encoder()  # a starting video or image → latents
        self.decoder = codec.stream_decoder()  # latents → frames, carried from segment to segment
        self.lowres = [LowResStream(codec, p.rate) if p.uses_lr else None for p in model.producers]
        self._lowres_pending: list[torch.Tensor | None] = [None] * len(self.lowres)  # LR latents not yet cached
        self.pixel_frames = 0  # decoded frames of the history so far
        self.origin = 0  # latent frames of history given at the start (generated frames come after)
        self.first_frame: torch.Tensor | None = None  # TI2V: the start image's latent, frame 0 of the first segment
        self.records: list[SegmentRecord] = []
        self._text: dict[str, TextCondition] = {}
        # Block-causal context: every encoded block's keys/values so far (rebuilt from the tokens after ``load``,
        # never saved); empty until the first segment.
        self.forget_cache()

    @property
    def boundary(self) -> float | None:
        """The flow time below which the second expert takes the steps (Wan 2.2 A14B, ``--low-noise``), or None."""
        return expert_boundary(self.settings, self.recipe, self.low_noise)

    def _autocast(self):
        """The DiT and the encoders run under autocast when the base keeps a low dtype (``model.dtype``, bfloat16
        at real size); the VAE streams stay outside, in their own dtype."""
        dtype = self.model.backbone.patch_embedding.weight.dtype  # (diffusers keeps a few tables in float32)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32)

    # -- history --------------------------------------------------------------------------------------------
    @property
    def history_frames(self) -> int:
        """Latent frames of history (given and generated)."""
        return self.latents.shape[2]

    @property
    def frames_per_latent(self) -> int:
        return self.codec.temporal_factor

    @torch.no_grad()
    def _append(self, latents: torch.Tensor, pixels: torch.Tensor) -> None:
        """Latents ``(1, C, m, h, w)`` join the history, with their pixels ``(1, 3, k, H, W)`` in [-1, 1] for the LR
        streams; the encoder caches grow by every whole temporal block now complete."""
        self.latents = torch.cat([self.latents, latents.cpu()], dim=2)
        self.pixel_frames += pixels.shape[2]
        for i, stream in enumerate(self.lowres):
            if stream is not None:
                new = stream.push(pixels)
                pending = self._lowres_pending[i]
                self._lowres_pending[i] = new if pending is None else torch.cat([pending, new], dim=2)
        if not self.caches:
            return
        encoded = self.caches[0].frames_encoded
        whole = (self.history_frames - encoded) // self.block * self.block
        if whole == 0:
            return
        hr = self.latents[:, :, encoded : encoded + whole].to(self.device)
        for i, cache in enumerate(self.caches):
            lr = None
            if self.lowres[i] is not None:
                take = whole // cache.producer.rate.t
                pending = self._lowres_pending[i]
                lr, self._lowres_pending[i] = pending[:, :, :take].to(self.device), pending[:, :, take:]
            with self._autocast():
                cache.append(hr, lr)

    def start_frames(self, frames: int) -> int:
        """Of a starting video of ``frames`` frames, how many to keep: the last ones that make whole temporal blocks
        of latents (a causal VAE: ``1 + f·(block·k − 1)``), so generation continues from the very last frame."""
        f = self.frames_per_latent
        latents = 1 + (frames - 1) // f if f > 1 else frames
        whole = latents // self.block * self.block
        return 0 if whole == 0 else (1 + f * (whole - 1) if f > 1 else whole)

    @torch.no_grad()
    def start_from_video(self, frames: np.ndarray | Iterable[np.ndarray], total: int | None = None) -> None:
        """A video as history: uint8 frames ``(n, H, W, 3)``, or chunks of them (``total`` frames in all), so a long
        video is never held whole. The first frames that do not make whole temporal blocks are dropped."""
        if self.history_frames or self.records:
            raise ValueError("a session starts once: this one has history already")
        chunks = [frames] if isinstance(frames, np.ndarray) else frames
        total = len(frames) if isinstance(frames, np.ndarray) else total
        if total is None:
            raise ValueError("start_from_video with chunks needs the total number of frames")
        skip = total - self.start_frames(total)
        for chunk in chunks:
            if chunk.ndim != 4 or chunk.shape[1:] != (self.height, self.width, 3):
                raise ValueError(
                    f"history frames must be (n, {self.height}, {self.width}, 3) uint8, got {tuple(chunk.shape)}"
                )
            drop = min(skip, len(chunk))
            skip -= drop
            if drop == len(chunk):
                continue
            pixels = to_pixels(chunk[drop:])[None]
            latents = self.encoder.push(pixels)
            self.decoder.prime(latents.to(self.device))  # the decoder's causal context must have seen the history
            self._append(latents, pixels)
        self.origin = self.history_frames

    def start_from_image(self, image: np.ndarray) -> None:
        """An image to start from. Where the family's pipeline conditions on a clean first frame (Wan 2.2 TI2V-5B,
        ``recipe.first_frame``): the model's own image conditioning, the image's latent as the clean first frame of the
        first segment. Other models: the still frame as history for one temporal block (``1 + f·(block − 1)``
        frames)."""
        if self.recipe.first_frame:
            if self.history_frames or self.records:
                raise ValueError("a session starts once: this one has history already")
            if image.shape != (self.height, self.width, 3):
                raise ValueError(f"the image must be ({self.height}, {self.width}, 3) uint8, got {image.shape}")
            self.first_frame = self.codec.encode(to_pixels(image[None])[None]).to(self.device)
            return
        f = self.frames_per_latent
        count = 1 + f * (max(self.block, 1) - 1) if f > 1 else max(self.block, 1)
        self.start_from_video(np.repeat(image[None], count, axis=0))

    def context(self) -> ContextTokens | None:
        """What the DiT sees of the history now: cached encoder tokens, then the uncompressed sliding window."""
        parts = [p for p in (self._encoded_context(), self._window_context()) if p is not None]
        return ContextTokens.concat(parts) if parts else None

    def _encoded_context(self) -> ContextTokens | None:
        """Every encoder's tokens so far (with tiers: each tier's span of them), with their temporal blocks."""
        if self.model.tiers is not None and self.model.tiers.stacked:  # every rate; the targets see the tiers
            frames = self.caches[0].frames_encoded
            stacked = stack_tiers(self.model.tiers, [c.context for c in self.caches], frames) if frames else None
            return self.model.with_blocks(stacked) if stacked is not None else None
        if self.model.tiers is not None:
            frames = self.caches[0].frames_encoded
            tiered = select_tiers(self.model.tiers, [c.context for c in self.caches], frames) if frames else None
            return self.model.with_blocks(tiered) if tiered is not None else None
        parts = [c.context for c in self.caches if c.frames_encoded > 0]
        return self.model.with_blocks(ContextTokens.concat(parts)) if parts else None

    def _window_context(self) -> ContextTokens | None:
        """The sliding window's uncompressed frames (the newest block), or None."""
        if not (self.history_frames and self.model.sliding_window > 0):
            return None
        # Only the window's frames visit the device, not the whole history.
        recent = self.latents[:, :, -self.model.sliding_window :].to(self.device)
        return self.model.window_tokens(recent, frame_offset=self.history_frames - recent.shape[2])

    @torch.no_grad()
    def history_cache(self, context: ContextTokens | None = None):
        """The history's keys/values for the next segment with a block-causal context (``history.context_attention
        = "block_causal"`` and ``history.kv_cache``), else None: the kept cache grown by the blocks encoded since
        the last segment (only their keys/values are computed, once for every prompt and CFG branch), plus the
        sliding window's frames for this segment only. ``context``: :meth:`context`, if already at hand."""
        backbone = self.model.backbone
        context = context if context is not None else self.context()
        if context is None or not (backbone.block_causal and backbone.kv_cache):
            return None
        if self.model.tiers is not None and self.model.tiers.stacked:
            return self._stacked_cache()
        if self.model.tiers is not None:
            return self._tiered_cache(context)
        encoded = sum(c.context.num_tokens for c in self.caches if c.frames_encoded > 0)
        window = context.narrow(encoded) if context.num_tokens > encoded else None  # the newest block
        new = [
            c.context.narrow(n)
            for c, n in zip(self.caches, self._history_kv_tokens, strict=True)
            if c.frames_encoded > 0 and c.context.num_tokens > n
        ]
        if new:
            added = self.model.with_blocks(ContextTokens.concat(new))
            self._history_kv = self.model.build_context_cache(added, None, self._history_kv)
            self._history_kv_tokens = [c.context.num_tokens if c.frames_encoded else 0 for c in self.caches]
        if window is None:
            return self._history_kv
        return self.model.build_context_cache(window, None, self._history_kv)

    def _tiered_cache(self, context: ContextTokens):
        """:meth:`history_cache` with tiers: the kept cache up to the earliest chunk that moved to a coarser tier since
        the last segment (all of it if none moved), then the tiered context from there on (the new blocks, or the
        moved chunk's coarse tokens and every newer block) attending to it; plus the sliding window."""
        encoded = self._encoded_context()
        frames = self.caches[0].frames_encoded
        n = encoded.num_tokens if encoded is not None else 0
        window = context.narrow(n) if context.num_tokens > n else None  # the newest block
        if encoded is not None and (self._history_kv is None or frames != self._history_kv_frames):
            keep = self.model.tiers.unchanged(self._history_kv_frames, frames) if self._history_kv is not None else 0
            kept = int((encoded.blocks[0] < keep // self.model.tiers.block).sum())
            prior = self._history_kv.prefix(kept) if kept else None
            added = encoded.narrow(kept)
            self._history_kv = self.model.build_context_cache(added, None, prior) if added.num_tokens else prior
            self._history_kv_frames = frames
        if window is None:
            return self._history_kv
        return self.model.build_context_cache(window, None, self._history_kv)

    def _stacked_cache(self):
        """:meth:`history_cache` with the stacked tier layout: the blocks encoded since the last segment (every rate)
        appended, attending to one window of cached blocks; what the targets read is each tier's span of it."""
        frames = self.caches[0].frames_encoded
        if self._stacked_kv is None:
            self._stacked_kv = StackedTierCache(self.model.tiers)
        self._stacked_kv.grow(self.model, [c.context for c in self.caches], frames)
        return self._stacked_kv.view(frames)

    def forget_cache(self) -> None:
        """Drop the kept history keys/values (the block-causal context's cache, with or without tiers), so that the
        next segment computes every history block's keys/values again, as a session just loaded from a file does.

        The frames stay what they would be (the grown cache equals a fresh build, to rounding); only the next
        segment's time changes. A caller wants this to measure what growing the cache saves over rebuilding it every
        segment (``benchmarks/history_latency.py``), or to free the cache's memory while the session waits. Without
        a block-causal context nothing is kept between segments, and this does nothing."""
        self._history_kv = None
        self._history_kv_tokens = [0] * len(self.caches)  # how many of each encoder's tokens the kept cache holds
        self._history_kv_frames = 0  # with tiers: the encoded frames whose layout the kept cache holds
        self._stacked_kv: StackedTierCache | None = None  # the stacked tier layout's cache

    # -- generation -----------------------------------------------------------------------------------------
    def _prompt_embedding(self, prompt: str) -> TextCondition:
        if prompt not in self._text:
            self._text[prompt] = self.encode_text([prompt]).to(self.device)
        return self._text[prompt]

    def _empty_prompt(self) -> TextCondition | None:
        """CFG's unconditional prompt: the encoder's ``""`` (``text.empty = "encoded"``), else None (all zeros)."""
        return self._prompt_embedding("") if self.setup.text_empty == "encoded" else None

    @torch.no_grad()
    def generate_segment(self, prompt: str, frames: int | None = None) -> np.ndarray:
        """Sample the next ``frames`` latent frames after the history; they join it. Returns the decoded uint8
        frames ``(k, H, W, 3)``."""
        s = self.settings
        n = frames or s.segment_frames
        started = time.perf_counter()
        text = self._prompt_embedding(prompt)
        for dit in (self.model.backbone, self.low_noise):  # a guidance-distilled DiT's embedded guidance (HunyuanVideo)
            if dit is not None:
                dit.use_guidance(s.distilled_guidance)
        shape = (1, *self.latents.shape[1:2], n, *self.latents.shape[3:])
        noise = torch.randn(shape, generator=self.generator).to(self.device)
        positions = torch.arange(self.history_frames, self.history_frames + n, device=self.device)[None]
        if self.low_noise is not None and not self.low_noise_offloaded:
            self.low_noise.to(self.device)
        with self._autocast():
            context = self.context()
            cache = self.history_cache(context)
            x = sample_segment(
                self.model,
                noise,
                text,
                context,
                positions,
                s,
                self._empty_prompt(),
                self.recipe,
                self.first_frame if self.history_frames == 0 else None,
                self.low_noise,
                cache,
            ).float()
        segment = to_uint8(self.decoder.push(x)[0].cpu())
        record = SegmentRecord(
            index=len(self.records),
            start_frame=self.history_frames,
            frames=n,
            prompt=prompt,
            history_frames=self.history_frames,
            context_tokens=context.visible_tokens if context is not None else 0,
            latency_s=0.0,
            pixel_frames=len(segment),
        )
        # The sampled latents are the history; the LR branch sees the frames as a video file would hold them.
        self._append(x.cpu(), to_pixels(segment)[None])
        record.latency_s = round(time.perf_counter() - started, 4)
        self.records.append(record)
        return segment

    def seconds_per_segment(self) -> float:
        return self.settings.segment_frames * self.frames_per_latent / self.setup.fps

    def storyboard_segments(self, story, origin: int | None = None) -> int:
        """Segments still to generate for ``story``, whose shot times count from latent frame ``origin`` (default:
        the end of the starting history)."""
        origin = self.origin if origin is None else origin
        total = math.ceil(story.duration / self.seconds_per_segment() - 1e-9)
        return total - (self.history_frames - origin) // self.settings.segment_frames

    def follow_storyboard(self, story, origin: int | None = None):
        """Generate the storyboard's remaining segments, each with the prompt nearest to it; yields each record and
        its frames."""
        origin = self.origin if origin is None else origin
        length = self.seconds_per_segment()
        for _ in range(self.storyboard_segments(story, origin)):
            start = (self.history_frames - origin) // self.settings.segment_frames * length
            frames = self.generate_segment(story.prompt_for(start, start + length))
            yield self.records[-1], frames

    def extend(self, prompt: str, seconds: float) -> np.ndarray:
        """Generate ``seconds`` of video (whole segments) with one prompt; returns the new frames."""
        segments = max(1, math.ceil(seconds / self.seconds_per_segment() - 1e-9))
        return np.concatenate([self.generate_segment(prompt) for _ in range(segments)])

    # -- pause and resume -----------------------------------------------------------------------------------
    def _streams(self) -> dict[str, object]:
        streams = {"encoder": self.encoder, "decoder": self.decoder}
        streams.update({f"lowres{i}": s for i, s in enumerate(self.lowres) if s is not None})
        streams.update({f"cache{i}": c for i, c in enumerate(self.caches)})
        return streams

    def save(self, path: str | Path) -> None:
        """Everything needed to continue bit for bit: latents, streams, caches, generator, settings, log (not the
        model, not the decoded frames: those are in the video file)."""
        tensors = {"latents": self.latents, "generator": self.generator.get_state()}
        if self.first_frame is not None:
            tensors["first_frame"] = self.first_frame.cpu()
        for name, stream in self._streams().items():
            tensors.update({f"{name}.{k}": v.cpu() for k, v in stream.state_dict().items()})
        for i, pending in enumerate(self._lowres_pending):
            if pending is not None:
                tensors[f"lowres_pending{i}"] = pending.cpu()
        meta = {
            "model": self.identity(),
            "settings": asdict(self.settings),
            "records": [asdict(r) for r in self.records],
            "pixel_frames": self.pixel_frames,
            "origin": self.origin,
            "version": 2,
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"session": json.dumps(meta)})
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed write (full disk) must not keep the space it took
            raise

    def identity(self) -> dict:
        """What a saved session's caches and latents depend on: a session resumes only under the same."""
        setup = self.setup
        return {
            "preset": setup.preset,
            "method": setup.history_method if len(self.model.producers) else "no_history",
            "rates": list(setup.history_rates) if len(self.model.producers) else [],
            "sliding_window": self.model.sliding_window,
            "cross_attention": len(self.model.enhancers) > 0,
            # the model's own (a --set after loading does not change the model it was built as)
            "context_attention": "block_causal" if self.model.backbone.block_causal else "full",
            # history.tiers, in latent frames (what the layout and the cache depend on); None without tiers
            "tiers": self.model.tiers.describe() if self.model.tiers is not None else None,
            # history.tier_layout and the stacked layout's window (latent frames): what the cached keys depend on
            "tier_layout": self.model.tiers.layout if self.model.tiers is not None else None,
            "context_window": self.model.tiers.window if self.model.tiers is not None else None,
            "latents": list(self.latents.shape[1:2]) + list(self.latents.shape[3:]),
            "temporal_factor": self.codec.temporal_factor,
        }

    @staticmethod
    def read_settings(path: str | Path) -> SamplingSettings:
        """The sampling settings a session file was made with."""
        return SamplingSettings(**session_meta(Path(path))["settings"])

    @classmethod
    def load(
        cls,
        path: str | Path,
        model,
        setup: SessionSetup,
        codec,
        encode_text,
        device=None,
        settings: SamplingSettings | None = None,
        low_noise: nn.Module | None = None,
    ) -> GenerationSession:
        """Continue a saved session. ``settings``: other sampling settings for what comes next (the segment length
        must stay: positions and blocks depend on it); default: the saved ones. ``low_noise``: as for a new session
        (a saved session records the boundary in its settings, not which checkpoint took the low-noise steps)."""
        path = Path(path)
        meta = session_meta(path)
        if meta.get("version") != 2:
            raise ValueError(f"{path}: a session file of an older tinyhistory (before latent-time sessions)")
        saved = SamplingSettings(**meta["settings"])
        settings = settings or saved
        if settings.segment_frames != saved.segment_frames:
            raise ValueError(
                f"{path} was made with {saved.segment_frames}-frame segments, which a resumed session keeps"
            )
        session = cls(model, setup, codec, encode_text, settings, device, low_noise)
        wanted, made = session.identity(), meta.get("model", {})
        made.setdefault("context_attention", "full")  # sessions saved before the setting existed
        made.setdefault("tiers", None)
        made.setdefault("tier_layout", "recompute" if made["tiers"] is not None else None)
        made.setdefault("context_window", 0 if made["tiers"] is not None else None)
        differ = [k for k in wanted if made.get(k) != wanted[k]]
        if differ:
            details = "; ".join(f"{k}: session {made.get(k)!r}, this model {wanted[k]!r}" for k in differ)
            raise ValueError(f"{path} was made by another model or settings ({details}); resume it with its checkpoint")
        tensors = read_tensors(path, "session file")
        if "latents" not in tensors:
            raise ValueError(f"{path}: a session file without latents (damaged, or not a tinyhistory session)")
        session.latents = tensors["latents"]
        if "first_frame" in tensors:
            session.first_frame = tensors["first_frame"].to(session.device)
        if settings.seed == saved.seed:
            session.generator.set_state(tensors["generator"])  # continue the saved noise exactly
        # (a new seed starts the noise of the segments to come afresh: ``GenerationSession`` seeded it)
        for name, stream in session._streams().items():
            prefix = f"{name}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if name.startswith("cache"):
                state = {k: v.to(session.device) for k, v in state.items()}
            stream.load_state_dict(state)
        session._lowres_pending = [tensors.get(f"lowres_pending{i}") for i in range(len(session.lowres))]
        session.records = [SegmentRecord(**r) for r in meta["records"]]
        session.pixel_frames = meta["pixel_frames"]
        session.origin = meta["origin"]
        return session


def session_meta(path: Path) -> dict:
    """A saved session's metadata (settings, log, identity), with an error that names a file that is not one."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"session file not found: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("session", "null") or "null")
    except Exception as exc:  # safetensors raises its own error types for a file that is not one of its own
        raise ValueError(f"{path}: not a tinyhistory session file ({exc})") from None
    if meta is None:
        raise ValueError(f"{path}: not a tinyhistory session file")
    return meta


@torch.no_grad()
def sample_segment(
    model,
    noise: torch.Tensor,
    text: TextCondition,
    context: ContextTokens | None,
    positions: torch.Tensor,
    settings: SamplingSettings,
    empty: TextCondition | None = None,
    recipe: SamplingRecipe | None = None,
    first_frame: torch.Tensor | None = None,
    low_noise=None,
    context_cache=None,
) -> torch.Tensor:
    """Integrate the flow from ``noise`` ``(B, C, n, h, w)`` to clean latents with a diffusers scheduler
    (:func:`segment_schedule`: the family pipeline's, from ``recipe``; default: no model folder's).

    Classifier-free guidance: ``v = v(∅) + g·(v(text) − v(∅))`` with ∅ the empty prompt ``empty`` (default: all-zero
    states, what the tiny preset trained with) and the same history;
    ``guidance = 1`` runs the conditional branch only. ``positions`` ``(B, n)``: temporal positions of the frames.
    The DiT sees each step's scheduler timestep (``t = timestep / 1000``), as the diffusers pipelines pass it.

    ``first_frame`` ``(B, C, 1, h, w)``: Wan 2.2 TI2V's image conditioning, as ``WanImageToVideoPipeline`` does it
    with ``expand_timesteps``: latent frame 0 is the clean image latent at time 0 in every step (the scheduler's
    own frame 0 is ignored) and is the image latent in the result.

    ``low_noise``: the second expert (Wan 2.2 A14B's, or another checkpoint's DiT) takes the steps whose timestep is
    below ``boundary · 1000`` (:func:`expert_boundary`: ``settings.boundary``, else ``recipe.boundary``), without
    history (see :func:`load_second_expert`), as ``WanPipeline`` does.

    ``context_cache``: the history's keys/values already built (a session's block-causal cache, grown segment by
    segment) instead of building them here from ``context``.
    """
    recipe = recipe or SamplingRecipe()
    boundary = expert_boundary(settings, recipe, low_noise)
    grid = [size // patch for size, patch in zip(noise.shape[2:], model.backbone.patch_size, strict=True)]
    schedule = segment_schedule(settings, recipe, model.backbone, math.prod(grid), noise.device)
    b = noise.shape[0]
    empty = (empty if empty is not None else text.zeros_like()).expand(len(text)).to(noise.device)
    guided = settings.guidance != 1.0
    cache = context_cache
    if cache is None and context is not None and model.backbone.kv_cache:
        if model.backbone.block_causal:
            # The context reads no prompt: one cache (batch 1) serves both branches.
            cache = model.build_context_cache(context, None)
        else:
            # The history's keys and values once per segment (per text branch), not at every step.
            both = TextCondition.cat([text, empty]) if guided else text
            cache = model.build_context_cache(_repeat(context) if guided else context, both)
    if cache is not None:
        context = None
    x = noise
    for timestep in schedule.timesteps:
        t = schedule.model_time(timestep.to(noise.device)).expand(b)
        model_x = x
        if first_frame is not None:
            model_x = torch.cat([first_frame.to(x.dtype), x[:, :, 1:]], dim=2)
            t = t[:, None].repeat(1, x.shape[2])  # (B, n): the image frame at time 0
            t[:, 0] = 0.0
        low = boundary is not None and float(timestep) < boundary * TIMESTEP_SCALE
        if not guided:
            if low:
                velocity = low_noise(model_x, t, text, None, positions)
            else:
                velocity = model(model_x, t, text, context, positions, context_cache=cache)
        else:
            args = (torch.cat([model_x, model_x]), torch.cat([t, t]), TextCondition.cat([text, empty]))
            if low:
                both = low_noise(*args, None, positions.repeat(2, 1))
            else:
                both = model(*args, _repeat(context), positions.repeat(2, 1), context_cache=cache)
            cond, uncond = both.chunk(2)
            velocity = uncond + settings.guidance * (cond - uncond)
        x = schedule.step(velocity, timestep, x)
    if first_frame is not None:
        x = torch.cat([first_frame.to(x.dtype), x[:, :, 1:]], dim=2)
    return x


def _repeat(context: ContextTokens | None) -> ContextTokens | None:
    """The same history for the conditional and unconditional halves of a guided batch."""
    return None if context is None else context.repeat(2)
