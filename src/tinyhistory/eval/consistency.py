"""Content consistency of a generated continuation against its history: features, identity, dynamics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tinyhistory.eval.dynamics import dynamic_degree
from tinyhistory.eval.features import MobileNetV2Features, feature_consistency
from tinyhistory.eval.identity import identity_consistency


def consistency_report(generated: np.ndarray, history: np.ndarray) -> dict:
    """All scores for ``(T, H, W, 3)`` uint8 generated frames against ``(T', H', W', 3)`` history frames."""
    features = MobileNetV2Features()
    return {
        "frames": {"generated": len(generated), "history": len(history)},
        "feature_consistency": feature_consistency(features(generated), features(history)),
        "identity_consistency": identity_consistency(generated, history),
        "dynamics": dynamic_degree(generated),
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
