"""Exact FLOP counts (torch.utils.flop_counter) of the history producers and the DiT, machine-independent.

    python benchmarks/flops.py            # prints a markdown table; results are recorded in BENCHMARKS.md

1. The tiny preset, per training sample (32-frame history, 2 query frames): DiT forward with and without the
   64 history tokens, and each producer's own cost.
2. The paper's setting for the history encoder alone (Wan 2.2 TI2V-5B geometry: 48-ch latent at 1/16, DiT width
   3072, paper channels 64→128→256→512), 20 s of 480×832 video at 24 fps, counted on the meta device.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tinyhistory.assemble import HistoryDiT
from tinyhistory.config import load_config
from tinyhistory.history import EncoderConfig, HistoryEncoder, LargePatchifier


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@torch.no_grad()
def tiny_rows() -> list[tuple[str, float]]:
    rows = []
    cfg = load_config("tiny")
    text = torch.zeros(1, cfg.text.max_tokens, cfg.backbone.text_dim)
    hr = torch.randn(1, 48, 32, 16, 16)
    lr = torch.randn(1, 48, 16, 4, 4)
    targets = torch.randn(1, 48, 2, 16, 16)
    t = torch.tensor([0.5])
    omega = torch.tensor([[3, 20]])
    for method in ("no_history", "large_patchifier", "proposed"):
        model = HistoryDiT.from_config(load_config("tiny", overrides=[f'history.method="{method}"'])).eval()
        lrs = [lr] * len(model.producers)
        enc = count(lambda m=model, lrs=lrs: m.encode_history(hr, lrs))
        ctx = model.encode_history(hr, lrs)
        dit = count(lambda m=model, c=ctx: m(targets, t, text, c, omega))
        rows.append((f"tiny {method}: history producer", enc / 1e9))
        rows.append((f"tiny {method}: DiT forward (2 query frames + context)", dit / 1e9))
    return rows


def paper_rows() -> list[tuple[str, float]]:
    rows = []
    latent = (1, 48, 120, 30, 52)  # 20 s × 24 fps / 4 = 120 latent frames of 480/16 × 832/16
    lr_latent = (1, 48, 60, 7, 13)  # pixels ÷ (4, 4, 2) through the same VAE
    with torch.device("meta"):
        patch_embed = nn.Conv3d(48, 3072, (1, 2, 2), stride=(1, 2, 2))
        enc = HistoryEncoder(EncoderConfig("4x4x2"), 48, 3072, 2)
        lp = LargePatchifier("4x4x2", patch_embed)
        hr, lr = torch.empty(latent), torch.empty(lr_latent)
        rows.append(("Wan2.2-5B 20 s 480p: proposed encoder 4x4x2", count(lambda: enc(hr, lr, patch_embed)) / 1e9))
        rows.append(("Wan2.2-5B 20 s 480p: Large Patchifier 4x4x2", count(lambda: lp(hr)) / 1e9))
    return rows


def main() -> None:
    print("| what | GFLOPs (forward) |\n|---|---|")
    for name, gflops in tiny_rows() + paper_rows():
        print(f"| {name} | {gflops:,.3f} |")


if __name__ == "__main__":
    main()
