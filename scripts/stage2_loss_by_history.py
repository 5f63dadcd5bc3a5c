"""Diagnostic: stage-II held-out flow loss as a function of history length, for several checkpoints.

    python scripts/stage2_loss_by_history.py runs/stage2/proposed/last runs/stage2/none/last --splits 0 8 24 48 88

Same held-out windows, splits, noise and timesteps for every checkpoint (the evaluation grid of
``eval/frame_query.loss_timesteps``), so differences are the models'.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from tinyhistory.assemble import build_codec
from tinyhistory.config import load_config
from tinyhistory.data.windows import WindowSampler, clip_from_config
from tinyhistory.eval.frame_query import loss_timesteps
from tinyhistory.flow import add_noise, velocity_target
from tinyhistory.geometry import Rate
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model
from tinyhistory.train.objectives import make_next_segment_batch


@torch.no_grad()
def loss_by_split(model, sampler, text, splits, segment, windows=16, seed=0) -> dict[int, float]:
    starts = sampler.fixed_starts(windows)
    _, hr, lr_all = sampler.window(starts)
    rates = [p.rate for p in model.producers]
    lr = [lr_all[sampler.rates.index(r)] if p.uses_lr else None for r, p in zip(rates, model.producers, strict=True)]
    out = {}
    for split in splits:
        g = torch.Generator().manual_seed(seed)
        batch = make_next_segment_batch(hr, lr, rates, segment, generator=g, split=split)
        context = model.history_context(batch.history, batch.history_lr)
        per_t = []
        for t_value in loss_timesteps():
            t = t_value.expand(hr.shape[0])
            pred = model(
                add_noise(batch.targets, batch.noise, t), t, text.expand(hr.shape[0], -1, -1), context, batch.positions
            )
            per_t.append(F.mse_loss(pred, velocity_target(batch.targets, batch.noise)).item())
        out[split] = sum(per_t) / len(per_t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--splits", type=int, nargs="+", default=[0, 8, 24, 48, 88])
    parser.add_argument("--windows", type=int, default=16)
    args = parser.parse_args()
    cfg = load_config("tiny", overrides=['train.stage="ar"'])
    clip = clip_from_config(cfg.data)
    codec = build_codec(cfg.codec)
    sampler = WindowSampler(clip.heldout, cfg.train.history_frames, codec, [Rate.parse("4x4x2")], [True])
    text = encode_prompts(cfg.text, [cfg.text.caption])
    results = {}
    for path in args.checkpoints:
        model, _ = load_model(path)
        results[path] = loss_by_split(model.eval(), sampler, text, args.splits, cfg.train.segment_frames, args.windows)
        print(path, {k: round(v, 4) for k, v in results[path].items()}, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
