"""Content consistency of a generated continuation against its history: features, identity, dynamics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyhistory.eval.dynamics import dynamic_degree
from tinyhistory.eval.features import MobileNetV2Features, feature_consistency
from tinyhistory.eval.identity import identity_consistency
from tinyhistory.eval.metrics import layout_match

LAYOUT_GRID = 8  # cells per side of a frame's layout (16×16-pixel cells at the miniature's 128 px)


def consistency_report(generated: np.ndarray, history: np.ndarray) -> dict:
    """All scores for ``(T, H, W, 3)`` uint8 generated frames against ``(T', H', W', 3)`` history frames."""
    features = MobileNetV2Features()
    return {
        "frames": {"generated": len(generated), "history": len(history)},
        "feature_consistency": feature_consistency(features(generated), features(history)),
        "identity_consistency": identity_consistency(generated, history),
        "dynamics": dynamic_degree(generated),
    }


def scene_scores(generated: np.ndarray, history: np.ndarray, features, fps: float, grid: int = LAYOUT_GRID) -> dict:
    """Does a streamed continuation ``(T, H, W, 3)`` uint8 stay in the scene of its ``history`` ``(T', H, W, 3)``?
    Overall and per second of the continuation (a drift away from the scene shows as a falling curve):

    * ``to_history_mean`` / ``best_match``: the cosine of each generated frame's ``features`` (MobileNetV2) to the
      history's mean feature, and the highest to any history frame (:func:`feature_consistency`);
    * ``layout_psnr``: the PSNR of each frame's ``grid × grid`` layout to the closest history frame's
      (:func:`layout_match`): whether the scene keeps its place, which a global feature does not see (texture
      painted anywhere scores well on the cosine) — and which a frozen picture also passes, so read it with the
      frames themselves.
    """
    gen_f, hist_f = features(generated), features(history)
    second = max(1, round(fps))
    per_second = [feature_consistency(gen_f[i : i + second], hist_f) for i in range(0, len(gen_f), second)]
    layout = layout_match(generated, history, grid=grid)  # (T,) dB
    return {
        **feature_consistency(gen_f, hist_f),
        "per_second_to_history_mean": [round(s["to_history_mean"], 4) for s in per_second],
        "layout_psnr": float(layout.mean()),
        "per_second_layout_psnr": [
            round(float(layout[i : i + second].mean()), 3) for i in range(0, len(layout), second)
        ],
    }


def write_report(report: dict, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "consistency.json").write_text(json.dumps(report, indent=2) + "\n")
    f, i, d = report["feature_consistency"], report["identity_consistency"], report["dynamics"]
    lines = [
        "# Consistency of the generated video with its history",
        "",
        "| score | value |",
        "|---|---|",
        f"| feature cosine to the history mean (MobileNetV2) | {f['to_history_mean']:.3f} |",
        f"| feature cosine to the best history frame | {f['best_match']:.3f} |",
    ]
    if not i["reference_face"]:
        lines.append("| identity | no face found in the history |")
    else:
        lines.append(f"| frames with a face | {i['frames_with_face']} / {i['frames']} |")
        if i["frames_with_face"]:
            lines.append(f"| identity match fraction (dlib L2 < 0.6) | {i['match_fraction']:.3f} |")
            lines.append(f"| mean face distance | {i['mean_distance']:.3f} |")
    lines.append(
        f"| dynamic (Farneback, VBench-like) | {d['dynamic']} ({d['moving_pairs']}/{d['required_pairs']} pairs) |"
    )
    lines.append(f"| mean top-5 % flow (px) | {d['mean_top5_flow']:.2f} |")
    for name, value in report.get("optional", {}).items():
        if "missing" in value:
            lines.append(f"| {name} | not computed: {value['missing']} |")
        elif "mean" in value:
            lines.append(f"| {name} | {value['mean']:.3f} |")
        else:
            lines.append(
                f"| {name} | dynamic {value['dynamic']} ({value['moving_pairs']}/{value['required_pairs']} pairs) |"
            )
    (out / "consistency.md").write_text("\n".join(lines) + "\n")
