"""Frame decoding: PyAV's ``VideoFrame.to_image`` per frame against one reused ``VideoReformatter`` (CPU ratio).

    python benchmarks/decode_convert.py [--frames 1500] [--repeats 3] [--video assets/bbb_128px_8fps.mp4]

``tinyhistory.data.video.iter_video_frames`` converts every decoded frame to RGB. ``to_image`` builds a fresh
swscale context for each frame; the decoder now keeps one converter for the whole stream. Both arms decode the same
frames of the same file, alternating (A B A B) so that both see the same machine state; decoding alone (no
conversion) is timed too, as the floor. Checks the two arms give the same pixels.
"""

from __future__ import annotations

import argparse
import time

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from tinyhistory.paths import resolve_path


def decode(path: str, frames: int, mode: str) -> tuple[float, list[np.ndarray]]:
    """Seconds to decode (and convert, by ``mode``) the first ``frames`` frames, and a few converted frames."""
    reformatter = VideoReformatter()
    kept = []
    started = time.perf_counter()
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i == frames:
                break
            if mode == "to_image":
                rgb = np.asarray(frame.to_image())
            elif mode == "reused":
                rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
            else:
                continue
            if i % 100 == 0:
                kept.append(rgb)
    return time.perf_counter() - started, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default="assets/bbb_128px_8fps.mp4")
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    path = str(resolve_path(args.video))
    times: dict[str, list[float]] = {"decode only": [], "to_image": [], "reused": []}
    for _ in range(args.repeats):
        for mode in times:
            seconds, kept = decode(path, args.frames, mode)
            times[mode].append(seconds)
            if mode == "to_image":
                reference = kept
            elif mode == "reused":
                assert all(np.array_equal(a, b) for a, b in zip(reference, kept, strict=True)), "pixels differ"
    print(f"{args.frames} frames of {args.video}, {args.repeats} rounds (A B A B), the same pixels in both arms")
    for mode, values in times.items():
        print(f"{mode:>12}: {np.median(values):6.2f} s median, {1e3 * np.median(values) / args.frames:.3f} ms a frame")
    ratios = [a / b for a, b in zip(times["to_image"], times["reused"], strict=True)]
    print(f"to_image / reused, round by round: {', '.join(f'{r:.1f}' for r in ratios)}")


if __name__ == "__main__":
    main()
