"""Make the committed demo clip ``assets/bbb_64px_8fps.mp4`` from Big Buck Bunny.

Source: ``moviepy_10_minutes.zip → resources/bbb.mp4`` inside the PyPI sdist of ``moviepy==2.2.1``
(Big Buck Bunny, © Blender Foundation, CC-BY 3.0). Reproduce with::

    pip download --no-deps --no-binary :all: moviepy==2.2.1 -d /tmp/dl
    tar xzf /tmp/dl/moviepy-2.2.1.tar.gz -C /tmp/dl
    unzip -o /tmp/dl/moviepy-2.2.1/docs/_static/medias/getting_started/moviepy_10_minutes/moviepy_10_minutes.zip \
        '*bbb.mp4' -d /tmp/dl
    python scripts/make_demo_clip.py /tmp/dl/moviepy_10_minutes/resources/bbb.mp4

The clip: 240 s starting at 30 s, 8 fps, centre-cropped square, area-resized to 64×64, H.264 crf 16.

The learned-codec footage ``assets/bbb_128px_8fps.mp4`` (the film from its start to the end credits, 480 s)::

    python scripts/make_demo_clip.py /tmp/dl/moviepy_10_minutes/resources/bbb.mp4 \
        --start 0 --seconds 480 --size 128 --crf 18 --out assets/bbb_128px_8fps.mp4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinyhistory.data.video import decode_video, write_video

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "assets" / "bbb_64px_8fps.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="path to Big Buck Bunny's bbb.mp4")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--start", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--crf", type=int, default=16, help="H.264 quality (lower: larger file)")
    args = parser.parse_args()
    frames = decode_video(args.source, fps=args.fps, size=args.size, start=args.start, duration=args.seconds)
    write_video(frames, args.out, fps=args.fps, crf=args.crf)
    print(f"wrote {args.out}: {frames.shape[0]} frames of {args.size}x{args.size} at {args.fps} fps")


if __name__ == "__main__":
    main()
