"""Side-by-side CPU cost of one stage-I training step per method (ratios only; absolute CPU times mean little).

    python benchmarks/train_step_ratio.py [STEPS]

Builds the three tiny-preset models, then times STEPS optimizer steps of each, interleaved round-robin in one
process on identical batches (32-frame history, batch 8, |Ω| = 2), so machine noise hits every method alike.
"""

from __future__ import annotations

import sys
import time

import torch

from tinyhistory.assemble import HistoryDiT
from tinyhistory.config import load_config
from tinyhistory.geometry import Rate
from tinyhistory.train.objectives import frame_query_loss, make_frame_query_batch

METHODS = ("no_history", "large_patchifier", "proposed")


def main(steps: int = 10) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    hr = torch.randn(8, 48, 32, 16, 16, generator=g)
    lr = torch.randn(8, 48, 16, 4, 4, generator=g)
    text = torch.randn(8, 64, 384, generator=g)
    batch = make_frame_query_batch(hr, [lr], [Rate(4, 4, 2)], 2, 0.2, 1.0, g, num_queries=2)
    runs = {}
    for method in METHODS:
        model = HistoryDiT.from_config(load_config("tiny", overrides=[f'history.method="{method}"'])).train()
        runs[method] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4), 0.0)
    for step in range(steps + 1):  # step 0 is a warm-up, not timed
        for method, (model, opt, total) in runs.items():
            if method == "no_history":
                batch.history_lr = []
            elif method == "large_patchifier":
                batch.history_lr = [None]
            else:
                batch.history_lr = [lr]
            start = time.perf_counter()
            frame_query_loss(model, batch, text).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            runs[method] = (model, opt, total + (time.perf_counter() - start if step else 0.0))
    base = runs["no_history"][2]
    print("| method | time per step relative to no history |\n|---|---|")
    for method, (_, _, total) in runs.items():
        print(f"| {method} | {total / base:.2f}× |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
