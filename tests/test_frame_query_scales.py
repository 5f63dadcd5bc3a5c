"""The frame-query diagnostics of issue 13: PSNR by scale, and what an LR branch hands the DiT as pixels."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinyhistory.config import load_config
from tinyhistory.eval.frame_query import (
    READOUT_SOURCES,
    band_fit,
    coarse_readout_fit,
    eval_set_for_clip,
    lr_input_frames,
    psnr_by_scale,
    queried_pixels,
    reference_metrics,
    with_foreign_detail,
)
from tinyhistory.geometry import Rate


def test_psnr_by_scale_sees_detail_only_at_the_scales_that_hold_it():
    """A 16×16 frame against its own 4×4-block average is exact at 2×2 and 4×4 (100 dB, the clamp); detail of ±10
    levels inside each block is seen from 8×8 on: 10·log10(255²/100) = 28.13 dB, the ordinary PSNR."""
    torch.manual_seed(0)
    coarse = torch.randint(20, 236, (2, 3, 1, 4, 4)).float()  # uint8 levels on a 4×4 grid
    blocky_u8 = coarse.repeat_interleave(4, dim=3).repeat_interleave(4, dim=4)  # (2, 3, 1, 16, 16)
    detail = torch.tensor([10.0, 10.0, -10.0, -10.0]).repeat(4)  # zero mean over each 4-pixel block, not over 2
    truth_u8 = blocky_u8 + detail  # varies along the width inside every 4×4 block
    truth, blocky = truth_u8 / 127.5 - 1, blocky_u8 / 127.5 - 1
    scores = psnr_by_scale(truth, blocky, [2, 4, 8, 16])
    assert scores[2] == scores[4] == 100.0
    assert math.isclose(scores[8], 10 * math.log10(255**2 / 100), rel_tol=1e-5)  # the 2×2 means are off by ±10
    assert math.isclose(scores[16], scores[8], rel_tol=1e-5)


def test_lr_input_frames_are_the_queried_frames_block_averaged_through_a_lossless_codec():
    """With the lossless pixel codec, the LR branch's input for a queried frame is the area average of its 2-frame
    block at half the resolution (rate 2×2×2 on the token grid), upsampled back: exactly that, for every query; and
    the reference row the demo and Table 1 print scores those frames."""
    torch.manual_seed(0)
    pixels = torch.rand(3, 24, 32, 32) * 2 - 1  # (3, T, H, W)
    cfg = load_config("tiny", overrides=["data.size=32", "train.history_frames=8", 'history.rates=["2x2x2"]'])
    eval_set, codec = eval_set_for_clip(pixels, cfg.codec, cfg.history.rates, cfg.train, windows=3, queries=2)
    got = lr_input_frames(eval_set, 0, Rate.parse("2x2x2"), codec)  # (B, 3, k, 32, 32)
    assert got.shape == queried_pixels(eval_set).shape == (3, 3, 2, 32, 32)
    for w, start in enumerate(eval_set.starts):
        for q, frame in enumerate(eval_set.batch.omega[w].tolist()):
            block = pixels[:, start + frame // 2 * 2 : start + frame // 2 * 2 + 2]  # (3, 2, 32, 32)
            small = F.avg_pool3d(block[None], kernel_size=(2, 2, 2))[:, :, 0]  # (1, 3, 16, 16)
            expected = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)[0]
            torch.testing.assert_close(got[w, :, q], expected, atol=1e-5, rtol=0)
    # the demo's and Table 1's reference row is the same frames under the frame metrics
    refs = reference_metrics(eval_set, pixels, codec, ["2x2x2"])
    full = psnr_by_scale(queried_pixels(eval_set), got, [32])[32]
    assert math.isclose(refs["lr_input_2x2x2_upsampled"]["psnr"], full, rel_tol=1e-4)


def _script():
    """``scripts/frame_query_scales.py`` as a module (the search scripts import their shared helpers from it)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "frame_query_scales.py"
    spec = importlib.util.spec_from_file_location("frame_query_scales", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_search_scripts_labels_and_low_noise_experts():
    """A ``|`` in a label stays inside its table cell; ``--low-noise`` must name a model and come with a boundary
    in (0, 1); a model without an expert samples as it is."""
    import argparse

    script = _script()
    assert script.cell("window 3 | shift 5") == "window 3 \\| shift 5"
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    script.add_low_noise_arguments(parser)
    parser.exit = lambda status=0, message=None: (_ for _ in ()).throw(ValueError(message))  # errors → exceptions
    args = parser.parse_args(["a=x", "--low-noise", "b=y", "--boundary", "0.8"])
    with pytest.raises(ValueError, match="names labels that are not models here: \\['b'\\]"):
        script.low_noise_experts(parser, args, ["a"])
    args = parser.parse_args(["a=x", "--low-noise", "a=y"])
    with pytest.raises(ValueError, match="--low-noise needs --boundary in \\(0, 1\\), got 0.0"):
        script.low_noise_experts(parser, args, ["a"])
    settings = object()
    assert script.expert_settings("a", {}, 0.8, None, None, settings) == (settings, None, {})


def test_recent_and_old_queries_are_scored_apart():
    """``--recent-frames N`` (issue 24) splits every query by whether it lies in the last N history frames."""
    script = _script()
    per_window = [
        {"queries": [1, 12], "psnr_per_query": [10.0, 20.0]},
        {"queries": [7, 8], "psnr_per_query": [12.0, 30.0]},  # frame 8 is the first of the last 8 of 16
    ]
    split = script.recent_and_old(per_window, frames=16, recent=8)
    assert split == {"psnr_recent": 25.0, "queries_recent": 2, "psnr_old": 11.0, "queries_old": 2}


def test_a_perfect_read_with_another_windows_detail_pays_the_detail_twice():
    """The sample reference: the LR input plus the detail *another* window's frame has over its own LR input. With
    detail independent of the truth's and of the same energy, its error is the LR input's twice over: 3.01 dB
    below the mean guess (10·log10 2), which is why a sampled frame query is held against it and not against the
    LR input itself."""
    torch.manual_seed(0)
    b = 64
    upsampled = torch.rand(b, 3, 1, 16, 16) * 0.5 - 0.25  # (B, 3, k, H, W) what the LR input gives
    detail = torch.randn(b, 3, 1, 16, 16) * 0.05  # what it misses, independent across windows
    truth = upsampled + detail
    got = with_foreign_detail(truth, upsampled)
    torch.testing.assert_close(got, upsampled + detail.roll(b // 2, dims=0))  # half the set away
    mse_mean_guess = (truth - upsampled).pow(2).mean()
    mse_sample = (truth - got).pow(2).mean()
    assert math.isclose(10 * math.log10(mse_sample / mse_mean_guess), 10 * math.log10(2), abs_tol=0.05)


def test_frame_query_references_stay_finite_on_a_black_frame():
    """A uniform frame (Big Buck Bunny's cuts go through black) is reproduced exactly by its thumbnail; PSNR floors
    at 8-bit rounding (58.9 dB) instead of making the mean ``inf``; both LR rows are reported."""
    pixels = torch.full((3, 24, 32, 32), -1.0)  # every frame black: every reference row is exact
    cfg = load_config("tiny", overrides=["data.size=32", "train.history_frames=8", 'history.rates=["2x2x2"]'])
    eval_set, codec = eval_set_for_clip(pixels, cfg.codec, cfg.history.rates, cfg.train, windows=3, queries=2)
    refs = reference_metrics(eval_set, pixels, codec, ["2x2x2"])
    floor = 10 * math.log10(255**2 * 12)
    for name in ("thumbnail_8x8_upsampled", "lr_input_2x2x2_upsampled", "lr_input_2x2x2_with_foreign_detail"):
        assert math.isclose(refs[name]["psnr"], floor, rel_tol=1e-9), name
    # one window has no other window's detail to borrow: the row is left out, and asked for directly it is an error
    one, _ = eval_set_for_clip(pixels, cfg.codec, cfg.history.rates, cfg.train, windows=1, queries=2)
    assert "lr_input_2x2x2_with_foreign_detail" not in reference_metrics(one, pixels, codec, ["2x2x2"])
    with pytest.raises(ValueError, match="at least two windows"):
        with_foreign_detail(queried_pixels(one), queried_pixels(one))


def test_the_one_step_mean_guess_comes_back_as_pixels_scored_as_the_metrics_say(small_config):
    """``evaluate_method(..., one_step_pixels=True)`` hands back the one-step mean guesses ``x0 = ε − v(ε, 1)`` as
    pixels (what ``frame_query_scales.py`` profiles by scale and shows): the same frames its ``psnr_one_step``
    scored, and the sample as before."""
    from tinyhistory.data.windows import batch_to_uint8
    from tinyhistory.eval.frame_query import evaluate_method
    from tinyhistory.eval.metrics import mean_metric, psnr_capped
    from tinyhistory.text.cache import encode_prompts
    from tinyhistory.train.trainer import prepare_model

    torch.manual_seed(0)
    cfg = small_config("data.size=32", 'history.rates=["2x2x2"]')
    model, cfg = prepare_model(cfg, None)
    pixels = torch.rand(3, 24, 32, 32) * 2 - 1
    eval_set, codec = eval_set_for_clip(pixels, cfg.codec, cfg.history.rates, cfg.train, windows=2, queries=1)
    text = encode_prompts(cfg.text, [cfg.text.caption])
    metrics, sampled, one_step = evaluate_method(model, eval_set, text, codec, sample_steps=2, one_step_pixels=True)
    again, sampled_again = evaluate_method(model, eval_set, text, codec, sample_steps=2)
    assert one_step.shape == sampled.shape == queried_pixels(eval_set).shape
    torch.testing.assert_close(sampled, sampled_again)
    true = batch_to_uint8(queried_pixels(eval_set))
    assert metrics["psnr_one_step"] == mean_metric(psnr_capped, true, batch_to_uint8(one_step))
    assert metrics["psnr_one_step"] == again["psnr_one_step"]


def test_the_coarse_readout_fit_recovers_how_a_guess_mixes_its_sources():
    """A guess built as 0.5 of the right token, 0.2 of the frame's mean and 0.1 of the history's mean (each as a
    deviation from the average frame) is fitted back to those weights, 0.2 shrinkage and R² 1; a guess that puts the
    right content in the wrong place carries little of the right token and leaves most of itself unexplained."""
    torch.manual_seed(0)
    b, k, t, size = 16, 2, 8, 16
    window = torch.rand(b, 3, t, size, size) * 2 - 1  # (B, 3, T, H, W)
    lr_input = window[:, :, :k]  # the queried frames' inputs (the first k frames)
    average = torch.rand(1, 3, 1, size, size) * 0.2
    frame_mean = lr_input.mean(dim=(-2, -1), keepdim=True)
    history_mean = window.mean(dim=2, keepdim=True)
    guess = average + 0.5 * (lr_input - average) + 0.2 * (frame_mean - average) + 0.1 * (history_mean - average)
    fit = coarse_readout_fit(guess, lr_input, window, average, 4)
    assert [round(fit[name], 4) for name in READOUT_SOURCES] == [0.5, 0.2, 0.1] and fit["r2"] > 0.9999
    misplaced = coarse_readout_fit(lr_input.flip(-1).flip(-2), lr_input, window, average, 4)
    assert misplaced["right token"] < 0.3 and misplaced["r2"] < 0.5
    assert coarse_readout_fit(lr_input, lr_input, window, average, 2)["slope"] == pytest.approx(1.0)


def test_a_band_fit_sees_which_octave_of_the_input_a_guess_copies():
    """A guess with the input's content up to 4×4, half its 4→8 octave and nothing finer: slope 1 up to 4×4, slope
    0.5 with R² 1 and a quarter of the energy at 8, no energy at 16; odd sizes are refused."""
    torch.manual_seed(0)
    lr_input = torch.rand(4, 3, 2, 16, 16) * 2 - 1  # (B, 3, k, H, W)
    frames = lr_input.transpose(1, 2).reshape(-1, 3, 16, 16)

    def up(size: int) -> torch.Tensor:  # the input area-averaged to size×size, back at 16×16 (nearest)
        return F.interpolate(F.adaptive_avg_pool2d(frames, size), size=16, mode="nearest")

    guess = (up(4) + 0.5 * (up(8) - up(4))).reshape(4, 2, 3, 16, 16).transpose(1, 2)
    fits = {s: band_fit(guess, lr_input, s) for s in (2, 4, 8, 16)}
    assert fits[2]["slope"] == pytest.approx(1.0) and fits[4]["slope"] == pytest.approx(1.0)
    assert fits[8]["slope"] == pytest.approx(0.5) and fits[8]["r2"] == pytest.approx(1.0)
    assert fits[8]["energy"] == pytest.approx(0.25) and fits[16]["energy"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="even size"):
        band_fit(guess, lr_input, 3)
