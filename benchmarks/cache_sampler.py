"""Batch assembly from a `data prepare` cache vs from the decoded clip, side by side (CPU ratio).

    python benchmarks/cache_sampler.py [--repeats 200]

Caches the demo clip (tiny preset) into a temporary folder, then times ``window(pick(B))`` — the HR and LR latents
of a training batch — for both samplers, alternating them so both see the same machine state. Stage I windows are
32 frames (batch 8), stage II windows 96 frames (batch 4), as in the preset.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from tinyhistory.assemble import build_codec
from tinyhistory.config import load_config
from tinyhistory.data.cache import CacheSampler, run_identity
from tinyhistory.data.prepare import run_prepare
from tinyhistory.data.windows import WindowSampler, clip_from_config
from tinyhistory.geometry import Rate
from tinyhistory.paths import resolve_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    cfg = load_config("tiny")
    rates = [Rate.parse(r) for r in cfg.history.rates]
    clip = clip_from_config(cfg.data)
    with tempfile.TemporaryDirectory() as cache:
        run_prepare(cfg, resolve_path(cfg.data.video), cache)
        print("| stage | frames × batch | cache ms/batch | decoded clip ms/batch | cache / clip |")
        print("|---|---|---|---|---|")
        for stage, frames, batch in (("I", 32, 8), ("II", 96, 4)):
            heldout = cfg.data.heldout_fraction
            expects = run_identity(cfg.codec, cfg.text, cfg.data.fps)
            cached = CacheSampler(Path(cache), frames, rates, [True], heldout, "train", expects)
            decoded = WindowSampler(clip.train, frames, build_codec(cfg.codec), rates, [True])
            seconds = {"cache": 0.0, "clip": 0.0}
            generator = torch.Generator().manual_seed(0)
            for _ in range(args.repeats):
                for name, sampler in (("cache", cached), ("clip", decoded)):
                    t0 = time.perf_counter()
                    sampler.window(sampler.pick(batch, generator))
                    seconds[name] += time.perf_counter() - t0
            ms = {k: 1000 * v / args.repeats for k, v in seconds.items()}
            ratio = ms["cache"] / ms["clip"]
            print(f"| {stage} | {frames} × {batch} | {ms['cache']:.2f} | {ms['clip']:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
