"""Image metrics on uint8 frames. PSNR by its definition; SSIM from scikit-image (Wang et al. 2004, 7×7 window)."""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (or equal-shaped stacks), peak 255. Identical inputs give ``inf``."""
    mse = _mse(reference, test)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


def _mse(reference: np.ndarray, test: np.ndarray) -> float:
    if reference.shape != test.shape:
        raise ValueError(f"PSNR needs equal shapes, got {reference.shape} and {test.shape}")
    return float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))


# The mean squared error of rounding to 8 bits (a uniform error over ±0.5): no uint8 prediction of a real frame is
# meaningfully better, so :func:`psnr_capped` floors the error there (58.9 dB).
QUANTISATION_MSE = 1.0 / 12.0


def psnr_capped(reference: np.ndarray, test: np.ndarray) -> float:
    """:func:`psnr` with the error floored at 8-bit rounding (:data:`QUANTISATION_MSE`), so that an identical frame
    scores 58.9 dB instead of ``inf`` and a mean over frames stays finite: copying a history frame into a static
    stretch of the clip (a title card, black frames) reproduces it exactly. Equal to :func:`psnr` above the floor."""
    return float(10.0 * np.log10(255.0**2 / max(_mse(reference, test), QUANTISATION_MSE)))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM of two uint8 RGB images ``(H, W, 3)``, averaged over channels (scikit-image defaults)."""
    if reference.shape != test.shape:
        raise ValueError(f"SSIM needs equal shapes, got {reference.shape} and {test.shape}")
    return float(structural_similarity(reference, test, channel_axis=-1, data_range=255))


def per_frame(fn, references: np.ndarray, tests: np.ndarray) -> np.ndarray:
    """``fn`` on each aligned pair of frames of two stacks ``(N, H, W, 3)`` → ``(N,)``."""
    return np.array([fn(r, t) for r, t in zip(references, tests, strict=True)])


def mean_metric(fn, references: np.ndarray, tests: np.ndarray) -> float:
    """Average ``fn`` over aligned stacks of frames ``(N, H, W, 3)``."""
    return float(per_frame(fn, references, tests).mean())


def layout_match(generated: np.ndarray, history: np.ndarray, grid: int = 8) -> np.ndarray:
    """Per generated frame ``(N, H, W, 3)`` uint8, the PSNR (:func:`psnr_capped`) of its ``grid × grid`` layout, the
    mean colour of each cell, to the closest layout among the ``history`` frames ``(M, H, W, 3)`` → ``(N,)``.

    Why: a global image feature (the continuation's feature cosine) says "a BBB-like picture" for any texture the
    model paints, while what a memory should keep is *where* things are: the sky above, the trunk at the left. A
    continuation that keeps its scene's layout scores high however its fine texture drifts; one that paints another
    scene scores low. ``H`` and ``W`` must be multiples of ``grid``."""
    if generated.shape[1:] != history.shape[1:] or generated.shape[1] % grid or generated.shape[2] % grid:
        raise ValueError(
            f"layout_match needs frames of one size divisible by grid = {grid}, got {generated.shape[1:]} and "
            f"{history.shape[1:]}"
        )

    def layouts(frames: np.ndarray) -> np.ndarray:  # (N, grid, grid, 3) cell means
        n, h, w, c = frames.shape
        cells = frames.astype(np.float64).reshape(n, grid, h // grid, grid, w // grid, c)
        return cells.mean(axis=(2, 4))

    gen, hist = layouts(generated), layouts(history)
    mse = ((gen[:, None] - hist[None]) ** 2).mean(axis=(2, 3, 4))  # (N, M)
    return 10.0 * np.log10(255.0**2 / np.maximum(mse.min(axis=1), QUANTISATION_MSE))
