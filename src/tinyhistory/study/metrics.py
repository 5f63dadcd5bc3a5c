"""The project's automatic metrics on a study's videos, per video (cached by content id) and per system.

The same functions as ``tinyhistory eval consistency`` at its default 4 frames per second: MobileNetV2 feature
cosine to the reference, dlib identity match against the reference's first face, Farneback dynamic degree. The
reference is the study's history video when it has one (``study new --history``: every video continues it); else
the first second of the video itself (how far a video drifts from its own start).
"""

from __future__ import annotations

import json
import math

import numpy as np

from tinyhistory.study.layout import Study, Video

METRIC_FPS = 4.0  # `tinyhistory eval consistency`'s default sampling
# name -> (what it measures, which direction is "better" in words)
METRICS = {
    "feature_consistency": "MobileNetV2 feature cosine to the reference (higher: closer to it)",
    "identity_match": "share of faces matching the reference's first face, dlib L2 < 0.6 (higher: same person)",
    "motion": "mean top-5 % Farneback flow in px (higher: more motion; not better or worse by itself)",
}
CACHE_VERSION = 1


class MetricModels:
    """The networks, loaded once per report."""

    def __init__(self):
        from tinyhistory.eval.features import MobileNetV2Features
        from tinyhistory.eval.identity import FaceEmbedder

        self.features = MobileNetV2Features()
        self.faces = FaceEmbedder()


def video_metrics(study: Study, video: Video, models: MetricModels) -> dict:
    """Scores of one video (see the module doc); cached in ``STUDY/metrics/ID.json``."""
    from tinyhistory.data.video import decode_video
    from tinyhistory.eval.dynamics import dynamic_degree
    from tinyhistory.eval.features import feature_consistency
    from tinyhistory.eval.identity import identity_consistency

    reference_name = study.history or "first second"
    cache = study.root / "metrics" / f"{video.id}.json"
    if cache.is_file():
        try:
            cached = json.loads(cache.read_text())
            if cached.get("version") == CACHE_VERSION and cached.get("reference") == reference_name:
                return cached
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass  # recomputed below
    frames = decode_video(study.path_of(video.id), fps=METRIC_FPS, size=None)  # (T, H, W, 3) uint8
    if study.history:
        reference = decode_video(study.inside(study.history, "history"), fps=METRIC_FPS, size=None)
    else:
        reference = frames[: max(1, round(METRIC_FPS))]
    feats = feature_consistency(models.features(frames), models.features(reference))
    identity = identity_consistency(frames, reference, models.faces)
    motion = dynamic_degree(frames) if len(frames) >= 2 else None
    result = {
        "version": CACHE_VERSION,
        "reference": reference_name,
        "frames": len(frames),
        "feature_consistency": feats["to_history_mean"],
        "feature_best_match": feats["best_match"],
        "identity_match": identity.get("match_fraction"),
        "frames_with_face": identity["frames_with_face"],
        "motion": None if motion is None else motion["mean_top5_flow"],
        "dynamic": None if motion is None else motion["dynamic"],
    }
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps(result, indent=2) + "\n")
    return result


def system_metrics(study: Study, progress: bool = True) -> tuple[dict[str, dict], dict[str, dict]]:
    """(per video id, per system: the mean of each metric over its videos, None where no video has it)."""
    models = MetricModels()
    per_video = {}
    for number, (vid, video) in enumerate(sorted(study.videos.items(), key=lambda kv: kv[1].file), 1):
        if progress:
            print(f"[study] metrics {number}/{len(study.videos)}: {video.file}", flush=True)
        per_video[vid] = video_metrics(study, video, models)
    per_system: dict[str, dict] = {}
    for system in study.systems:
        rows = [per_video[v.id] for v in study.videos.values() if v.system == system]
        per_system[system] = {"videos": len(rows)}
        for name in METRICS:
            values = [r[name] for r in rows if r.get(name) is not None]
            per_system[system][name] = float(np.mean(values)) if values else None
    return per_video, per_system


def rank_agreement(ratings: dict[str, float], metric: dict[str, float | None]) -> dict:
    """Kendall's τ (scipy, τ-b) between the human ratings and a metric over the systems that have both."""
    from scipy.stats import kendalltau

    common = [s for s in ratings if ratings[s] is not None and metric.get(s) is not None]
    if len(common) < 2:
        return {"tau": None, "p_value": None, "systems": len(common), "why": "fewer than 2 systems with both"}
    result = kendalltau([ratings[s] for s in common], [metric[s] for s in common])
    tau, p = float(result.statistic), float(result.pvalue)
    if math.isnan(tau):
        return {"tau": None, "p_value": None, "systems": len(common), "why": "constant over the systems"}
    return {"tau": tau, "p_value": p, "systems": len(common)}
