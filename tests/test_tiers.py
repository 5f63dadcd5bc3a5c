"""Tiered rates for long histories (``history.tiers``, issue 24): the newest seconds fine, older history coarser, the
same layout in training, in a fresh build and in a session's block-causal cache grown across chunk moves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cache_builds import record_cache_builds
from history_inputs import randomise_zero_layers
from trained_runs import KV, SMALL_AR, generate_and_resume, two_tier_training

from tinyhistory.assemble import HistoryDiT, build_codec
from tinyhistory.codecs.pixel import PixelUnshuffleCodec
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.history.base import lowres_latents_per_rate
from tinyhistory.history.tiers import TierPlan
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.checkpoint import load_model
from tinyhistory.train.trainer import train

# Three tiers at the tiny preset's 8 fps (latent frames = frames): the newest 4 frames at 4×4×2, the 4 before at
# 4×4×4, the rest at 8×8×4; frames leave a tier 8 at a time (two temporal blocks of 4).
TIERS = ('history.rates=["4x4x2", "4x4x4", "8x8x4"]', "history.tiers=[0.5, 0.5]", "history.tier_move=1.0")
OTHER_TIERS = ('history.rates=["4x4x2", "4x4x4", "8x8x4"]', "history.tiers=[0.5, 1.0]", "history.tier_move=1.0")


def _text(prompts: list[str]) -> TextCondition:
    """A stand-in text encoder: one constant condition per prompt, distinct by length."""
    return TextCondition(torch.stack([torch.full((64, 384), 0.01 * len(p)) for p in prompts]))


def _model(small_config, *extra: str) -> tuple[HistoryDiT, object]:
    cfg = small_config(*SMALL_AR, "backbone.num_layers=2", *extra)
    torch.manual_seed(0)
    model = HistoryDiT.from_config(cfg).eval()
    randomise_zero_layers(model)
    return model, cfg


def _session(model, cfg) -> GenerationSession:
    settings = SamplingSettings(steps=2, segment_frames=2, guidance=2.0)
    session = GenerationSession(model, session_setup(cfg), build_codec(cfg.codec), _text, settings)
    session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    return session


# -- the setting and the layout --------------------------------------------------------------------------------------


def test_the_setting_is_validated_by_name(small_config):
    with pytest.raises(ValueError, match=r"history.tiers = \[20.0\] must give the seconds of every rate"):
        small_config("history.tiers=[20]")  # one rate: nothing to tier
    with pytest.raises(ValueError, match="each older tier must be coarser"):
        small_config('history.rates=["8x8x4", "4x4x2"]', "history.tiers=[1]")
    with pytest.raises(ValueError, match="history.tiers must be positive numbers of seconds"):
        small_config('history.rates=["4x4x2", "8x8x4"]', "history.tiers=[0]")
    with pytest.raises(ValueError, match="history.tier_move must be a positive number of seconds"):
        small_config('history.rates=["4x4x2", "8x8x4"]', "history.tiers=[1]", "history.tier_move=0")
    with pytest.raises(ValueError, match="method 'no_history' has none"):
        small_config('history.method="no_history"', 'history.rates=["4x4x2", "8x8x4"]', "history.tiers=[1]")
    cfg = small_config(*TIERS)
    assert cfg.history.tiers == [0.5, 0.5] and small_config().history.tiers == []


def test_the_layout_moves_whole_chunks_and_stops_growing(small_config):
    model, _ = _model(small_config, *TIERS)
    plan = model.tiers
    assert (plan.frames, plan.move, plan.block) == ((4, 4), 8, 4)
    assert plan.spans(4) == [(0, 4), (0, 0), (0, 0)]
    assert plan.spans(12) == [(8, 12), (0, 8), (0, 0)]  # 4×4×2 keeps between 4 and 4 + 8 frames
    assert plan.spans(16) == [(8, 16), (0, 8), (0, 0)]
    assert plan.spans(20) == [(16, 20), (8, 16), (0, 8)]  # frames 8–15 and 0–7 moved at once
    assert plan.unchanged(16, 20) == 0 and plan.unchanged(20, 24) == 20
    assert plan.spans(36) == [(32, 36), (24, 32), (0, 24)] and plan.unchanged(36, 40) == 36
    assert plan.unchanged(40, 44) == 24  # both chunks that moved are recomputed, from the older one on
    for frames in range(0, 200, 4):  # every frame in exactly one tier, newest finest
        spans = plan.spans(frames)
        assert spans[-1][0] == 0 and spans[0][1] == frames
        assert all(older[1] == newer[0] for newer, older in zip(spans, spans[1:], strict=False))
    # tokens per new block at the coarsest tier only: 1 (8×8×4 on an 8×8 token grid) instead of 8 at 4×4×2
    hr, lrs = _history(model, 160)
    with torch.no_grad():
        lengths = {f: model.encode_history(hr[:, :, :f], [x[:, :, : f // r.t] for x, r in lrs]) for f in (80, 160)}
    assert lengths[160].num_tokens - lengths[80].num_tokens == 80 // 4


def _history(model: HistoryDiT, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.randn(1, 48, frames, 16, 16, generator=g)
    pixels = torch.rand(1, 3, frames, 64, 64, generator=g) * 2 - 1
    codec = PixelUnshuffleCodec(4)
    rates = [p.rate for p in model.producers]
    lrs = lowres_latents_per_rate(pixels, rates, [p.uses_lr for p in model.producers], codec)
    return hr, list(zip(lrs, rates, strict=True))


def test_each_tier_is_its_encoder_on_the_whole_history_cut_to_its_span(small_config):
    """The lookback of the causal HR branch makes a span's tokens those of a whole-history encode."""
    model, _ = _model(small_config, *TIERS)
    hr, lrs = _history(model, 28)
    with torch.no_grad():
        tiered = model.encode_history(hr, [x for x, _ in lrs])
        wholes = [p(hr, x, model.backbone.patch_embed) for p, (x, _) in zip(model.producers, lrs, strict=True)]
    parts = []
    for whole, rate, (start, end) in reversed(list(zip(wholes, model.rates, model.tiers.spans(28), strict=True))):
        per_block = whole.num_tokens // (28 // rate.t)
        parts.append(whole.tokens[:, start // rate.t * per_block : end // rate.t * per_block])
    torch.testing.assert_close(tiered.tokens, torch.cat(parts, 1), atol=1e-6, rtol=1e-6)
    assert tiered.blocks[0].tolist() == sorted(tiered.blocks[0].tolist())  # time order, oldest tier first


# -- the session's incremental cache ---------------------------------------------------------------------------------


def _check(session: GenerationSession, prompt: str) -> None:
    """The grown cache equals a fresh build of the same layout (1e-5) and gives the uncached masked forward."""
    model = session.model
    context = session.context()
    cache = session.history_cache(context)
    with torch.no_grad():
        fresh = model.build_context_cache(context, None)
        g = torch.Generator().manual_seed(len(session.records))
        x = torch.randn(2, 48, 2, 16, 16, generator=g)
        n = session.history_frames
        positions = torch.tensor([[n, n + 1]] * 2)
        text = TextCondition.cat([_text([prompt]), _text([""])])
        t = torch.tensor([0.7, 0.7])
        cached = model(x, t, text, None, positions, context_cache=cache)
        masked = model(x, t, text, context.repeat(2), positions)
    assert cache.num_tokens == context.num_tokens
    for grown, whole in zip(cache.keys + cache.values, fresh.keys + fresh.values, strict=True):
        torch.testing.assert_close(grown, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached, masked, atol=1e-5, rtol=1e-5)


def test_the_session_context_is_a_fresh_encode_of_its_history(small_config):
    """Every rate encodes every block as the history grows; the session shows each tier's span of it, which equals
    the tiered encode of the session's latents at once (the layout training sees; HR branch only, so that no LR
    stream needs replaying)."""
    model, cfg = _model(small_config, *TIERS, *KV, 'history.method="without_lr"')
    session = _session(model, cfg)
    for _ in range(10):
        session.generate_segment("a")
    frames = session.caches[0].frames_encoded
    assert frames == 24 and [end - start for start, end in model.tiers.spans(frames)] == [8, 8, 8]
    with torch.no_grad():
        fresh = model.encode_history(session.latents[:, :, :frames], [None] * 3)
    grown = session.context()
    assert grown.num_tokens == 8 // 2 * 4 + 8 // 4 * 4 + 8 // 4 * 1  # 2×2, 2×2 and 1×1 tokens per block
    torch.testing.assert_close(grown.tokens, fresh.tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grown.positions, fresh.positions)
    assert torch.equal(grown.blocks, fresh.blocks)


def test_the_grown_cache_equals_a_fresh_build_across_moves_prompts_and_a_resume(small_config, tmp_path):
    model, cfg = _model(small_config, *TIERS, *KV)
    session = _session(model, cfg)
    sizes = record_cache_builds(model)
    prompts = ["a rabbit"] * 5 + ["a bird flies"] * 5 + ["the end"] * 4
    built: list[list[int]] = []
    _check(session, prompts[0])
    for prompt in prompts[:8]:
        sizes.clear()
        session.generate_segment(prompt)
        session.history_cache()  # the cache for the next segment: the work a move or an append does
        built.append(list(sizes))
        _check(session, prompt)
    # per segment one whole block (4 frames) completes every other segment: an append of its 4×4×2 tokens (2 × 4),
    # or at a move (every 8 frames) the moved chunk's coarser tokens and every newer block
    assert [8] in built and any(len(b) == 1 and b[0] > 8 for b in built), built
    assert session.caches[0].frames_encoded >= 20  # several moves crossed (at 12 → 16 → 20 …)
    session.save(tmp_path / "s.session")
    resumed = GenerationSession.load(tmp_path / "s.session", model, session_setup(cfg), build_codec(cfg.codec), _text)
    for prompt in prompts[8:]:
        _check(resumed, prompt)
        frames = session.generate_segment(prompt)
        again = resumed.generate_segment(prompt)
        assert np.abs(frames.astype(int) - again.astype(int)).max() <= 1
        _check(session, prompt)
    assert session.caches[0].frames_encoded == resumed.caches[0].frames_encoded == 32


def test_a_session_resumes_only_under_its_own_tiers(small_config, tmp_path):
    model, cfg = _model(small_config, *TIERS, *KV)
    session = _session(model, cfg)
    session.generate_segment("a")
    session.save(tmp_path / "s.session")
    for extra in (OTHER_TIERS, ('history.rates=["4x4x2", "4x4x4", "8x8x4"]',)):
        other, other_cfg = _model(small_config, *extra, *KV)
        with pytest.raises(ValueError, match="tiers: session .*this model"):
            GenerationSession.load(
                tmp_path / "s.session", other, session_setup(other_cfg), build_codec(other_cfg.codec), _text
            )
    GenerationSession.load(tmp_path / "s.session", model, session_setup(cfg), build_codec(cfg.codec), _text)


def test_tiers_without_the_block_causal_cache(small_config):
    """Tiers only lay out the tokens: the full-attention KV cache and the uncached forward take them as well."""
    model, cfg = _model(small_config, *TIERS)
    session = _session(model, cfg)
    for _ in range(6):
        session.generate_segment("a")
    assert session.context().num_tokens == 8 // 2 * 4 + 8 // 4 * 4  # 16 frames: 8 at 4×4×2, 8 at 4×4×4


# -- training ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["frame-query", "ar"])
def test_training_with_tiers_and_its_checkpoint(small_config, tmp_path, stage):
    """Stage I (8-frame windows: both tiers in every sample) and stage II (16-frame windows split at 0–12 frames);
    the checkpoint reloads with its tiers."""
    cfg = two_tier_training(small_config, stage, 0.5)
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["heldout_loss"] > 0
    model, loaded = load_model(tmp_path / "run" / "final")
    assert loaded.history.tiers == [0.5] and model.tiers == TierPlan.from_config(cfg.history, cfg.base, cfg.data.fps)
    assert len(model.producers) == 2
    if stage == "ar":  # ``generate`` and ``generate --resume`` on the checkpoint, past the first move
        meta = generate_and_resume(tmp_path)
        assert meta["model"]["tiers"] == {"rates": ["4x4x2", "4x4x4"], "frames": [4], "move": 4}


def test_the_cost_command_takes_tier_sets(capsys):
    from tinyhistory.cli import main

    args = ["cost", "--preset", "tiny", "--history", "8", "--method", "no_history", "--method", "proposed"]
    assert main([*args, "--rate", "4x4x2", "--tiers", "4x4x2:2+4x4x4", "--tier-move", "1", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["tiers"] is not None]
    assert {(tuple(r["rates"]), tuple(r["tiers"]), r["tier_move"]) for r in rows} == {(("4x4x2", "4x4x4"), (2.0,), 1.0)}
    assert main([*args, "--rate", "4x4x2", "--tiers", "none", "--json"]) == 0
    assert all(r["tiers"] is None for r in json.loads(capsys.readouterr().out))
    assert main([*args, "--tiers", "4x4x2"]) == 2
    assert "need at least two rates" in capsys.readouterr().err
    assert main([*args, "--tiers", "4x4x2:2+4x4x4:3"]) == 2
    assert "the last tier of '4x4x2:2+4x4x4:3' holds the rest of the history" in capsys.readouterr().err


# -- the cost model ------------------------------------------------------------------------------------------------


def test_tier_rows_of_the_cost_model():
    """Issue 24's tier goals, counted on TI2V-5B (480×832, 1-s segments, 30 steps × 2 CFG branches), the newest 20 s
    at 4×4×2, older at 8×8×4, moves of 10 s: at 600 s the context is 3,690 tokens instead of 32,400 and the
    block-causal step +13.7 % (goal ≤ 15 %); the cache work per segment at 600 s, moves included, is ×3.4 that at
    10 s (goal ±10 %: missed; a move recomputes the 20-s fine tier, which attended to the moved chunk)."""
    from tinyhistory.sizing.cost import CostSettings, cost_rows

    settings = CostSettings(
        preset="wan2.2-ti2v-5b",
        history_seconds=(10.0, 600.0),
        methods=("no_history", "proposed"),
        proposed_rates=(("4x4x2",),),
        kv_cache=False,
        block_causal=True,
    )
    rows = cost_rows(settings)
    tiered = {(r.history_seconds, r.context_attention): r for r in rows if r.tiers is not None}
    single = {r.history_seconds: r for r in rows if r.tiers is None and r.context_attention == "block_causal"}
    assert set(tiered) == {(s, a) for s in (10.0, 600.0) for a in ("full", "block_causal")}
    at_600 = tiered[600.0, "block_causal"]
    assert at_600.rates == ["4x4x2", "8x8x4"] and at_600.tiers == [20.0] and at_600.tier_move == 10.0
    # 20 s at 4×4×2 (1,080 tokens) and 580 s at 8×8×4 (3 tokens per 4 latent frames: 2,610)
    assert at_600.context_tokens == 1080 + 2610 and single[600.0].context_tokens == 32_400
    assert at_600.history_overhead <= 0.15 < single[600.0].history_overhead
    assert at_600.history_overhead == pytest.approx(0.137, abs=0.005)
    # before the first move the tiers cost what one rate costs; the moves are counted (amortised per segment)
    at_10 = tiered[10.0, "block_causal"]
    assert at_10.context_tokens == single[10.0].context_tokens and at_10.cache_move_tflops == 0
    assert 0 < at_600.cache_move_tflops < at_600.cache_build_tflops
    ratio = at_600.cache_build_tflops / at_10.cache_build_tflops
    assert ratio == pytest.approx(3.35, abs=0.05)
    without_moves = (at_600.cache_build_tflops - at_600.cache_move_tflops) / at_10.cache_build_tflops
    assert without_moves == pytest.approx(1.14, abs=0.02)


@pytest.mark.parametrize("stage", ["frame-query", "ar"])
def test_training_refuses_tiers_its_histories_never_reach(small_config, tmp_path, stage):
    """A tier the longest training history never reaches gets no gradient: refused before any step, naming the keys
    (stage I: 8-frame windows; stage II: 16-frame windows less the 2-frame segment; the fine tier holds 16)."""
    cfg = two_tier_training(small_config, stage, 2.0)
    with pytest.raises(ValueError, match=r"train.history_frames = .*the 4x4x4 tier never appears in training"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last").exists()
