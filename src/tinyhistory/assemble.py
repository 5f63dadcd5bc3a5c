"""Assemble a run's modules from its config: codec, DiT adapter and history producers.

``HistoryDiT`` is the trainable whole: the backbone adapter plus zero or more history producers (several rates mean
several encoders whose tokens are concatenated). The history producers call the backbone's own patch embedding for
the LR branch, so no weight lives twice.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from tinyhistory.backbones.base import (
    NEWEST_BLOCK,
    NO_PRODUCER,
    Backbone,
    ContextTokens,
    check_model_folder,
    grid_positions,
    temporal_blocks,
)
from tinyhistory.config import CodecConfig, HistoryConfig, RunConfig
from tinyhistory.geometry import temporal_block
from tinyhistory.history.enhancer import build_enhancers
from tinyhistory.history.phase import BlockPhase, PhaseReadout
from tinyhistory.history.stacked import stack_tiers
from tinyhistory.history.tiers import TierPlan, encode_tiers
from tinyhistory.paths import resolve_path
from tinyhistory.registry import BACKBONES, CODECS, HISTORY_METHODS
from tinyhistory.text.condition import TextCondition
from tinyhistory.variants import check_model_variant


def build_codec(codec: CodecConfig):
    """The codec ``codec.kind`` names (registered in ``registry.CODECS``), built from the ``[codec]`` table."""
    return CODECS.get(codec.kind).from_config(codec)


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def build_backbone(cfg: RunConfig) -> Backbone:
    """The run's DiT adapter: the user's pretrained DiT (``model.path``, frozen dtype ``model.dtype``), else a fresh
    one from the ``[backbone]`` table (the tiny preset)."""
    adapter = BACKBONES.get(cfg.backbone.family)
    if cfg.model.path:
        check_model_variant(cfg)  # the preset's variant (TI2V vs T2V, 2.1 vs 2.2), before gigabytes are read
        dtype = torch_dtype(cfg.model.dtype)
        return adapter.from_pretrained(resolve_path(cfg.model.path), cfg.model.transformer, dtype)
    if cfg.train.dit == "lora":
        raise ValueError(
            f"preset {cfg.preset!r} trains a LoRA on a frozen base model: give the model folder with --model DIR "
            '(or --set model.path="DIR"), a local diffusers folder with model_index.json and transformer/'
        )
    return adapter.from_config(cfg.backbone)


def check_model_parts(cfg: RunConfig) -> None:
    """Before caching: the user's folder (``model.path``) must be of the preset's family and variant
    (:mod:`tinyhistory.variants`) and hold the VAE and the text encoder that the config takes from it (a ValueError
    names the folder, the missing part or the differing key, and what was expected).
    Caching needs no DiT, so a folder that gives neither is not checked (the miniature caches its footage before
    its base model exists)."""
    if not cfg.model.path:
        return
    parts = []
    if cfg.codec.path == cfg.model.path:
        parts.append("vae")
    if cfg.text.path == cfg.model.path:
        parts += ["text_encoder", "tokenizer"]
    if parts:
        check_model_folder(resolve_path(cfg.model.path), BACKBONES.get(cfg.backbone.family), tuple(parts))
    check_model_variant(cfg)  # and the preset's variant: a cache at another model's fps and latents is no use


def build_producers(h: HistoryConfig, backbone: Backbone) -> nn.ModuleList:
    """One history producer per rate (``history.method``, registered in ``registry.HISTORY_METHODS``)."""
    factory = HISTORY_METHODS.get(h.method)
    producers = [factory(h.method, rate, h, backbone) for rate in h.rates]
    producers = [p for p in producers if p is not None]
    for index, producer in enumerate(producers):  # what its tokens say made them (ContextTokens.sources)
        producer.source = index
    if h.block_phase:
        # Each producer owns its rate's table, so it trains with the encoder and is saved in the encoder's file.
        for producer in producers:
            producer.block_phase = BlockPhase(producer.rate, backbone.hidden_dim)
    if h.phase_readout:  # the same: each rate's per-cell readout maps live in its producer
        for producer in producers:
            layers = len(backbone.blocks)
            producer.phase_readout = PhaseReadout(producer.rate, backbone.hidden_dim, layers, h.phase_readout)
    return nn.ModuleList(producers)


class HistoryDiT(nn.Module):
    """Backbone + history producers: ``velocity = model(x_t, t, text, context, frame_positions)``.

    ``history_context(hr, lr)`` builds what the DiT sees of a history: the producers' compressed tokens (with
    ``tiers``, each producer on its tier's span of the history, history/tiers.py), then (``sliding_window`` > 0) the
    last latent frames uncompressed at their true positions, and (``cross_attention``) the encoder features that the
    per-block enhancers attend to.
    """

    def __init__(
        self,
        backbone: Backbone,
        producers: nn.ModuleList,
        sliding_window: int = 0,
        enhancers: nn.ModuleList | None = None,
        tiers: TierPlan | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.producers = producers
        self.sliding_window = sliding_window
        self.enhancers = enhancers if enhancers is not None else nn.ModuleList()
        if tiers is not None and [p.rate for p in producers] != list(tiers.rates):
            raise ValueError(f"history.tiers' rates {list(tiers.rates)} are not the producers' {self.rates}")
        self.tiers = tiers

    @classmethod
    def from_config(cls, cfg: RunConfig, backbone: Backbone | None = None) -> HistoryDiT:
        """The run's whole model around ``backbone`` (default: :func:`build_backbone`)."""
        backbone = backbone if backbone is not None else build_backbone(cfg)
        producers = build_producers(cfg.history, backbone)
        enhancers = build_enhancers(cfg.history, backbone)
        tiers = TierPlan.from_config(cfg.history, cfg.base, cfg.data.fps)
        # first: a family without the stacked layout's window refuses by that name, not by block_causal's
        if tiers is not None and tiers.stacked:
            backbone.use_context_window(tiers.window_blocks)
        elif backbone.context_window:  # a stacked backbone reused by another layout
            backbone.use_context_window(0)
        block_causal = cfg.history.context_attention == "block_causal"
        if block_causal:  # first: a family without it refuses by this name, not by the KV cache's
            backbone.use_block_causal()
        if cfg.history.kv_cache:
            backbone.use_kv_cache()
        elif backbone.kv_cache:
            backbone.use_full_attention()
        if backbone.block_causal and not block_causal:  # a block-causal backbone reused by a "full" run
            backbone.use_block_causal(False)
        if cfg.history.value_rope:
            backbone.use_value_rope()
        backbone.use_phase_readout(bool(cfg.history.phase_readout))  # off as well: a backbone reused by another run
        return cls(backbone, producers, cfg.history.sliding_window, enhancers, tiers)

    @property
    def rates(self) -> list:
        return [p.rate for p in self.producers]

    def with_blocks(self, context: ContextTokens) -> ContextTokens:
        """The producers' tokens with their temporal history block (``ContextTokens.blocks``): blocks of
        ``temporal_block(rates)`` latent frames from frame 0, the steps in which the history is encoded and cached,
        so a block is complete when its tokens first exist."""
        frames = temporal_block(self.rates) / self.backbone.patch_size[0]  # in DiT frames
        blocks = temporal_blocks(context.positions, frames)
        return replace(context, blocks=blocks)

    def encode_history(
        self, hr_latents: torch.Tensor, lr_latents: list[torch.Tensor | None], frame_offset: int = 0
    ) -> ContextTokens | None:
        """History latents (and one LR latent per producer) → concatenated compressed tokens, or None. With tiers:
        each producer's tokens of its tier's span, oldest tier first (None before the first whole block)."""
        if len(self.producers) == 0:
            return None
        features = len(self.enhancers) > 0
        if self.tiers is not None and self.tiers.stacked:
            frames = hr_latents.shape[2] // self.tiers.block * self.tiers.block  # whole blocks only
            if frames == 0:
                return None
            parts = self.rate_tokens(hr_latents[:, :, :frames], lr_latents, frame_offset)
            return self.with_blocks(stack_tiers(self.tiers, parts, frames))
        if self.tiers is not None:
            embed = self.backbone.patch_embed
            tiered = encode_tiers(self.tiers, self.producers, hr_latents, lr_latents, embed, frame_offset, features)
            return self.with_blocks(tiered) if tiered is not None else None
        parts = [
            producer(hr_latents, lr, self.backbone.patch_embed, frame_offset, return_features=features)
            for producer, lr in zip(self.producers, lr_latents, strict=True)
        ]
        return self.with_blocks(ContextTokens.concat(parts))

    def rate_tokens(
        self, hr_latents: torch.Tensor, lr_latents: list[torch.Tensor | None], frame_offset: int = 0
    ) -> list[ContextTokens]:
        """Every producer's tokens of the whole of ``hr_latents`` ``(B, C, T, H, W)`` (LR latents cut to ``T``), in
        the order of the rates: the stacked tier layout's parts (history/stacked.py)."""
        frames, embed = hr_latents.shape[2], self.backbone.patch_embed
        return [
            producer(hr_latents, lr[:, :, : frames // producer.rate.t] if lr is not None else None, embed, frame_offset)
            for producer, lr in zip(self.producers, lr_latents, strict=True)
        ]

    def window_tokens(self, hr_latents: torch.Tensor, frame_offset: int = 0) -> ContextTokens | None:
        """The last ``sliding_window`` latent frames through the DiT's own patch embedding, at their true positions."""
        frames = hr_latents.shape[2]
        n = min(self.sliding_window, frames)
        if n == 0:
            return None
        grid = self.backbone.patch_embed(hr_latents[:, :, frames - n :])  # (B, D, n, H/ph, W/pw)
        b, _, t, h, w = grid.shape
        positions = frame_offset + frames - n + torch.arange(t, device=grid.device)
        blocks = torch.full((b, t * h * w), NEWEST_BLOCK, dtype=torch.int64, device=grid.device)
        tokens = grid.flatten(2).transpose(1, 2)  # (B, n·h·w, D)
        window = ContextTokens(tokens, grid_positions(positions.expand(b, t), h, w), None, blocks)
        return window.from_source(NO_PRODUCER)

    def history_context(
        self,
        hr_latents: torch.Tensor,
        lr_latents: list[torch.Tensor | None],
        frame_offset: int = 0,
        window: bool = True,
    ) -> ContextTokens | None:
        """Everything the DiT sees of a clean history ``(B, C, T, H, W)`` (T may be 0: no context); ``window=False``
        leaves the sliding window out (a training step of ``train.window_dropout``)."""
        if hr_latents.shape[2] == 0:
            return None
        parts = [
            self.encode_history(hr_latents, lr_latents, frame_offset),
            self.window_tokens(hr_latents, frame_offset) if window else None,
        ]
        parts = [p for p in parts if p is not None]
        return ContextTokens.concat(parts) if parts else None

    def _after_block(self, context):
        """The cross-attention enhancers as the backbone's per-block hook (None without them); ``context``: the
        context tokens or their cache, either carries the encoder features."""
        if not len(self.enhancers) or context is None or context.features is None:
            return None
        features = context.features

        def after_block(i: int, tokens: torch.Tensor) -> torch.Tensor:
            # a block-causal cache carries one batch of features for both CFG branches ([cond ; uncond])
            repeats = tokens.shape[0] // features.shape[0]
            batch = features.repeat(repeats, 1, 1) if repeats > 1 else features
            return self.enhancers[i](tokens, batch.to(tokens.dtype))

        return after_block

    def build_context_cache(self, context: ContextTokens, text: TextCondition | None, prior=None):
        """The history's keys and values in every block (``history.kv_cache``), once per segment and text; with
        ``history.context_attention = "block_causal"``, ``prior`` (the earlier blocks' cache) extended by
        ``context``'s blocks, for every text (``text`` unused). A context with hidden tokens (``visible``, the stacked
        tier layout built at once) gives the cache of what the targets read: every token is computed (the visible ones
        attend to hidden ones), the visible ones kept."""
        cache = self.backbone.build_context_cache(context, text, self._after_block(context), prior)
        if context.visible is None:
            return cache
        if prior is not None:
            raise ValueError("a context with hidden tokens is built at once (StackedTierCache grows it block by block)")
        return cache.take(context.visible[0])

    @property
    def block_phases(self) -> list[BlockPhase]:
        """The producers' block-phase tables (``history.block_phase``; empty without)."""
        return [p.block_phase for p in self.producers if p.block_phase is not None]

    def target_offsets(self, latents: torch.Tensor, frame_positions: torch.Tensor | None) -> torch.Tensor | None:
        """The block-phase offsets ``(B, N, D)`` of the target tokens of ``latents`` ``(B, C, T, H, W)``, summed over
        the producers that have a table (``history.block_phase``); None without any. The history starts at frame 0."""
        phases = self.block_phases
        if not phases:
            return None
        return sum(phase(*self._target_grid(latents, frame_positions)) for phase in phases)

    def target_readouts(self, latents: torch.Tensor, frame_positions: torch.Tensor | None) -> list | None:
        """``(PhaseReadout, cells (B, N), source)`` for each producer with a readout (``history.phase_readout``): the
        cells of the target tokens of ``latents`` ``(B, C, T, H, W)`` at its rate, and the producer's index, whose
        tokens alone it maps (``ContextTokens.sources``); None without any. The history starts at frame 0."""
        producers = [p for p in self.producers if p.phase_readout is not None]
        if not producers:
            return None
        grid = self._target_grid(latents, frame_positions)
        return [(p.phase_readout, p.phase_readout.cells(*grid), p.source) for p in producers]

    def _target_grid(
        self, latents: torch.Tensor, frame_positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, int, int]:
        """The DiT token grid of the targets ``latents`` ``(B, C, T, H, W)``: their temporal positions ``(B, T / pt)``
        (``frame_positions``; by default ``0 … T / pt − 1``) and the token rows and columns of one frame."""
        b, _, frames, height, width = latents.shape
        pt, ph, pw = self.backbone.patch_size
        if frame_positions is None:
            frame_positions = torch.arange(frames // pt, device=latents.device).expand(b, frames // pt)
        return frame_positions, height // ph, width // pw

    def forward(
        self,
        latents: torch.Tensor,
        t: torch.Tensor,
        text: TextCondition,
        context: ContextTokens | None,
        frame_positions: torch.Tensor | None = None,
        context_cache=None,
    ) -> torch.Tensor:
        """Velocity of the targets; ``context_cache`` (from :meth:`build_context_cache`) instead of ``context``."""
        readouts = self.target_readouts(latents, frame_positions)
        return self.backbone(
            latents,
            t,
            text,
            context,
            frame_positions,
            after_block=self._after_block(context if context_cache is None else context_cache),
            context_cache=context_cache,
            target_offsets=self.target_offsets(latents, frame_positions),
            **({"target_readouts": readouts} if readouts else {}),  # only Wan takes them (others refuse at build)
        )
