"""The stacked tier layout (``history.tier_layout = "stacked"``, issue 24): every rate of every block in the context,
each block attending to a bounded window of blocks, the targets shown each block at its tier's rate. Its cache grows
by the new blocks only, moves recompute nothing, and it equals the uncached masked forward of the same layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from history_inputs import randomise_zero_layers
from trained_runs import KV, SMALL_AR, generate_and_resume, two_tier_training

from tinyhistory.assemble import HistoryDiT, build_codec
from tinyhistory.codecs.pixel import PixelUnshuffleCodec
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.history.base import lowres_latents_per_rate
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.checkpoint import load_model
from tinyhistory.train.trainer import train

# At the tiny preset's 8 fps (latent frames = frames): the newest 4 frames at 4×4×2, the 4 before at 4×4×4, the rest
# at 8×8×4, moved 8 frames at a time; temporal blocks of 4 frames, 8 + 4 + 1 tokens per block for the three rates.
TIERS = ('history.rates=["4x4x2", "4x4x4", "8x8x4"]', "history.tiers=[0.5, 0.5]", "history.tier_move=1.0")
STACKED = ('history.tier_layout="stacked"', "history.context_window=1.0")  # a window of 8 frames: 2 blocks
PER_BLOCK = 8 + 4 + 1
WINDOW = 2


def _text(prompts: list[str]) -> TextCondition:
    """A stand-in text encoder: one constant condition per prompt, distinct by length."""
    return TextCondition(torch.stack([torch.full((64, 384), 0.01 * len(p)) for p in prompts]))


def _model(small_config, *extra: str, layers: int = 2) -> tuple[HistoryDiT, object]:
    """Two DiT blocks by default: with one, what the context attends to cannot reach the targets."""
    cfg = small_config(*SMALL_AR, f"backbone.num_layers={layers}", *extra)
    torch.manual_seed(0)
    model = HistoryDiT.from_config(cfg).eval()
    randomise_zero_layers(model)
    return model, cfg


def _history(model: HistoryDiT, frames: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.randn(1, 48, frames, 16, 16, generator=g)
    pixels = torch.rand(1, 3, frames, 64, 64, generator=g) * 2 - 1
    rates = [p.rate for p in model.producers]
    lrs = lowres_latents_per_rate(pixels, rates, [p.uses_lr for p in model.producers], PixelUnshuffleCodec(4))
    return hr, lrs


def _session(model, cfg) -> GenerationSession:
    settings = SamplingSettings(steps=2, segment_frames=2, guidance=2.0)
    session = GenerationSession(model, session_setup(cfg), build_codec(cfg.codec), _text, settings)
    session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    return session


# -- the setting and the layout --------------------------------------------------------------------------------------


def test_the_setting_is_validated_by_name(small_config):
    stacked = 'history.tier_layout="stacked"'
    with pytest.raises(ValueError, match="history.tier_layout = 'packed' is not allowed"):
        small_config(*TIERS, *KV, 'history.tier_layout="packed"')
    with pytest.raises(ValueError, match='tier_layout = "stacked" lays out tiers: it needs history.tiers'):
        small_config(*KV, stacked)
    with pytest.raises(ValueError, match='"stacked" needs history.context_attention = "block_causal"'):
        small_config(*TIERS, stacked)
    with pytest.raises(ValueError, match="history.context_window must be a positive number of seconds"):
        small_config(*TIERS, *KV, stacked, "history.context_window=0")
    with pytest.raises(ValueError, match='"stacked" takes no history.sliding_window'):
        small_config(*TIERS, *KV, stacked, "history.sliding_window=2")
    with pytest.raises(ValueError, match='"stacked" takes no history.cross_attention'):
        small_config(*TIERS, *KV, stacked, "history.cross_attention=true")
    assert small_config(*TIERS).history.tier_layout == "recompute"  # the default: today's layout


def test_hunyuanvideo_refuses_by_name(small_config):
    cfg = small_config('backbone.family="hunyuan"', *TIERS, *KV, *STACKED)
    with pytest.raises(ValueError, match='history.tier_layout = "stacked" is not supported for HunyuanVideo'):
        HistoryDiT.from_config(cfg)


def test_the_targets_see_the_recompute_layouts_tokens(small_config):
    """Every rate of every whole block is in the context; the visible ones are the recompute layout's context."""
    stacked, _ = _model(small_config, *TIERS, *KV, *STACKED)
    recompute, _ = _model(small_config, *TIERS, *KV)
    assert stacked.tiers.window_blocks == WINDOW and stacked.backbone.context_window == WINDOW
    assert recompute.backbone.context_window == 0
    hr, lrs = _history(stacked, 30)  # 7 whole blocks: the last 2 frames wait for the next block
    with torch.no_grad():
        context = stacked.encode_history(hr, lrs)
        tiered = recompute.encode_history(hr, lrs)
    assert context.num_tokens == 7 * PER_BLOCK and context.visible_tokens == tiered.num_tokens
    visible = context.visible[0]
    # (the recompute layout encodes each span with its lookback: equal to the whole-history encode within rounding)
    torch.testing.assert_close(context.tokens[:, visible], tiered.tokens, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(context.positions[:, visible], tiered.positions, rtol=0, atol=0)
    assert torch.equal(context.blocks[:, visible], tiered.blocks)


def test_context_tokens_attend_to_a_window_of_blocks(small_config):
    """In the masked forward, a token's keys after the first DiT block depend on the blocks of its window only."""
    model, _ = _model(small_config, *TIERS, *KV, *STACKED)
    hr, lrs = _history(model, 24)
    with torch.no_grad():
        context = model.encode_history(hr, lrs)
        every = type(context)(context.tokens, context.positions, None, context.blocks)  # all tokens' keys
        base = model.backbone.build_context_cache(every, None).keys[1][0]  # (K, heads, head_dim), second block
        blocks = context.blocks[0]
        for changed in range(6):
            moved = context.tokens.clone()
            moved[:, blocks == changed] += torch.randn(moved[:, blocks == changed].shape)  # (a constant: LayerNorm'd)
            keys = model.backbone.build_context_cache(
                type(context)(moved, context.positions, None, context.blocks), None
            ).keys[1][0]
            differs = (keys - base).abs().amax(dim=(1, 2)) > 1e-6  # (K,)
            for block in range(6):
                seen = 0 <= block - changed < WINDOW
                assert bool(differs[blocks == block].any()) == seen, (changed, block)


def test_the_targets_read_only_the_visible_tokens(small_config):
    """One DiT block: the targets read the context's first-block keys/values, which are each token's own; changing
    every hidden token changes nothing, changing one visible token does."""
    model, _ = _model(small_config, *TIERS, *KV, *STACKED, layers=1)
    hr, lrs = _history(model, 24)
    g = torch.Generator().manual_seed(3)
    x, text = torch.randn(1, 48, 2, 16, 16, generator=g), _text(["a"])
    t, positions = torch.tensor([0.6]), torch.tensor([[24, 25]])
    with torch.no_grad():
        context = model.encode_history(hr, lrs)
        hidden = ~context.visible[0]
        base = model(x, t, text, context, positions)

        def changed(where: torch.Tensor) -> torch.Tensor:
            tokens = context.tokens.clone()
            tokens[:, where] += torch.randn(tokens[:, where].shape, generator=g)
            moved = type(context)(tokens, context.positions, None, context.blocks, context.visible)
            return model(x, t, text, moved, positions)

        assert hidden.sum() > 0
        assert torch.equal(changed(hidden), base)
        one_visible = torch.zeros_like(hidden)
        one_visible[int(torch.nonzero(~hidden)[0])] = True
        assert (changed(one_visible) - base).abs().max() > 1e-4


# -- the session's incremental cache ---------------------------------------------------------------------------------


def _record_builds(model: HistoryDiT) -> list[tuple[int, int]]:
    """Wrap the backbone's cache build: each append's (prior tokens attended to, new tokens computed); not the checks'
    fresh builds of the whole stacked context (they carry its visibility)."""
    builds: list[tuple[int, int]] = []
    build = model.backbone.build_context_cache

    def recorded(context, text, after_block=None, prior=None):
        if context.visible is None:
            builds.append((prior.num_tokens if prior is not None else 0, context.num_tokens))
        return build(context, text, after_block, prior)

    model.backbone.build_context_cache = recorded
    return builds


def _check(session: GenerationSession, prompt: str) -> None:
    """The grown cache equals a fresh build of the whole stacked context (its visible tokens, 1e-5), and the cached
    forward equals the uncached masked forward (both CFG branches)."""
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
    assert cache.num_tokens == context.visible_tokens < context.num_tokens
    for grown, whole in zip(cache.keys + cache.values, fresh.keys + fresh.values, strict=True):
        torch.testing.assert_close(grown, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cached, masked, atol=1e-5, rtol=1e-5)
    # kept: what the targets read, the coarser rates' tokens of blocks still in a finer tier, and one window
    assert session._stacked_kv.num_tokens <= context.visible_tokens + WINDOW * PER_BLOCK


def test_the_grown_cache_equals_the_masked_forward_across_moves_prompts_and_a_resume(small_config, tmp_path):
    model, cfg = _model(small_config, *TIERS, *KV, *STACKED)
    session = _session(model, cfg)
    builds = _record_builds(model)
    prompts = ["a rabbit"] * 6 + ["a bird flies"] * 6 + ["the end"] * 6
    _check(session, prompts[0])
    for prompt in prompts[:12]:
        session.generate_segment(prompt)
        _check(session, prompt)
    # 2-frame segments: one block (every rate: 8 + 4 + 1 tokens) completes every other segment, moves included
    # (spans change at 20 and 28 frames), and each attends to at most one window of cached blocks (the one before)
    assert session.caches[0].frames_encoded == 28
    assert builds == [(0, PER_BLOCK)] + [(PER_BLOCK, PER_BLOCK)] * 6
    session.save(tmp_path / "s.session")
    resumed = GenerationSession.load(tmp_path / "s.session", model, session_setup(cfg), build_codec(cfg.codec), _text)
    builds.clear()
    _check(resumed, prompts[12])  # rebuilt from the saved tokens, one window of blocks per pass
    assert builds == [(0, 2 * PER_BLOCK)] + [(PER_BLOCK, 2 * PER_BLOCK)] * 2 + [(PER_BLOCK, PER_BLOCK)]
    for prompt in prompts[12:]:
        frames = session.generate_segment(prompt)
        again = resumed.generate_segment(prompt)
        assert np.abs(frames.astype(int) - again.astype(int)).max() <= 1
        _check(resumed, prompt)
        _check(session, prompt)
    assert session.caches[0].frames_encoded == resumed.caches[0].frames_encoded == 40


def test_a_session_resumes_only_under_its_own_tier_layout(small_config, tmp_path):
    stacked, stacked_cfg = _model(small_config, *TIERS, *KV, *STACKED)
    recompute, recompute_cfg = _model(small_config, *TIERS, *KV)
    wider, wider_cfg = _model(small_config, *TIERS, *KV, 'history.tier_layout="stacked"', "history.context_window=2")
    for made, made_cfg, other, other_cfg, refusal in (
        (recompute, recompute_cfg, stacked, stacked_cfg, "tier_layout: session 'recompute', this model 'stacked'"),
        (stacked, stacked_cfg, recompute, recompute_cfg, "tier_layout: session 'stacked', this model 'recompute'"),
        (stacked, stacked_cfg, wider, wider_cfg, "context_window: session 8, this model 16"),
    ):
        session = _session(made, made_cfg)
        session.generate_segment("a")
        session.save(tmp_path / "s.session")
        with pytest.raises(ValueError, match=refusal):
            GenerationSession.load(
                tmp_path / "s.session", other, session_setup(other_cfg), build_codec(other_cfg.codec), _text
            )
        GenerationSession.load(
            tmp_path / "s.session", made, session_setup(made_cfg), build_codec(made_cfg.codec), _text
        )


# -- training ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["frame-query", "ar"])
def test_training_with_the_stacked_layout_and_its_checkpoint(small_config, tmp_path, stage):
    """Stage I and II train through ``encode_history`` (the stacked context, its visibility) and the same attention
    processors; the checkpoint reloads with the layout, and ``generate`` / ``generate --resume`` run on it."""
    cfg = two_tier_training(small_config, stage, 0.5, 'history.tier_layout="stacked"', "history.context_window=0.5")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["heldout_loss"] > 0
    model, loaded = load_model(tmp_path / "run" / "final")
    assert loaded.history.tier_layout == "stacked" and model.tiers.stacked and model.backbone.context_window == 1
    if stage == "ar":
        meta = generate_and_resume(tmp_path)
        assert (meta["model"]["tier_layout"], meta["model"]["context_window"]) == ("stacked", 4)


# -- the cost model ------------------------------------------------------------------------------------------------


def test_the_cost_command_takes_the_stacked_layout(capsys):
    from tinyhistory.cli import main

    args = ["cost", "--preset", "tiny", "--history", "8", "--method", "no_history", "--method", "proposed"]
    assert main([*args, "--rate", "4x4x2", "--tiers", "4x4x2:2+4x4x4@stacked:1", "--tier-move", "1", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["tiers"] is not None]
    assert [(r["tier_layout"], r["context_window"], r["context_attention"]) for r in rows] == [
        ("stacked", 1.0, "block_causal")
    ]
    assert main([*args, "--tiers", "4x4x2:2+4x4x4@packed"]) == 2
    assert "the layout after @ is 'stacked' or 'stacked:SECONDS'" in capsys.readouterr().err


def test_stacked_rows_of_the_cost_model():
    """Issue 24's goals, counted on TI2V-5B (480×832, 1-s segments, 30 steps × 2 CFG branches), the newest 20 s at
    4×4×2, older at 8×8×4, a 20-s window: the cache's append per segment is the same (±10 %: ×1.024) at 10 s
    and 600 s (the recompute layout's is ×3.35), no move costs anything, and the targets read what the recompute
    layout shows (3,690 tokens at 600 s, +13.6 % per step)."""
    from tinyhistory.sizing.cost import CostSettings, TierSet, cost_rows

    settings = CostSettings(
        preset="wan2.2-ti2v-5b",
        history_seconds=(10.0, 600.0),
        methods=("no_history", "proposed"),
        proposed_rates=(("4x4x2",),),
        kv_cache=False,
        block_causal=True,
        tier_sets=(TierSet.parse("4x4x2:20+8x8x4@stacked:20", 10.0),),
    )
    rows = {r.history_seconds: r for r in cost_rows(settings) if r.tier_layout == "stacked"}
    at_10, at_600 = rows[10.0], rows[600.0]
    assert (at_600.context_tokens, at_600.context_window, at_600.cache_move_tflops) == (1080 + 2610, 20.0, 0.0)
    assert at_600.history_overhead == pytest.approx(0.137, abs=0.005)
    ratio = at_600.cache_build_tflops / at_10.cache_build_tflops
    assert 0.9 <= ratio <= 1.1
    assert ratio == pytest.approx(1.024, abs=0.005)  # the window holds 15 blocks at 10 s, 30 at 600 s
