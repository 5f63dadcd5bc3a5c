"""The next-segment references: what copying the history reaches, computed by hand on clips whose answer is known."""

import numpy as np
import pytest
import torch

from tinyhistory.codecs.pixel import PixelUnshuffleCodec
from tinyhistory.data.windows import to_uint8
from tinyhistory.eval.metrics import psnr
from tinyhistory.eval.next_segment import cutaway_set, next_segment_set, reference_metrics
from tinyhistory.geometry import Rate


def grey_ramp(frames: int, size: int = 32) -> torch.Tensor:
    """``(3, T, H, W)``: frame t is the uniform grey −1 + t/8."""
    levels = -1 + torch.arange(frames, dtype=torch.float32) / 8
    return levels[None, :, None, None].expand(3, frames, size, size).clone()


def uniform_psnr(predicted: float, truth: torch.Tensor) -> float:
    """Mean per-frame PSNR of a constant grey against ``(T,)`` true greys, through the same uint8 rounding."""
    size = (1, 4, 4)
    pred = to_uint8(torch.full((3, *size), predicted))
    return float(np.mean([psnr(to_uint8(torch.full((3, *size), float(v))), pred) for v in truth]))


def test_references_hold_the_last_frame_the_last_lr_block_and_the_mean():
    clip = grey_ramp(12)
    codec = PixelUnshuffleCodec(factor=4)
    eval_set = next_segment_set(clip, codec, history_frames=8, segment=4, windows=1)
    refs = reference_metrics(eval_set, codec, [Rate.parse("4x4x2")])

    truth = clip[0, 8:12, 0, 0]
    assert refs["last_frame_held"]["psnr"] == uniform_psnr(float(clip[0, 7, 0, 0]), truth)
    # The last 4x4x2 block averages history frames 6 and 7; a uniform frame survives the codec and the upsampling.
    assert refs["lr_input_4x4x2_held"]["psnr"] == uniform_psnr(float(clip[0, 6:8, 0, 0].mean()), truth)
    assert refs["history_mean_held"]["psnr"] == uniform_psnr(float(clip[0, :8, 0, 0].mean()), truth)
    # Holding older content is worse on a steady ramp.
    assert refs["last_frame_held"]["psnr"] > refs["lr_input_4x4x2_held"]["psnr"] > refs["history_mean_held"]["psnr"]


def test_a_static_clip_is_copied_exactly_and_its_lr_input_loses_detail():
    torch.manual_seed(0)
    still = torch.rand(3, 1, 32, 32) * 2 - 1
    clip = still.expand(3, 12, 32, 32).clone()
    codec = PixelUnshuffleCodec(factor=4)
    eval_set = next_segment_set(clip, codec, history_frames=8, segment=4, windows=1)
    refs = reference_metrics(eval_set, codec, [Rate.parse("2x2x2"), Rate.parse("4x4x2")])
    assert refs["last_frame_held"]["psnr"] == pytest.approx(58.92, abs=0.01)  # exact, at the 8-bit limit
    assert refs["last_frame_held"]["ssim"] == 1.0
    # Random pixels: the coarser LR input keeps less of them.
    assert np.isfinite(refs["lr_input_2x2x2_held"]["psnr"])
    assert refs["lr_input_2x2x2_held"]["psnr"] > refs["lr_input_4x4x2_held"]["psnr"]


def test_each_history_mode_is_what_the_model_sees_of_that_history(small_config):
    """``window_context``: the window's own history, the next window's (swapped), none, or its last frames only; the
    history latents are encoded once per codec and rates and reused by every mode and model."""
    from tinyhistory.assemble import HistoryDiT, build_codec
    from tinyhistory.eval.next_segment import window_context
    from tinyhistory.history.base import lowres_latents_per_rate

    cfg = small_config()
    torch.manual_seed(0)
    model = HistoryDiT.from_config(cfg).eval()
    codec = build_codec(cfg.codec)
    clip = torch.rand(3, 40, 64, 64) * 2 - 1
    eval_set = next_segment_set(clip, codec, history_frames=8, segment=2, windows=3)
    rates, uses_lr = [p.rate for p in model.producers], [p.uses_lr for p in model.producers]
    encodes = []
    real_encode = codec.encode
    codec.encode = lambda x: encodes.append(x.shape) or real_encode(x)
    for mode, shift in (("true", 0), ("foreign", 1)):
        px = eval_set.pixels[:, :, :8].roll(shift, dims=0)
        expected = model.history_context(real_encode(px), lowres_latents_per_rate(px, rates, uses_lr, codec))
        got = window_context(model, eval_set, codec, mode)
        torch.testing.assert_close(got.tokens, expected.tokens)
        assert torch.equal(got.positions, expected.positions)
    assert window_context(model, eval_set, codec, "removed") is None
    assert encodes.count((3, 3, 8, 64, 64)) == 1  # the HR history encoded once for both modes
    with pytest.raises(ValueError, match="history mode 'other'"):
        window_context(model, eval_set, codec, "other")
    # recent: only the last 4 frames, encoded as if the history began there, at their true positions
    px = eval_set.pixels[:, :, 4:8]
    expected = model.history_context(real_encode(px), lowres_latents_per_rate(px, rates, uses_lr, codec), 4)
    got = window_context(model, eval_set, codec, "recent", recent=4)
    torch.testing.assert_close(got.tokens, expected.tokens)
    whole = window_context(model, eval_set, codec, "true")
    assert torch.equal(got.positions, expected.positions) and got.num_tokens < whole.num_tokens
    assert int(got.positions[..., 0].min()) == 4  # the kept frames keep their place in the window
    block = max(r.t for r in rates)
    with pytest.raises(ValueError, match="recent history"):
        window_context(model, eval_set, codec, "recent", recent=0)
    if block > 1:
        with pytest.raises(ValueError, match="whole temporal blocks"):
            window_context(model, eval_set, codec, "recent", recent=block + 1)


def test_older_history_mode_is_the_encoders_tokens_before_a_gap(small_config):
    """``window_context(history="older")``: the history without its last frames (rounded up to whole temporal
    blocks), encoded from frame 0 without the sliding window, as a ``train.history_gap`` step sees it."""
    from tinyhistory.assemble import HistoryDiT, build_codec
    from tinyhistory.eval.next_segment import window_context
    from tinyhistory.history.base import lowres_latents_per_rate

    cfg = small_config("history.sliding_window=2")
    torch.manual_seed(0)
    model = HistoryDiT.from_config(cfg).eval()
    codec = build_codec(cfg.codec)
    eval_set = next_segment_set(torch.rand(3, 40, 64, 64) * 2 - 1, codec, history_frames=8, segment=2, windows=3)
    rates, uses_lr = [p.rate for p in model.producers], [p.uses_lr for p in model.producers]
    block = max(r.t for r in rates)
    keep = (8 - 3) // block * block  # the last 3 frames out, in whole blocks
    px = eval_set.pixels[:, :, :keep]
    expected = model.history_context(codec.encode(px), lowres_latents_per_rate(px, rates, uses_lr, codec), window=False)
    got = window_context(model, eval_set, codec, "older", recent=3)
    torch.testing.assert_close(got.tokens, expected.tokens)
    assert torch.equal(got.positions, expected.positions)
    assert int(got.positions[..., 0].max()) < keep  # nothing from the gap, nor the window's frames
    if block > 1:  # one frame before the gap is less than a block: nothing is left
        assert window_context(model, eval_set, codec, "older", recent=7) is None
    for bad in (0, 8):
        with pytest.raises(ValueError, match="older history leaves out the last 1-7 of 8 frames"):
            window_context(model, eval_set, codec, "older", recent=bad)


def test_a_cutaway_set_splices_another_windows_frames_before_the_cue():
    """``cutaway_set``: history frames [2, 6) of each window (8 history frames, cue 2) come from the window half the
    set away; the older frames, the cue, the targets, the starts and the noise stay the window's own."""
    clip = torch.arange(40, dtype=torch.float32).view(1, 40, 1, 1).expand(3, 40, 16, 16) / 40
    eval_set = next_segment_set(clip, PixelUnshuffleCodec(), history_frames=8, segment=2, windows=4)
    before = eval_set.pixels.clone()
    spliced = cutaway_set(eval_set, frames=4, cue=2)
    first_frames = [(px[0, :, 0, 0] * 40).round().long().tolist() for px in spliced.pixels]
    starts = eval_set.starts  # 0, 10, 20, 30: each window's partner is two windows on
    for i, frames in enumerate(first_frames):
        own, other = starts[i], starts[(i + 2) % 4]
        assert frames == [own, own + 1, *range(other + 2, other + 6), own + 6, own + 7, own + 8, own + 9]
    assert spliced.starts == starts and spliced.noise is eval_set.noise
    assert torch.equal(eval_set.pixels, before)  # the set it came from is left as it was
    with pytest.raises(ValueError, match="must leave older history in 8 history frames"):
        cutaway_set(eval_set, frames=6, cue=2)
