"""Block-causal, prompt-free context (issue 24): each temporal history block attends to itself and earlier blocks
and reads no prompt, so its keys/values depend on nothing later and the session's cache grows block by block."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cache_builds import record_cache_builds
from history_inputs import randomise_zero_layers
from trained_runs import generate_and_resume

from tinyhistory.assemble import HistoryDiT, build_codec
from tinyhistory.backbones.base import NEWEST_BLOCK, ContextTokens
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings, sample_segment
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.checkpoint import load_model
from tinyhistory.train.trainer import train

SMALL_AR = ['train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.lora_rank=0"]
# two DiT blocks (with one, what the context attends to cannot reach the targets), a window and the enhancers
EXTRA = (*SMALL_AR, "history.sliding_window=2", "history.cross_attention=true", "backbone.num_layers=2")
KV = "history.kv_cache=true"
BLOCK_CAUSAL = 'history.context_attention="block_causal"'


@pytest.fixture
def models(small_config):
    """The same weights with the KV cache's full context attention and with the block-causal one."""
    torch.manual_seed(0)
    full = HistoryDiT.from_config(small_config(*EXTRA, KV)).eval()
    randomise_zero_layers(full)
    causal = HistoryDiT.from_config(small_config(*EXTRA, KV, BLOCK_CAUSAL)).eval()
    causal.load_state_dict(full.state_dict())
    return full, causal


def _inputs(model: HistoryDiT, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hr, lr = torch.randn(1, 48, 8, 16, 16, generator=g), [torch.randn(1, 48, 4, 4, 4, generator=g)]
    with torch.no_grad():
        context = model.history_context(hr, lr)
    x = torch.randn(1, 48, 2, 16, 16, generator=g)
    text = TextCondition(torch.randn(1, 64, 384, generator=g))
    return x, torch.tensor([0.6]), text, context, torch.tensor([[8, 9]])


def _text(prompts: list[str]) -> TextCondition:
    """A stand-in text encoder: one constant condition per prompt, distinct by length."""
    return TextCondition(torch.stack([torch.full((64, 384), 0.01 * len(p)) for p in prompts]))


# -- the attention pattern ------------------------------------------------------------------------------------------


def test_the_setting_is_validated_by_name(small_config):
    with pytest.raises(ValueError, match="history.context_attention.*not allowed"):
        small_config('history.context_attention="causal"')
    with pytest.raises(ValueError, match="block_causal.*needs history.kv_cache = true"):
        small_config(BLOCK_CAUSAL)
    assert small_config().history.context_attention == "full"


def test_context_tokens_carry_their_temporal_block(models):
    _, causal = models
    _, _, _, context, _ = _inputs(causal)
    blocks = context.blocks[0]
    encoded = blocks[blocks != NEWEST_BLOCK]
    # 8 latent frames at 4×4×2: 4 blocks of 4 tokens each, oldest first; the 2-frame window is the newest block
    assert encoded.tolist() == [b for b in range(4) for _ in range(4)]
    assert (blocks == NEWEST_BLOCK).sum() == 2 * 8 * 8


def test_without_context_it_is_the_stock_forward(models):
    full, causal = models
    x, t, text, _, positions = _inputs(full)
    with torch.no_grad():
        torch.testing.assert_close(causal(x, t, text, None, positions), full(x, t, text, None, positions))


def test_the_mask_matters(models):
    full, causal = models
    x, t, text, context, positions = _inputs(full)
    with torch.no_grad():
        difference = (causal(x, t, text, context, positions) - full(x, t, text, context, positions)).abs().max()
    assert difference > 1e-4


def test_a_block_depends_on_nothing_later_and_on_no_prompt(models):
    """Changing the newest history block and the prompt leaves every earlier block's keys/values as they were."""
    _, causal = models
    _, _, _, context, _ = _inputs(causal)
    keep = int((context.blocks[0] < 3).sum())  # blocks 0–2
    tokens = context.tokens.clone()
    g = torch.Generator().manual_seed(2)
    tokens[:, keep:] += torch.randn(tokens[:, keep:].shape, generator=g)  # block 3 and the window
    changed = ContextTokens(tokens, context.positions, context.features, context.blocks)
    with torch.no_grad():
        whole = causal.build_context_cache(context, _text(["a prompt"]))
        other = causal.build_context_cache(changed, _text(["another prompt"]))
    for a, b in zip(whole.keys, other.keys, strict=True):
        torch.testing.assert_close(a[:, :keep], b[:, :keep])
        assert (a[:, keep:] - b[:, keep:]).abs().max() > 1e-3


def test_cached_steps_equal_the_masked_forward_for_both_cfg_branches(models):
    """One cache (batch 1, built without a prompt) serves the conditional and unconditional halves."""
    _, causal = models
    x, t, text, context, positions = _inputs(causal)
    empty = text.zeros_like()
    both = TextCondition.cat([text, empty])
    with torch.no_grad():
        cache = causal.build_context_cache(context, None)
        assert cache.num_tokens == context.num_tokens and cache.keys[0].shape[0] == 1
        for step in (0.9, 0.3):
            t2 = torch.tensor([step, step])
            torch.testing.assert_close(
                causal(torch.cat([x, x]), t2, both, None, positions.repeat(2, 1), context_cache=cache),
                causal(torch.cat([x, x]), t2, both, context.repeat(2), positions.repeat(2, 1)),
                atol=1e-5,
                rtol=1e-5,
            )


def test_a_cache_grown_in_pieces_equals_the_masked_forward_with_value_rope(small_config):
    """history.value_rope (issue 22) keeps working: the grown cache stores rotated values like the whole one."""
    torch.manual_seed(0)
    model = HistoryDiT.from_config(small_config(*EXTRA, KV, BLOCK_CAUSAL, "history.value_rope=true")).eval()
    randomise_zero_layers(model)
    x, t, text, context, positions = _inputs(model)
    split = int((context.blocks[0] < 2).sum())  # blocks 0–1, then block 2–3 and the window
    with torch.no_grad():
        cache = model.build_context_cache(
            context.narrow(split), None, model.build_context_cache(_head(context, split), None)
        )
        cached = model(x, t, text, None, positions, context_cache=cache)
        masked = model(x, t, text, context, positions)
    torch.testing.assert_close(cached, masked, atol=1e-5, rtol=1e-5)


def _head(context: ContextTokens, n: int) -> ContextTokens:
    """The first ``n`` tokens of ``context``."""
    return ContextTokens(
        context.tokens[:, :n], context.positions[:, :n], context.features[:, :n], context.blocks[:, :n]
    )


def test_gradient_checkpointing_recomputes_the_same_pattern(models):
    """Training with checkpointing recomputes each block during backward: it must see the block-causal mask."""
    _, causal = models
    x, t, text, context, positions = _inputs(causal)

    def gradients() -> list[torch.Tensor]:
        causal.zero_grad()
        causal(x, t, text, context, positions).square().mean().backward()
        return [p.grad.clone() for p in causal.backbone.parameters() if p.grad is not None]

    plain = gradients()
    causal.backbone.enable_gradient_checkpointing()
    checkpointed = gradients()
    assert len(plain) == len(checkpointed) > 0
    for a, b in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(a, b)


# -- the session: an incremental cache ------------------------------------------------------------------------------


def _session(model, cfg) -> GenerationSession:
    """Two UniPC steps with CFG, one 4×4×2 block (2 latent frames) per segment."""
    settings = SamplingSettings(steps=2, segment_frames=2, guidance=2.0)
    return GenerationSession(model, session_setup(cfg), build_codec(cfg.codec), _text, settings)


def _check_cache(session: GenerationSession, prompt: str) -> None:
    """The session's grown cache gives the uncached masked forward (both CFG halves) and equals a fresh build."""
    model = session.model
    context = session.context()
    cache = session.history_cache(context)
    g = torch.Generator().manual_seed(len(session.records))
    x = torch.randn(2, 48, 2, 16, 16, generator=g)
    n = session.history_frames
    positions = torch.tensor([[n, n + 1]] * 2)
    text = TextCondition.cat([_text([prompt]), _text([""])])
    t = torch.tensor([0.7, 0.7])
    with torch.no_grad():
        cached = model(x, t, text, None, positions, context_cache=cache)
        masked = model(x, t, text, context.repeat(2), positions)
        fresh = model.build_context_cache(context, None)
    torch.testing.assert_close(cached, masked, atol=1e-5, rtol=1e-5)
    for grown, whole in zip(cache.keys + cache.values, fresh.keys + fresh.values, strict=True):
        torch.testing.assert_close(grown, whole, atol=1e-5, rtol=1e-5)


def test_the_session_cache_grows_incrementally_across_prompts_and_a_resume(models, small_config, tmp_path):
    _, causal = models
    cfg = small_config(*EXTRA, KV, BLOCK_CAUSAL)
    session = _session(causal, cfg)
    session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    sizes = record_cache_builds(causal)
    prompts = ["a rabbit", "a rabbit", "a rabbit", "a bird flies", "a bird flies", "the end"]  # two switches
    _check_cache(session, prompts[0])
    for prompt in prompts[:3]:
        sizes.clear()
        session.generate_segment(prompt)
        # each segment appends the block the last one completed (4 tokens) and adds the window (128 tokens) for
        # itself: never the whole history, once for both CFG branches
        assert sizes == [4, 128] or (len(session.records) == 1 and sizes == [128]), sizes
    _check_cache(session, prompts[2])
    session.save(tmp_path / "s.session")
    resumed = GenerationSession.load(tmp_path / "s.session", causal, session_setup(cfg), build_codec(cfg.codec), _text)
    for prompt in prompts[3:]:
        _check_cache(session, prompt)
        _check_cache(resumed, prompt)  # rebuilt from the saved tokens at once: the same keys/values
        frames = session.generate_segment(prompt)
        again = resumed.generate_segment(prompt)
        assert np.abs(frames.astype(int) - again.astype(int)).max() <= 1
    _check_cache(session, "after six segments")
    assert len(session.records) == 6 and session.history_frames == 4 + 6 * 2


def test_a_forgotten_cache_is_rebuilt_as_a_loaded_session_builds_it(models, small_config, tmp_path):
    """After ``forget_cache()`` the next segment computes the keys/values of every encoded token again (not only the
    newest block's), and its frames equal those of the same session saved and loaded, whose cache is built afresh."""
    _, causal = models
    cfg = small_config(*EXTRA, KV, BLOCK_CAUSAL)
    session = _session(causal, cfg)
    session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    for prompt in ("a rabbit", "a rabbit", "a bird flies"):
        session.generate_segment(prompt)
    session.save(tmp_path / "s.session")
    loaded = GenerationSession.load(tmp_path / "s.session", causal, session_setup(cfg), build_codec(cfg.codec), _text)
    encoded = sum(c.context.num_tokens for c in session.caches if c.frames_encoded > 0)
    assert encoded > 4  # more than the one block a grown cache would append
    sizes = record_cache_builds(causal)
    session.forget_cache()
    frames = session.generate_segment("the end")
    assert sizes == [encoded, 128]  # the whole history, then the window (128 tokens) for this segment
    sizes.clear()
    again = loaded.generate_segment("the end")
    assert sizes == [encoded, 128]
    np.testing.assert_array_equal(frames, again)


def test_generation_with_the_cache_equals_uncached_masked_sampling(models):
    _, causal = models
    x, _, text, context, positions = _inputs(causal)
    settings = SamplingSettings(sampler="unipc", steps=3, guidance=2.0)
    with torch.no_grad():
        with_cache = sample_segment(causal, x, text, context, positions, settings)
        causal.backbone.kv_cache = False  # the same attention pattern, the context recomputed at every step
        try:
            without = sample_segment(causal, x, text, context, positions, settings)
        finally:
            causal.backbone.kv_cache = True
    torch.testing.assert_close(with_cache, without, atol=1e-4, rtol=1e-4)


def test_a_session_resumes_only_under_its_own_setting(models, small_config, tmp_path):
    full, causal = models
    cfg_full, cfg_causal = small_config(*EXTRA, KV), small_config(*EXTRA, KV, BLOCK_CAUSAL)
    for model, cfg, other, other_cfg, name in (
        (causal, cfg_causal, full, cfg_full, "causal"),
        (full, cfg_full, causal, cfg_causal, "full"),
    ):
        session = _session(model, cfg)
        session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
        session.generate_segment("a")
        session.save(tmp_path / f"{name}.session")
        with pytest.raises(ValueError, match="context_attention: session '(full|block_causal)', this model"):
            GenerationSession.load(
                tmp_path / f"{name}.session", other, session_setup(other_cfg), build_codec(other_cfg.codec), _text
            )
        GenerationSession.load(tmp_path / f"{name}.session", model, session_setup(cfg), build_codec(cfg.codec), _text)


def test_the_studio_drives_a_block_causal_session(models, small_config):
    """The studio wraps the session's model in its step hook (to stop between steps): the cache passes through."""
    from tinyhistory.studio.engine import _StepHook

    _, causal = models
    session = _session(causal, small_config(*EXTRA, KV, BLOCK_CAUSAL))
    session.start_from_video(np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    steps: list[int] = []
    session.model = _StepHook(session.model, lambda: steps.append(1))
    for prompt in ("a", "b"):
        session.generate_segment(prompt)
    assert len(steps) == 2 * 2  # two segments of two steps, both CFG branches in one call
    assert session.history_cache().num_tokens == session.context().num_tokens


# -- training, checkpoints, generate --resume, other families --------------------------------------------------------


def test_training_with_the_setting_and_its_checkpoint(small_config, tmp_path):
    """Stage II, 2 steps; the checkpoint reloads block-causal; ``generate`` and ``generate --resume`` run on it."""
    cfg = small_config(*SMALL_AR, KV, BLOCK_CAUSAL, "train.steps=2")
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["heldout_loss"] > 0
    model, loaded = load_model(tmp_path / "run" / "final")
    assert loaded.history.context_attention == "block_causal"
    assert model.backbone.block_causal and model.backbone.kv_cache
    assert generate_and_resume(tmp_path, steps=2)["model"]["context_attention"] == "block_causal"


def test_stage_one_trains_with_the_mask(small_config, tmp_path):
    cfg = small_config(KV, BLOCK_CAUSAL, "train.steps=2")
    assert cfg.train.stage != "ar"
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["heldout_loss"] > 0
    model, _ = load_model(tmp_path / "run" / "final")
    assert model.backbone.block_causal


def test_hunyuanvideo_refuses_by_name(small_config):
    cfg = small_config('backbone.family="hunyuan"', KV, BLOCK_CAUSAL)
    refusal = 'history.context_attention = "block_causal" is not supported for HunyuanVideo'
    with pytest.raises(ValueError, match=refusal):
        HistoryDiT.from_config(cfg)
