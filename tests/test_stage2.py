"""Stage II: next-segment batches, sliding window, several encoders, cross-attention, LoRA checkpoints, training."""

import pytest
import torch
from diffusers import WanTransformer3DModel

from tinyhistory.assemble import HistoryDiT
from tinyhistory.backbones import WanBackbone
from tinyhistory.config import load_config
from tinyhistory.geometry import Rate
from tinyhistory.text.condition import TextCondition
from tinyhistory.train.checkpoint import load_model, save_weights
from tinyhistory.train.objectives import (
    drop_recent_history,
    make_next_segment_batch,
    noise_history,
    splice_cutaway,
    split_points,
)
from tinyhistory.train.trainer import train

AR = ['train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.checkpoint_every=2"]


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Give zero-initialised layers (HR projection, enhancer outputs) random weights so that they matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.abs().sum() == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def test_stage2_defaults_apply_only_to_stage_ar():
    stage1 = load_config("tiny")
    stage2 = load_config("tiny", overrides=['train.stage="ar"'])
    assert (stage1.train.history_frames, stage1.train.lora_rank) == (32, 0)
    assert (stage2.train.history_frames, stage2.train.segment_frames, stage2.train.lora_rank) == (96, 8, 16)
    with pytest.raises(ValueError, match="segment_frames=8 must be shorter than train.history_frames=8"):
        load_config("tiny", overrides=['train.stage="ar"', "train.history_frames=8"])
    with pytest.raises(ValueError, match="cross_attention needs the HR branch"):
        load_config("tiny", overrides=['history.method="only_lr"', "history.cross_attention=true"])


def test_next_segment_batch_splits_at_block_boundaries():
    hr = torch.randn(2, 48, 12, 16, 16)
    lr = [torch.randn(2, 48, 6, 4, 4), None]
    rates = [Rate.parse("4x4x2"), Rate.parse("2x2x4")]
    assert split_points(12, 4, 4) == [0, 4, 8]
    batch = make_next_segment_batch(hr, lr, rates, segment=4, split=4)
    assert torch.equal(batch.history, hr[:, :, :4]) and torch.equal(batch.targets, hr[:, :, 4:8])
    assert batch.history_lr[0].shape[2] == 2 and batch.history_lr[1] is None
    assert batch.positions.tolist() == [[4, 5, 6, 7]] * 2
    g = torch.Generator().manual_seed(0)
    seen = {make_next_segment_batch(hr, lr, rates, 4, generator=g).history.shape[2] for _ in range(40)}
    assert seen == {0, 4, 8}  # lcm of the temporal rates 2 and 4; 0 = generation from nothing
    with pytest.raises(ValueError, match="split 2 is not one of the valid history lengths"):
        make_next_segment_batch(hr, lr, rates, segment=4, split=2)


def test_sliding_window_tokens_are_the_last_frames_at_their_true_positions(small_config):
    model = HistoryDiT.from_config(small_config('history.method="no_history"', "history.sliding_window=3"))
    hr = torch.randn(1, 48, 10, 16, 16)
    ctx = model.history_context(hr, [])
    expected = model.backbone.patch_embed(hr[:, :, 7:]).flatten(2).transpose(1, 2)
    torch.testing.assert_close(ctx.tokens, expected)
    assert ctx.positions[0, :, 0].unique().tolist() == [7.0, 8.0, 9.0]
    assert ctx.positions[0, 0].tolist() == [7.0, 0.0, 0.0] and ctx.num_tokens == 3 * 8 * 8
    assert model.history_context(hr[:, :, :0], []) is None


def test_several_encoders_concatenate_their_tokens(small_config):
    model = HistoryDiT.from_config(small_config('history.rates=["4x4x2", "2x2x8"]'))
    from tinyhistory.codecs import PixelUnshuffleCodec
    from tinyhistory.history import lowres_latents

    pixels = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    codec = PixelUnshuffleCodec(4)
    lr = [lowres_latents(pixels, Rate.parse(r), codec) for r in ("4x4x2", "2x2x8")]
    ctx = model.history_context(codec.encode(pixels), lr)
    assert ctx.num_tokens == 8 * 2 * 2 + 2 * 4 * 4  # 4x4x2: 8 blocks of 2x2; 2x2x8: 2 blocks of 4x4


def test_cross_attention_enhancement_starts_identical_and_round_trips(small_config, tmp_path):
    plain = HistoryDiT.from_config(small_config())
    _randomise(plain.producers)
    cfg = small_config("history.cross_attention=true")
    enhanced = HistoryDiT.from_config(cfg, backbone=plain.backbone)
    enhanced.producers = plain.producers
    assert len(enhanced.enhancers) == 1  # one per DiT block
    hr, x = torch.randn(1, 48, 8, 16, 16), torch.randn(1, 48, 2, 16, 16)
    lr = [torch.randn(1, 48, 4, 4, 4)]
    text, t = TextCondition(torch.randn(1, 64, 384)), torch.tensor([0.5])
    with torch.no_grad():
        ctx_plain, ctx_enh = plain.history_context(hr, lr), enhanced.history_context(hr, lr)
        assert ctx_plain.features is None and ctx_enh.features.shape == (1, ctx_enh.num_tokens, 32)
        torch.testing.assert_close(enhanced(x, t, text, ctx_enh), plain(x, t, text, ctx_plain), rtol=0, atol=0)
        _randomise(enhanced.enhancers, seed=1)
        changed = enhanced(x, t, text, ctx_enh)
        assert (changed - plain(x, t, text, ctx_plain)).abs().max() > 1e-4
    save_weights(enhanced, cfg, tmp_path / "ckpt")
    loaded, _ = load_model(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, t, text, loaded.history_context(hr, lr)), changed)


def test_stage2_trains_a_lora_from_a_stage1_checkpoint(small_config, tmp_path):
    stage1 = tmp_path / "stage1"
    train(small_config("train.steps=2"), stage1, progress=False)
    switches = ("train.lora_rank=4", "history.sliding_window=2", "train.freeze_encoder=true")
    cfg = small_config(*AR, "train.steps=2", *switches)
    summary = train(cfg, tmp_path / "stage2", init_from=stage1 / "final", progress=False)
    final = tmp_path / "stage2" / "final"
    assert summary["stage"] == "ar" and summary["sliding_window"] == 2 and summary["heldout_loss"] > 0
    assert (final / "lora.safetensors").is_file() and not (final / "transformer").exists()

    model, loaded_cfg = load_model(final)
    base, _ = load_model(stage1 / "final")
    assert loaded_cfg.backbone.base_transformer.endswith("stage1/final/transformer")
    assert model.sliding_window == 2 and loaded_cfg.train.lora_rank == 4
    # the encoder was frozen: identical to stage I; the LoRA moved (B is no longer zero)
    for (k, a), (_, b) in zip(model.producers.state_dict().items(), base.producers.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    lora_b = [p for n, p in model.backbone.transformer.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)

    # the LoRA file is a diffusers LoRA: the stock loader reads it into the stage-I transformer, same outputs
    stock = WanTransformer3DModel.from_pretrained(stage1 / "final" / "transformer")
    stock.load_lora_adapter(str(final / "lora.safetensors"), prefix="transformer")
    x, t, text = torch.randn(1, 48, 2, 16, 16), torch.tensor([0.3]), TextCondition(torch.randn(1, 64, 384))
    with torch.no_grad():
        ours = model.backbone(x, t, text)
        theirs = WanBackbone(stock)(x, t, text)
    torch.testing.assert_close(ours, theirs)

    # resume: running the finished command again changes nothing and keeps the step count
    again = train(cfg, tmp_path / "stage2", init_from=stage1 / "final", progress=False)
    assert again["steps"] == 2


def test_full_dit_stage2_keeps_training_the_encoder(small_config, tmp_path):
    stage1 = tmp_path / "stage1"
    train(small_config("train.steps=2"), stage1, progress=False)
    whole_dit = small_config(*AR, "train.steps=2", "train.lora_rank=0")
    train(whole_dit, tmp_path / "stage2", init_from=stage1 / "final", progress=False)
    final = tmp_path / "stage2" / "final"
    assert (final / "transformer").is_dir() and not (final / "lora.safetensors").exists()
    a, _ = load_model(final)
    b, _ = load_model(stage1 / "final")
    changed = [not torch.equal(x, y) for x, y in zip(a.producers.parameters(), b.producers.parameters(), strict=True)]
    assert any(changed)


def test_baselines_can_start_from_the_proposed_models_dit(small_config, tmp_path):
    stage1 = tmp_path / "stage1"
    train(small_config("train.steps=1"), stage1, progress=False)
    cfg = small_config(*AR, "train.steps=1", 'history.method="no_history"', "history.sliding_window=2")
    train(cfg, tmp_path / "window", init_from=stage1 / "final", progress=False)
    model, loaded = load_model(tmp_path / "window" / "final")
    assert loaded.history.method == "no_history" and len(model.producers) == 0 and model.sliding_window == 2
    assert loaded.backbone.base_transformer.endswith("stage1/final/transformer")


def test_window_dropout_leaves_the_window_out_of_some_training_steps_only(small_config, tmp_path, monkeypatch):
    """``train.window_dropout``: about that fraction of training steps build their context without the sliding
    window (the encoder's tokens alone); the held-out loss always sees it, as evaluation and generation do. Only a
    stage-II run with a window may ask for it."""
    seen: list[tuple[bool, bool, int]] = []  # (training, window, context tokens) per stage-II context built
    original = HistoryDiT.history_context

    def recording(self, hr, lr, frame_offset=0, window=True):
        context = original(self, hr, lr, frame_offset, window=window)
        seen.append((self.training, window, 0 if context is None else context.num_tokens))
        return context

    monkeypatch.setattr(HistoryDiT, "history_context", recording)
    cfg = small_config(*AR, "train.steps=12", "history.sliding_window=2", "train.window_dropout=0.5")
    train(cfg, tmp_path / "run", progress=False)
    training = [(window, tokens) for is_training, window, tokens in seen if is_training]
    heldout = [(window, tokens) for is_training, window, tokens in seen if not is_training]
    assert len(training) == 12 and heldout and all(window for window, _ in heldout)
    dropped = [tokens for window, tokens in training if not window]
    assert 2 <= len(dropped) <= 10  # 0.5 of 12 steps, drawn from the run's seeded generator
    # a step without the window has only the encoder's tokens (none when the split left no history)
    kept = [tokens for window, tokens in training if window]
    assert max(dropped) < max(kept)

    with pytest.raises(ValueError, match="train.window_dropout = 0.5 .* history.sliding_window = 0"):
        small_config(*AR, "train.window_dropout=0.5")
    with pytest.raises(ValueError, match="train.window_dropout = 0.5 .* train.stage = 'frame-query'"):
        small_config("history.sliding_window=2", "train.window_dropout=0.5")
    with pytest.raises(ValueError, match="train.window_dropout must be in \\[0, 1\\)"):
        small_config(*AR, "history.sliding_window=2", "train.window_dropout=1.0")


def test_history_noise_noises_each_samples_history_and_lr_alike_and_leaves_the_targets():
    """``noise_history``: one level σ ≤ the maximum per sample, on the latents and the LR latents alike; on a history
    of ones the noised frames have mean 1 − σ and spread σ, so the two recover the same σ."""
    b = 6
    hr = torch.ones(b, 4, 12, 16, 16)
    lr = [torch.ones(b, 4, 6, 8, 8), None]
    rates = [Rate.parse("2x2x2"), Rate.parse("4x4x2")]
    batch = make_next_segment_batch(hr, lr, rates, segment=4, generator=torch.Generator().manual_seed(0), split=8)
    batch.window = False
    noised = noise_history(batch, 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(noised.targets, batch.targets) and torch.equal(noised.noise, batch.noise)
    assert noised.window is False and noised.history_lr[1] is None and torch.equal(batch.history, hr[:, :, :8])
    sigma_hr = 1 - noised.history.mean(dim=(1, 2, 3, 4))  # (B,)
    spread_hr = noised.history.std(dim=(1, 2, 3, 4))
    spread_lr = noised.history_lr[0].std(dim=(1, 2, 3, 4))
    assert torch.allclose(sigma_hr, spread_hr, atol=0.02) and torch.allclose(spread_lr, spread_hr, atol=0.03)
    assert float(spread_hr.min()) >= 0 and float(spread_hr.max()) <= 0.4 + 0.02 and float(spread_hr.std()) > 0.02
    empty = make_next_segment_batch(hr, lr, rates, segment=4, generator=torch.Generator().manual_seed(0), split=0)
    assert noise_history(empty, 0.4, torch.Generator()).history.shape[2] == 0  # no history: nothing to noise


def test_history_noise_is_drawn_in_training_steps_only(small_config, tmp_path, record_trainer_calls):
    """``train.history_noise``: every training step's history is noised (from the run's generator), the held-out
    loss's never (it does not pass through the step); only stage II may ask for it."""
    calls = record_trainer_calls("noise_history")
    train(small_config(*AR, "train.steps=4", "train.history_noise=0.3"), tmp_path / "run", progress=False)
    assert [c["max_level"] for c in calls] == [0.3] * 4
    train(small_config(*AR, "train.steps=2"), tmp_path / "clean", progress=False)
    assert len(calls) == 4  # off by default
    with pytest.raises(ValueError, match="train.history_noise = 0.3 .* train.stage = 'frame-query'"):
        small_config("train.history_noise=0.3")
    with pytest.raises(ValueError, match="train.history_noise must be in \\[0, 1\\)"):
        small_config(*AR, "train.history_noise=1.0")


def test_history_gap_drops_the_last_frames_in_whole_blocks_and_keeps_the_target_positions():
    """``drop_recent_history``: the history loses its last frames (rounded up to whole temporal blocks), its LR
    latents the same blocks, and the window; the targets, their noise and their true positions are untouched."""
    hr = torch.arange(12, dtype=torch.float32).view(1, 1, 12, 1, 1).expand(2, 4, 12, 8, 8)
    lr = [torch.arange(6, dtype=torch.float32).view(1, 1, 6, 1, 1).expand(2, 4, 6, 4, 4), None]
    rates = [Rate.parse("2x2x2"), Rate.parse("4x4x1")]
    batch = make_next_segment_batch(hr, lr, rates, segment=4, generator=torch.Generator().manual_seed(0), split=8)
    cut = drop_recent_history(batch, 3, rates)  # 3 frames → 4 (whole 2-frame blocks)
    assert cut.history[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3] and cut.history_lr[0][0, 0, :, 0, 0].tolist() == [0, 1]
    assert cut.history_lr[1] is None and cut.window is False and batch.window is True
    assert torch.equal(cut.targets, batch.targets) and torch.equal(cut.noise, batch.noise)
    assert cut.positions.tolist() == [[8, 9, 10, 11]] * 2
    assert drop_recent_history(batch, 8, rates).history.shape[2] == 0  # a gap as long as the history: none left


def test_history_gap_cuts_some_training_steps_only(small_config, tmp_path, record_trainer_calls):
    """``train.history_gap``: about that fraction of training steps lose their last frames (from the run's seeded
    generator, each then without its window), the held-out loss never; only stage II may ask for it."""
    calls = record_trainer_calls("drop_recent_history")
    cfg = small_config(*AR, "train.steps=12", "train.history_gap=0.5", "train.history_gap_frames=2")
    train(cfg, tmp_path / "run", progress=False)
    assert 2 <= len(calls) <= 10 and {c["frames"] for c in calls} == {2}
    with pytest.raises(ValueError, match="train.history_gap = 0.5 .* train.stage = 'frame-query'"):
        small_config("train.history_gap=0.5")
    with pytest.raises(ValueError, match="train.history_gap must be in \\[0, 1\\)"):
        small_config(*AR, "train.history_gap=1.0")
    with pytest.raises(ValueError, match="train.history_gap_frames must be > 0"):
        small_config(*AR, "train.history_gap=0.5", "train.history_gap_frames=0")


def test_a_cutaway_replaces_whole_blocks_of_history_with_another_windows_frames():
    """``splice_cutaway``: frames [2, 6) of every window come from the other windows, the LR latents of the same
    blocks with them; the frames before and after (the shot, and its return) are untouched."""
    hr = torch.arange(10, dtype=torch.float32).view(1, 1, 10, 1, 1).expand(2, 4, 10, 8, 8)
    other = -1 - hr
    rates = [Rate.parse("4x4x2")]
    lr, other_lr = [hr[:, :, ::2, :2, :2].clone()], [other[:, :, ::2, :2, :2].clone()]
    spliced, spliced_lr = splice_cutaway(hr, lr, other, other_lr, rates, start=2, length=4)
    assert spliced[0, 0, :, 0, 0].tolist() == [0, 1, -3, -4, -5, -6, 6, 7, 8, 9]
    assert spliced_lr[0][0, 0, :, 0, 0].tolist() == [0, -3, -5, 6, 8]
    assert splice_cutaway(hr, [None], other, [None], rates, 2, 4)[1] == [None]
    with pytest.raises(ValueError, match=r"frames \[3, 7\) must lie in the 10-frame window on 2-frame block"):
        splice_cutaway(hr, lr, other, other_lr, rates, start=3, length=4)


def test_cutaway_steps_splice_another_window_before_a_full_history_target(small_config, tmp_path, record_trainer_calls):
    """``train.cutaway_share``: about that share of training steps splice frames of other windows into the history
    so that it ends in one block (the cue) of its own shot before the target, split with the whole history; the
    held-out loss never; a cut-away that leaves no older history is refused before the first step."""
    calls = record_trainer_calls("batch_for")
    train(small_config(*AR, "train.steps=10", "train.cutaway_share=0.5", "train.cutaway_frames=2"), tmp_path / "r")
    cut = [(c["split"], c["cutaway"]) for c in calls if c["cutaway"] is not None]
    assert 2 <= len(cut) <= 8, calls  # about half of 10 steps, from the run's seeded generator
    # history_frames 8, segment 2: history 6 = older 2 + cut-away 2 + cue 2
    assert all(split == 6 and (c.start, c.length, len(c.picks)) == (2, 2, 2) for split, c in cut)
    with pytest.raises(
        ValueError, match="train.cutaway_frames = 3 .4 frames in whole 2-frame blocks. and a 2-frame cue"
    ):
        train(small_config(*AR, "train.steps=1", "train.cutaway_share=0.5", "train.cutaway_frames=3"), tmp_path / "x")
    with pytest.raises(ValueError, match="train.cutaway_share = 0.5 cuts away inside stage II"):
        small_config("train.cutaway_share=0.5")
