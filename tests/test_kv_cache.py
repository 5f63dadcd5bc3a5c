"""The history KV cache: context attends only to context, so its keys and values are computed once per segment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tinyhistory.backbones import ContextTokens
from tinyhistory.generate.session import GenerationSession, SamplingSettings, sample_segment
from tinyhistory.system import HistoryDiT, build_codec
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.trainer import train

SMALL_AR = ['train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.lora_rank=0"]


@pytest.fixture
def models(small_config):
    """The same weights with full attention and with the cache's attention pattern (+ sliding window, enhancers)."""
    # two blocks: with one, what the context attends to cannot reach the targets
    extra = (*SMALL_AR, "history.sliding_window=2", "history.cross_attention=true", "backbone.num_layers=2")
    torch.manual_seed(0)
    full = HistoryDiT.from_config(small_config(*extra)).eval()
    cached = HistoryDiT.from_config(small_config(*extra, "history.kv_cache=true")).eval()
    cached.load_state_dict(full.state_dict())
    with torch.no_grad():  # zero-initialised layers would hide the encoder and the enhancers
        for p in [*full.producers.parameters(), *full.enhancers.parameters()]:
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape) * 0.05)
    cached.load_state_dict(full.state_dict())
    return full, cached


def _inputs(model):
    g = torch.Generator().manual_seed(0)
    hr, lr = torch.randn(1, 48, 8, 16, 16, generator=g), [torch.randn(1, 48, 4, 4, 4, generator=g)]
    with torch.no_grad():
        context = model.history_context(hr, lr)
    x = torch.randn(1, 48, 2, 16, 16, generator=g)
    text = TextCondition(torch.randn(1, 64, 384, generator=g))
    return x, torch.tensor([0.6]), text, context, torch.tensor([[8, 9]])


def test_without_context_the_cache_pattern_is_the_stock_forward(models):
    full, cached = models
    x, t, text, _, _ = _inputs(full)
    with torch.no_grad():
        torch.testing.assert_close(cached(x, t, text, None), full(x, t, text, None), atol=1e-6, rtol=1e-5)


def test_cached_steps_equal_the_masked_forward_and_differ_from_full_attention(models):
    full, cached = models
    x, t, text, context, positions = _inputs(full)
    assert context.features is not None and context.num_tokens > 0
    with torch.no_grad():
        masked = cached(x, t, text, context, positions)
        cache = cached.build_context_cache(context, text)
        assert len(cache.keys) == len(cached.backbone.blocks) and cache.num_tokens == context.num_tokens
        for step_t in (0.9, 0.6, 0.2):  # the same cache serves every denoising step
            step = torch.tensor([step_t])
            torch.testing.assert_close(
                cached(x, step, text, None, positions, context_cache=cache),
                cached(x, step, text, context, positions),
                atol=1e-5,
                rtol=1e-5,
            )
        unmasked = full(x, t, text, context, positions)
    assert (masked - unmasked).abs().max() > 1e-4  # the pattern changes what the model computes


def test_a_cached_step_costs_only_the_targets(models):
    full, cached = models
    x, t, text, context, positions = _inputs(full)
    with torch.no_grad():
        cache = cached.build_context_cache(context, text)
        counts = []
        for kwargs in ({"context": context}, {"context": None, "context_cache": cache}):
            with FlopCounterMode(display=False) as counter:
                cached(x, t, text, frame_positions=positions, **kwargs)
            counts.append(counter.get_total_flops())
        with FlopCounterMode(display=False) as counter:
            cached(x, t, text, None, positions)
        no_history = counter.get_total_flops()
    uncached, per_step = counts
    # per step the history now costs only the targets' attention to its keys (+ enhancers), not its own tokens
    assert per_step < uncached and (per_step - no_history) < 0.5 * (uncached - no_history)


def test_generation_with_the_cache_equals_the_uncached_masked_sampling(models):
    _, cached = models
    x, _, text, context, positions = _inputs(cached)
    settings = SamplingSettings(sampler="unipc", steps=3, guidance=2.0)
    with torch.no_grad():
        with_cache = sample_segment(cached, x, text, context, positions, settings)
        cached.backbone.kv_cache = False  # same attention pattern, context recomputed at every step
        try:
            without = sample_segment(cached, x, text, context, positions, settings)
        finally:
            cached.backbone.kv_cache = True
    torch.testing.assert_close(with_cache, without, atol=1e-4, rtol=1e-4)


def test_a_session_and_training_run_with_the_cache(small_config, tmp_path):
    cfg = small_config(*SMALL_AR, "history.kv_cache=true", "train.steps=2")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["heldout_loss"] > 0
    model = HistoryDiT.from_config(cfg).eval()

    def text(prompts):
        return TextCondition(torch.stack([torch.full((64, 384), 0.01 * len(p)) for p in prompts]))

    session = GenerationSession(model, cfg, build_codec(cfg), text, SamplingSettings(steps=2, segment_frames=2))
    session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    frames = session.extend("a", seconds=0.5)
    assert frames.shape == (4, 64, 64, 3) and session.records[-1].context_tokens > 0
    assert isinstance(session.context(), ContextTokens)


def test_a_model_without_the_cache_built_on_a_cached_backbone_attends_fully_again(models, small_config):
    full, cached = models
    x, t, text, context, positions = _inputs(full)
    extra = (*SMALL_AR, "history.sliding_window=2", "history.cross_attention=true", "backbone.num_layers=2")
    again = HistoryDiT.from_config(small_config(*extra), backbone=cached.backbone)
    again.producers, again.enhancers = cached.producers, cached.enhancers
    assert not again.backbone.kv_cache
    with torch.no_grad():
        torch.testing.assert_close(again(x, t, text, context, positions), full(x, t, text, context, positions))
