"""The demo's second half: stage-II models, history measured, and a long continuation of the held-out clip.

1. Load the three committed stage-II checkpoints (``scripts/train_miniature.sh``: the proposed encoder beside the last
   2 frames, a sliding window of 3 frames — about the same tokens — and no history; each on the same frozen base),
   trained for the same number of steps with the same protocol (:data:`STAGE2_PROTOCOL`; ``--from-scratch`` trains
   them from the demo's stage-I checkpoints instead).
2. Teacher-forced next-segment prediction on held-out windows: each model sees the true history and generates the
   next second from the same noise; PSNR/SSIM/features against the true second. The proposed model is scored again
   with its history removed and with another window's: a model that uses its history gets worse.
3. Stream a continuation of the held-out part from a small storyboard with the proposed model and with the
   no-history one, from the same history and noise: ``DIR/continuation.mp4`` and ``DIR/continuation.png`` (last
   history frame, then one frame per second; ``continuation_none.*`` for the no-history model), each scored on how
   well it stays in its history's scene (feature cosine and layout, :func:`~tinyhistory.eval.consistency.scene_scores`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tinyhistory.config import load_config
from tinyhistory.data.video import write_video
from tinyhistory.data.windows import to_uint8
from tinyhistory.eval.consistency import LAYOUT_GRID, scene_scores
from tinyhistory.eval.long_range import listing_table, long_range_windows
from tinyhistory.eval.next_segment import NextSegmentSet, evaluate_next_segment, next_segment_set
from tinyhistory.generate.run import contact_sheet, session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.paths import PROJECT_ROOT
from tinyhistory.text.cache import encode_prompts
from tinyhistory.text.storyboard import Storyboard
from tinyhistory.train.checkpoint import load_model, read_config, trained_steps
from tinyhistory.train.trainer import train

MODELS = ("proposed", "window", "none")
LABELS = {
    "proposed": "Proposed 4x4x2 encoder + last 2 frames",
    "window": "Sliding window (last 3 frames)",
    "none": "No history",
    "proposed_history_removed": "Proposed model, history removed",
    "proposed_history_foreign": "Proposed model, another window's history",
}
# stage-II model → (stage-I starting point, extra overrides); the same as scripts/train_miniature.sh. The proposed
# model (issue 22's search) reads its encoder beside the last 2 frames uncompressed (the paper's sliding-window
# extension), goes on training the stage-I LoRA that learned to read the encoder (train.carry_lora), and half its
# training steps leave the window out (train.window_dropout), so it must learn to read the encoder; without that it
# predicts from the window alone and ignores its encoder. On a frozen base (train.dit = "lora") a run without
# carry_lora starts a fresh LoRA, so the start contributes only its history encoder (none for no_history).
RECIPES = {
    "proposed": ("proposed", ["history.sliding_window=2", "train.carry_lora=true", "train.window_dropout=0.5"]),
    "window": ("no_history", ["history.sliding_window=3"]),
    "none": ("no_history", []),
}
# Every stage-II model's protocol: Wan's training time shift 5, 3-s windows (split at a random block into up to 2 s
# of history and the next second, as the preset's [stage2.train]), 600 steps.
STAGE2_PROTOCOL = ["train.timestep_shift=5.0", "train.history_frames=24", "train.steps=600"]
STORYBOARD = PROJECT_ROOT / "assets" / "demo_storyboard.json"
HISTORY_FRAMES = 24  # 3 s, as the search scored: the proposed model's 48 encoder + 128 window tokens ≈ the window's 192
WINDOWS = 16
CONTINUATION_HISTORY = 24  # the first 3 s of the held-out part
LONG_RANGE_SECONDS = 8  # held-out seconds scored apart: like the older history, unlike the window


def stage2_folders(
    out: Path,
    ckpt_root: Path,
    stage1: dict[str, Path],
    from_scratch: bool,
    cache: Path,
    preset: str,
    common: list[str] | None = None,
) -> dict[str, Path]:
    """The committed stage-II checkpoints, or (``from_scratch``) the same recipes trained from the demo's cache
    (``common``: the overrides on every config, e.g. naming the codec and base that ``--from-scratch`` trained)."""
    folders = {}
    for name in MODELS:
        if from_scratch:
            start, overrides = RECIPES[name]
            sets = [*STAGE2_PROTOCOL, *(common or []), 'train.stage="ar"', f'data.cache="{cache}"', *overrides]
            cfg = load_config(preset, overrides=sets)
            print(f"[demo] stage II: training {name} from the stage-I {start} model for {cfg.train.steps} steps")
            run = out / "train_stage2" / name
            train(cfg, run, init_from=stage1[start])
            folders[name] = run / "final"
        else:
            folders[name] = ckpt_root / "stage2" / name
            if not (folders[name] / "config.json").is_file():
                raise FileNotFoundError(
                    f"no committed stage-II checkpoint {name!r} in {folders[name]}; run "
                    "`tinyhistory demo --from-scratch` or scripts/train_miniature.sh"
                )
    return folders


def run_stage2(
    out: Path,
    heldout: torch.Tensor,
    folders: dict[str, Path],
    sample_steps: int,
    preset: str,
    common: list[str] | None = None,
) -> dict:
    """Teacher-forced comparison and the continuation; returns the results section (``results["stage2"]``)."""
    base_cfg = load_config(preset, overrides=[*(common or []), 'train.stage="ar"'])
    from tinyhistory.assemble import build_codec
    from tinyhistory.eval.features import MobileNetV2Features

    codec = build_codec(base_cfg.codec)
    text = encode_prompts(base_cfg.text, [base_cfg.text.caption])
    segment = base_cfg.train.segment_frames
    settings = SamplingSettings(steps=sample_steps, guidance=1.0, segment_frames=segment)
    eval_set = next_segment_set(heldout, codec, HISTORY_FRAMES, segment, WINDOWS)
    try:
        features = MobileNetV2Features()
    except FileNotFoundError as exc:
        print(f"[demo] feature consistency left out: {exc}")
        features = None

    results: dict = {
        "protocol": (
            f"teacher-forced next-segment prediction on {WINDOWS} evenly spaced held-out windows: the true "
            f"{HISTORY_FRAMES / base_cfg.data.fps:.0f}-s history, then {segment} generated frames "
            f"({segment / base_cfg.data.fps:g} s) from the same noise for every model ({sample_steps} Euler steps, "
            "no guidance), compared with the true frames."
        ),
        "models": {},
    }
    long_range = long_range_set(heldout, codec, segment, folders["window"], features, base_cfg.data.fps)
    if long_range is not None:
        results["long_range"] = long_range[0]
    for name in MODELS:
        model, cfg = load_model(folders[name], merge=True)
        print(f"[demo] stage II: teacher-forced next segment with {name}")
        metrics, _ = evaluate_next_segment(model, eval_set, text, codec, settings, features=features)
        metrics["steps"] = trained_steps(folders[name])
        results["models"][name] = metrics
        if long_range is not None:
            metrics, _ = evaluate_next_segment(model, long_range[1], text, codec, settings, features=features)
            results["long_range"]["models"][name] = metrics

    # Does the proposed model itself use its history? The same model with the history removed, or another window's.
    model, cfg = load_model(folders["proposed"], merge=True)
    for mode in ("removed", "foreign"):
        print(f"[demo] stage II: proposed model with its history {mode}")
        metrics, _ = evaluate_next_segment(model, eval_set, text, codec, settings, features=features, history=mode)
        metrics["steps"] = results["models"]["proposed"]["steps"]
        results["models"][f"proposed_history_{mode}"] = metrics
    if long_range is not None:
        metrics, _ = evaluate_next_segment(
            model, long_range[1], text, codec, settings, features=features, history="removed"
        )
        results["long_range"]["models"]["proposed_history_removed"] = metrics

    story = Storyboard.load(STORYBOARD)
    history = to_uint8(heldout[:, :CONTINUATION_HISTORY])
    results["continuation"] = {"history_seconds": CONTINUATION_HISTORY / base_cfg.data.fps, "models": {}}
    for name, suffix in (("proposed", ""), ("none", "_none")):  # the same noise: settings.seed
        if name != "proposed":
            model, cfg = load_model(folders[name], merge=True)
        session = GenerationSession(
            model, session_setup(cfg), codec, lambda p, text=cfg.text: encode_prompts(text, p), settings
        )
        session.start_from_video(history)
        print(f"[demo] stage II: {name} streams a {story.duration:g}-s continuation of the held-out clip")
        generated = np.concatenate([frames for _, frames in session.follow_storyboard(story)])
        write_video(generated, out / f"continuation{suffix}.mp4", cfg.data.fps)
        contact_sheet(np.concatenate([history[-1:], generated]), cfg.data.fps, out / f"continuation{suffix}.png")
        scores = scene_scores(generated, history, features, cfg.data.fps) if features is not None else {}
        results["continuation"]["models"][name] = {
            **scores,
            "generated_seconds": len(generated) / cfg.data.fps,
            "segments": [
                {k: r.__dict__[k] for k in ("index", "prompt", "context_tokens", "latency_s")} for r in session.records
            ],
            "video": str(out / f"continuation{suffix}.mp4"),
        }
    return results


def long_range_set(
    heldout: torch.Tensor, codec, segment: int, window_model: Path, features, fps: float
) -> tuple[dict, NextSegmentSet] | None:
    """The held-out seconds that resemble something earlier in the history (:data:`HISTORY_FRAMES`) but not the
    sliding window's last frames (:mod:`tinyhistory.eval.long_range`): where a memory can help and the window cannot.
    None without the feature model or without such seconds. Returns the results section (filled per model later)
    and the set."""
    if features is None:
        return None
    window = read_config(window_model).history.sliding_window
    found = long_range_windows(heldout, codec, HISTORY_FRAMES, segment, window, features, fps, LONG_RANGE_SECONDS)
    if found is None:
        print("[demo] stage II: no long-range seconds in the held-out clip")
    return found


def markdown(section: dict) -> list[str]:
    lines = [
        "",
        "## Stage II: does the history help predict the next second?",
        "",
        section["protocol"],
        "",
        "| model | steps | context tokens | PSNR ↑ | SSIM ↑ | feature cos. to truth ↑ | feature cos. to history ↑ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in (*MODELS, "proposed_history_removed", "proposed_history_foreign"):
        m = section["models"][name]
        lines.append(
            f"| {LABELS[name]} | {m['steps']} | {m['context_tokens']} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
            f"{_fmt(m.get('feature_to_truth'))} | {_fmt(m.get('feature_to_history'))} |"
        )
    if "long_range" in section:
        lr = section["long_range"]
        lines += [
            "",
            "### Long-range seconds: content from the history that the window no longer shows",
            "",
            lr["protocol"] + ".",
            "",
            "| model | PSNR ↑ | feature cos. to truth ↑ |",
            "|---|---|---|",
        ]
        for name, m in lr["models"].items():
            lines.append(f"| {LABELS[name]} | {m['psnr']:.2f} | {_fmt(m.get('feature_to_truth'))} |")
        lines += ["", *listing_table(lr["seconds"])]
    c = section["continuation"]
    lines += [
        "",
        f"### A streamed continuation: {c['history_seconds']:g} s of held-out history, then the storyboard",
        "",
        "Does it stay in the scene of its history? Feature cosine of each generated frame to the history's mean "
        f"(MobileNetV2), and the PSNR of its {LAYOUT_GRID}×{LAYOUT_GRID} layout (cell means) to the closest history "
        "frame's, over the whole "
        "continuation and its first and last seconds (a frozen picture also keeps its layout: look at the frames, "
        "`continuation.png` and `continuation_none.png`).",
        "",
        "| model | seconds | feature cos. to history ↑ (1st s → last s) | layout PSNR ↑ (1st s → last s) | context "
        "tokens (first → last segment) | s per segment |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in c["models"].items():
        segments = m["segments"]
        tokens = f"{segments[0]['context_tokens']} → {segments[-1]['context_tokens']}"
        latency = np.mean([s["latency_s"] for s in segments])
        if "to_history_mean" in m:
            cosine = (
                f"{m['to_history_mean']:.3f} ({m['per_second_to_history_mean'][0]:.3f} → "
                f"{m['per_second_to_history_mean'][-1]:.3f})"
            )
            layout = (
                f"{m['layout_psnr']:.2f} ({m['per_second_layout_psnr'][0]:.2f} → {m['per_second_layout_psnr'][-1]:.2f})"
            )
        else:
            cosine = layout = "n/a"
        lines.append(
            f"| {LABELS[name]} | {m['generated_seconds']:g} | {cosine} | {layout} | {tokens} | {latency:.2f} |"
        )
    return lines


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
