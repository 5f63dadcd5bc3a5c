"""A dynamic-degree score from OpenCV's Farneback optical flow (VBench-like, no weights needed).

VBench's dynamic degree runs RAFT on consecutive frames, takes the mean of the top 5 % flow magnitudes of each pair,
and calls a video dynamic when at least ``round(4 · pairs / 16)`` pairs exceed ``6 · min(H, W) / 256`` pixels.
RAFT's weights are a hub download, so this uses Farneback flow with the same thresholds: absolute values differ
from VBench's, orderings between videos are what it is for.
"""

from __future__ import annotations

import numpy as np


def flow_magnitudes(frames: np.ndarray) -> np.ndarray:
    """Mean of the top 5 % Farneback flow magnitudes for each consecutive pair of ``(T, H, W, 3)`` uint8 frames."""
    import cv2

    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    scores = []
    for a, b in zip(gray[:-1], gray[1:], strict=True):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        magnitude = np.sqrt((flow**2).sum(-1)).ravel()
        top = np.sort(magnitude)[-max(1, magnitude.size // 20) :]
        scores.append(float(top.mean()))
    return np.array(scores)


def dynamic_degree(frames: np.ndarray) -> dict:
    """``{"dynamic": bool, "mean_top5_flow": float, "moving_pairs": int, "required_pairs": int}``."""
    if len(frames) < 2:
        raise ValueError(f"dynamic degree needs at least 2 frames, got {len(frames)}")
    return degree_from_scores(flow_magnitudes(frames), frames.shape[1:3])


def degree_from_scores(scores: np.ndarray, frame_size: tuple[int, int]) -> dict:
    """VBench's decision from per-pair top-5 % flow magnitudes (any flow estimator: Farneback here, or RAFT)."""
    threshold = 6.0 * min(frame_size) / 256.0
    required = max(1, round(4 * len(scores) / 16))
    moving = int((scores > threshold).sum())
    return {
        "dynamic": moving >= required,
        "mean_top5_flow": float(scores.mean()),
        "moving_pairs": moving,
        "required_pairs": required,
        "threshold_px": threshold,
    }
