"""MobileNetV2 features (the evaluations' feature model): NCHW against channels-last, side by side (CPU ratio).

    python benchmarks/features_layout.py [--frames 32] [--repeats 3]

``tinyhistory.eval.features.MobileNetV2Features`` runs channels-last; this times its network on the same batch in
both memory layouts, alternating (A B A B), and checks the features agree.
"""

from __future__ import annotations

import argparse
import time

import torch

from tinyhistory.eval.features import MobileNetV2Features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    plain, last = MobileNetV2Features(), MobileNetV2Features()
    plain.to(memory_format=torch.contiguous_format)
    x = torch.randn(args.frames, 3, 224, 224)  # (N, 3, 224, 224), normalised frames
    arms = {"NCHW": (plain, x.contiguous()), "channels-last": (last, x.contiguous(memory_format=torch.channels_last))}
    times: dict[str, list[float]] = {name: [] for name in arms}
    out = {}
    with torch.no_grad():
        for name, (model, batch) in arms.items():  # warm-up
            out[name] = model.features(batch).mean(dim=(2, 3))
        for _ in range(args.repeats):
            for name, (model, batch) in arms.items():
                started = time.perf_counter()
                model.features(batch)
                times[name].append(time.perf_counter() - started)
    diff = (out["NCHW"] - out["channels-last"]).abs().max().item()
    print(f"{args.frames} frames at 224×224, {torch.get_num_threads()} thread(s); max feature difference {diff:.1e}")
    for name, values in times.items():
        print(f"{name:>13}: " + ", ".join(f"{v:.2f}" for v in values) + " s")
    ratios = [a / b for a, b in zip(times["NCHW"], times["channels-last"], strict=True)]
    print("NCHW / channels-last, round by round: " + ", ".join(f"{r:.2f}" for r in ratios))


if __name__ == "__main__":
    main()
