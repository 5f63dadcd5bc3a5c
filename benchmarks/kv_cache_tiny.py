"""The history KV cache on the tiny preset: its quality cost at equal steps and its speed, side by side on this CPU.

(checkpoints/tiny/ was removed when the demo moved to the miniature, issue 13: `git checkout ee16765 --
checkpoints/tiny` brings back the starting point these commands name.)

    # the two stage-II models: the same recipe and steps, with and without the cache's attention pattern
    tinyhistory train --stage ar --preset tiny --init-from checkpoints/tiny/proposed --set history.kv_cache=false \\
        --set train.steps=300 --out runs/kv_false
    tinyhistory train --stage ar --preset tiny --init-from checkpoints/tiny/proposed --set history.kv_cache=true \\
        --set train.steps=300 --out runs/kv_true
    python benchmarks/kv_cache_tiny.py runs/kv_false/final runs/kv_true/final [--json]

Quality: the runs' held-out flow loss (the trainer's fixed held-out windows), and teacher-forced next-second PSNR on
the demo clip's held-out part (the demo's protocol: the true 11-s history, 8 generated frames from the same noise,
20 Euler steps, no guidance). Speed: one session per model on the same history, seconds per segment as the history
grows — only ratios mean anything on this CPU, and both are measured in the same run, alternating.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tinyhistory.assemble import build_codec
from tinyhistory.config import load_config
from tinyhistory.data.windows import clip_from_config, to_uint8
from tinyhistory.eval.next_segment import evaluate_next_segment, next_segment_set
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.reproduce.demo_stage2 import HISTORY_FRAMES, WINDOWS
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model


def heldout_loss(folder: Path) -> float | None:
    log = folder.parent / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    losses = [r["heldout_loss"] for r in rows if "heldout_loss" in r]
    return losses[-1] if losses else None


def quality(folder: Path, eval_set, text, codec) -> dict:
    model, cfg = load_model(folder, merge=True)
    settings = SamplingSettings(steps=20, guidance=1.0, segment_frames=cfg.train.segment_frames)
    metrics, _ = evaluate_next_segment(model, eval_set, text, codec, settings)
    return {"kv_cache": cfg.history.kv_cache, "heldout_loss": heldout_loss(folder), "psnr": metrics["psnr"]}


def latency(folders: list[Path], history: np.ndarray, segments: int) -> list[dict]:
    """Seconds per segment for each model, alternating segment by segment so both see the same machine load."""
    sessions = []
    for folder in folders:
        model, cfg = load_model(folder, merge=True)
        settings = SamplingSettings(steps=20, guidance=3.0, segment_frames=cfg.train.segment_frames)
        session = GenerationSession(
            model, session_setup(cfg), build_codec(cfg.codec), lambda p, c=cfg: encode_prompts(c.text, p), settings
        )
        session.start_from_video(history)
        sessions.append(session)
    rows = []
    for _ in range(segments):
        row = {}
        for folder, session in zip(folders, sessions, strict=True):
            started = time.perf_counter()
            session.generate_segment("Big Buck Bunny")
            row[str(folder)] = time.perf_counter() - started
            row["history_seconds"] = session.history_frames / session.setup.fps
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("uncached", type=Path)
    parser.add_argument("cached", type=Path)
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = load_config("tiny", overrides=['train.stage="ar"'])
    codec = build_codec(cfg.codec)
    heldout = clip_from_config(cfg.data).heldout
    text = encode_prompts(cfg.text, [cfg.text.caption])
    eval_set = next_segment_set(heldout, codec, HISTORY_FRAMES, cfg.train.segment_frames, WINDOWS)
    report = {"quality": [quality(f, eval_set, text, codec) for f in (args.uncached, args.cached)]}
    rows = latency([args.uncached, args.cached], to_uint8(heldout[:, :16]), args.segments)
    report["latency"] = [
        {
            "history_seconds": r["history_seconds"],
            "uncached_s": round(r[str(args.uncached)], 3),
            "cached_s": round(r[str(args.cached)], 3),
            "ratio": round(r[str(args.cached)] / r[str(args.uncached)], 3),
        }
        for r in rows
    ]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for q in report["quality"]:
        print(f"kv_cache={q['kv_cache']}: held-out loss {q['heldout_loss']}, next-second PSNR {q['psnr']:.2f} dB")
    print("| history (s) | uncached s/segment | cached s/segment | cached / uncached |\n|---|---|---|---|")
    for r in report["latency"]:
        print(f"| {r['history_seconds']:.0f} | {r['uncached_s']} | {r['cached_s']} | {r['ratio']} |")


if __name__ == "__main__":
    main()
