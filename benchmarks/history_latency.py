"""Seconds per generated segment as the history grows: block-causal cache grown incrementally vs rebuilt vs none.

Issue 24 asks for the latency of its incremental cache beside the two things it replaces, side by side in one run.
One block-causal checkpoint (``history.context_attention = "block_causal"``, ``history.kv_cache = true``) drives
three sessions from the same history, prompt, noise seed and sampler:

* **incremental**: the session as shipped: each segment appends only the newest blocks' keys/values to the kept cache;
* **rebuilt**: the kept cache is dropped before each segment (``GenerationSession.forget_cache``), so the whole
  history's keys/values are computed again (what a cache that depends on the prompt, or on later blocks, must do
  every segment);
* **uncached**: no cache at all: every denoising step runs the history through the DiT with the same block-causal
  masks (the backbone's processors stay as trained; only the flag that makes the session and the sampler build a
  cache is off), twice per step with CFG.

All three compute the same function, so their frames must agree (the largest difference is printed); only the time
differs. The sessions alternate segment by segment so that they share the machine's load: on a shared CPU only the
ratios mean anything.

    python benchmarks/history_latency.py runs/miniature/i24/block_causal_ar/final --start-seconds 2 --segments 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tinyhistory.assemble import build_codec
from tinyhistory.data.windows import clip_from_config, to_uint8
from tinyhistory.generate.run import session_setup
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model

MODES = ("incremental", "rebuilt", "uncached")


def open_session(folder: Path, mode: str, history: np.ndarray, steps: int, guidance: float) -> GenerationSession:
    """A session on ``folder``'s model started from ``history`` (uint8 frames), in one of :data:`MODES`."""
    model, cfg = load_model(folder, merge=True)
    backbone = model.backbone
    if not (backbone.block_causal and backbone.kv_cache):
        raise ValueError(f"{folder}: a block-causal checkpoint is needed (history.context_attention = 'block_causal')")
    if mode == "uncached":
        backbone.kv_cache = False  # masks and processors unchanged: the same function, the context run every step
    settings = SamplingSettings(steps=steps, guidance=guidance, segment_frames=cfg.train.segment_frames)
    session = GenerationSession(
        model, session_setup(cfg), build_codec(cfg.codec), lambda p, c=cfg: encode_prompts(c.text, p), settings
    )
    session.start_from_video(history)
    return session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--start-seconds", type=float, default=2.0, help="seconds of held-out video to start from")
    parser.add_argument("--segments", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.manual_seed(0)
    _, cfg = load_model(args.checkpoint)
    clip = clip_from_config(cfg.data)
    history = to_uint8(clip.heldout[:, : round(args.start_seconds * cfg.data.fps)])
    sessions = {mode: open_session(args.checkpoint, mode, history, args.steps, args.guidance) for mode in MODES}
    rows = []
    for _ in range(args.segments):
        row: dict = {"history_s": sessions["incremental"].history_frames / sessions["incremental"].setup.fps}
        frames = {}
        for mode, session in sessions.items():
            if mode == "rebuilt":
                session.forget_cache()  # the next segment computes every block's keys/values again
            started = time.perf_counter()
            frames[mode] = session.generate_segment(cfg.text.caption).astype(np.int16)
            row[f"{mode}_s"] = round(time.perf_counter() - started, 3)
        row["max_frame_difference"] = int(max(np.abs(frames[m] - frames["incremental"]).max() for m in MODES))
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("| history s | incremental s | rebuilt s | uncached s | rebuilt / incremental | uncached / incremental |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        inc = r["incremental_s"]
        print(
            f"| {r['history_s']:.0f} | {inc:.3f} | {r['rebuilt_s']:.3f} | {r['uncached_s']:.3f} | "
            f"{r['rebuilt_s'] / inc:.2f} | {r['uncached_s'] / inc:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
