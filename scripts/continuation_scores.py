"""Does a streamed continuation stay in the scene of its history? Several stage-II checkpoints, the same starts.

Issue 22's third target: a long continuation of the held-out part should stay in the scene its history shows, more
than a model without history does. For a few evenly spaced starts in the held-out part of the checkpoints' clip, each
model is handed the same true history (``--history-frames`` frames) and streams ``--seconds`` seconds after it with
the preset's caption (the same sampler and seed for every model); every generated frame's MobileNetV2 features are
compared (cosine) with the history's:

* ``to_history_mean``: the cosine to the history's mean feature (``eval.features.feature_consistency``);
* ``best_match``: the highest cosine to any history frame;
* ``layout_psnr``: the PSNR of each generated frame's 8×8 layout (the mean colour of each cell) to the closest
  history frame's (``eval.metrics.layout_match``): whether the scene keeps its place (sky above, trunk at the left),
  which a global feature does not see (a model painting BBB-like texture anywhere scores well on the cosine);
* each per second of the continuation, so a drift away from the scene shows as a falling curve.

The true continuation of the clip is scored the same way (the ``true clip`` row): how much the real footage itself
stays in its history's scene over those seconds (it may cut away). Contact sheets of the first start (the last
history frame, then one frame per second) go beside the tables.

    python scripts/continuation_scores.py --out DIR --history-frames 24 --seconds 20 \\
        "encoder + window=runs/x/final" "window 3=runs/y/final" "no history=checkpoints/miniature/stage2/none"

Writes ``DIR/continuation.json``, ``DIR/continuation.md`` and ``DIR/continuation_<n>.png`` per model.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from frame_query_scales import (  # scripts/ is on sys.path when a script runs
    add_low_noise_arguments,
    cell,
    expert_settings,
    labelled_folders,
    low_noise_experts,
)

from tinyhistory.assemble import build_codec
from tinyhistory.data.windows import clip_from_config, to_uint8
from tinyhistory.eval.consistency import LAYOUT_GRID, scene_scores
from tinyhistory.eval.features import MobileNetV2Features
from tinyhistory.generate.run import contact_sheet, session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model, read_config, trained_steps


def starts_in(frames: int, length: int, count: int) -> list[int]:
    """``count`` evenly spaced starts of ``length``-frame stretches of a ``frames``-frame clip."""
    if frames < length:
        raise ValueError(f"the held-out part has {frames} frames, fewer than history + continuation = {length}")
    return torch.linspace(0, frames - length, count).round().long().tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="LABEL=CHECKPOINT_FOLDER")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history-frames", type=int, required=True, help="true history frames handed to each model")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds streamed after the history")
    parser.add_argument("--starts", type=int, default=3, help="evenly spaced starts in the held-out part")
    parser.add_argument("--sample-steps", type=int, default=20)
    add_low_noise_arguments(parser)
    args = parser.parse_args()
    started = time.time()
    pairs = labelled_folders(parser, args.models)
    experts = low_noise_experts(parser, args, [label for label, _ in pairs])
    features = MobileNetV2Features()  # a clear FileNotFoundError when the weights are not installed
    args.out.mkdir(parents=True, exist_ok=True)

    first_cfg = read_config(pairs[0][1])  # the clip and fps; each model is loaded once, below
    fps = first_cfg.data.fps
    heldout = clip_from_config(first_cfg.data).heldout  # (3, T, H, W) in [-1, 1]
    continuation = round(args.seconds * fps)
    starts = starts_in(heldout.shape[1], args.history_frames + continuation, args.starts)
    histories = [to_uint8(heldout[:, s : s + args.history_frames]) for s in starts]
    truths = [to_uint8(heldout[:, s + args.history_frames : s + args.history_frames + continuation]) for s in starts]
    results: dict = {
        "history_frames": args.history_frames,
        "seconds": args.seconds,
        "starts": starts,
        "models": {},
    }
    true_runs = [scene_scores(truth, history, features, fps) for truth, history in zip(truths, histories, strict=True)]
    results["models"]["true clip"] = _averaged(true_runs)
    for n, (label, folder) in enumerate(pairs):
        model, cfg = load_model(folder, merge=True)
        codec = build_codec(cfg.codec)
        settings = SamplingSettings(steps=args.sample_steps, guidance=1.0, segment_frames=cfg.train.segment_frames)
        settings, low_noise, extra = expert_settings(label, experts, args.boundary, model, cfg, settings)
        runs = []
        for i, history in enumerate(histories):
            print(f"[continuation] {label}: start {i + 1}/{len(histories)}", flush=True)
            session = GenerationSession(
                model, session_setup(cfg), codec, lambda p, c=cfg: encode_prompts(c.text, p), settings,
                low_noise=low_noise,
            )  # fmt: skip
            session.start_from_video(history)
            parts = []
            while sum(len(p) for p in parts) < continuation:
                parts.append(session.generate_segment(cfg.text.caption))
            generated = np.concatenate(parts)[:continuation]
            runs.append(scene_scores(generated, history, features, fps))
            if i == 0:
                sheet = args.out / f"continuation_{n}_{re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')}.png"
                contact_sheet(np.concatenate([history[-1:], generated]), fps, sheet)
        steps = trained_steps(folder) or trained_steps(folder.parent)
        results["models"][label] = {"checkpoint": str(folder), "steps": steps, **extra, **_averaged(runs)}
    results["seconds_taken"] = round(time.time() - started, 1)

    (args.out / "continuation.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# {args.seconds:g}-s continuations after {args.history_frames} true history frames "
        f"({len(starts)} starts in the held-out part: frames {starts}; {args.sample_steps} Euler steps, seed 0)",
        "",
        "MobileNetV2 feature cosine of the generated frames to their history, mean over the starts "
        "(± the spread between starts: half the max − min); per second: cosine to the history's mean feature. "
        f"Layout: PSNR (dB) of each frame's {LAYOUT_GRID}×{LAYOUT_GRID} cell means to the closest history frame's.",
        "",
        "| | steps | to history mean | best match | per start | layout PSNR | per start | per second (to history mean) "
        "| per second (layout PSNR) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in results["models"].items():
        curve = " ".join(f"{v:.2f}" for v in row["per_second_to_history_mean"])
        layout_curve = " ".join(f"{v:.1f}" for v in row["per_second_layout_psnr"])
        lines.append(
            f"| {cell(label)} | {row.get('steps', '')} "
            f"| {row['to_history_mean']:.3f} ± {row['to_history_mean_spread']:.3f} "
            f"| {row['best_match']:.3f} ± {row['best_match_spread']:.3f} "
            f"| {' / '.join(f'{v:.3f}' for v in row['to_history_mean_per_start'])} "
            f"| {row['layout_psnr']:.2f} ± {row['layout_psnr_spread']:.2f} "
            f"| {' / '.join(f'{v:.2f}' for v in row['layout_psnr_per_start'])} | {curve} | {layout_curve} |"
        )
    (args.out / "continuation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _averaged(runs: list[dict]) -> dict:
    """The mean of each score over the starts, with half the range as the spread, and the mean per-second curve."""
    row = {}
    for key in ("to_history_mean", "best_match", "layout_psnr"):
        values = [r[key] for r in runs]
        row[key] = float(np.mean(values))
        row[f"{key}_spread"] = float((max(values) - min(values)) / 2)
        row[f"{key}_per_start"] = [round(v, 4) for v in values]
    for key in ("per_second_to_history_mean", "per_second_layout_psnr"):
        row[key] = [round(float(v), 4) for v in np.array([r[key] for r in runs]).mean(0)]
    return row


if __name__ == "__main__":
    main()
