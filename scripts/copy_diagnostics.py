"""Why does a stage-II model not continue its last frame? Where its mean guess and its attention go, by noise level.

Issue 22: holding the last true frame for the next second scores 19.95 dB on the demo's held-out windows, and every
stage-II miniature model, even the 3-frame sliding window, scores 12–13 dB. Two questions, for one checkpoint on the
teacher-forced next-second windows (:func:`tinyhistory.eval.next_segment.next_segment_set`, the same noise):

* **the mean guess by noise level**: the true next second noised to ``t`` (``x_t = (1 − t)·x0 + t·ε``) and the
  model's clean estimate ``x0 = x_t − t·v``, decoded, PSNR per frame of the segment, with the history and with it
  removed, beside the last frame held. At ``t = 1`` it is the next-second table's one-step column. Where the
  estimate with history is far above the one without, the model reads its history at that noise level;
* **the attention at t = 1** (the first sampling step, where only the context can say what comes next): for every
  block, the share of the first and the last target frame's attention on each key group (the encoder's tokens, each
  sliding-window frame, each target frame) and on the token of each frame at the query's own spatial position: a
  copy reads the newest window frame there, not the target frames, which at t = 1 hold noise.

    python scripts/copy_diagnostics.py --history-frames 24 --out DIR runs/x/final

Writes ``DIR/copy_diagnostics.json`` and ``DIR/copy_diagnostics.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tinyhistory.assemble import build_codec
from tinyhistory.backbones.base import NO_PRODUCER
from tinyhistory.data.windows import batch_to_uint8, clip_from_config
from tinyhistory.eval.metrics import per_frame, psnr_capped
from tinyhistory.eval.next_segment import next_segment_set, window_context
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model

NOISE_LEVELS = (1.0, 0.95, 0.9, 0.8, 0.6, 0.4, 0.2)


def psnr_by_frame(truth: np.ndarray, guess: np.ndarray, windows: int) -> list[float]:
    """Mean PSNR of each segment frame over the windows; both ``(B·segment, H, W, 3)`` uint8."""
    return per_frame(psnr_capped, truth, guess).reshape(windows, -1).mean(0).tolist()


class AttentionProbe:
    """Wraps one block's self-attention processor: recomputes the softmax attention of the first and the last target
    frame's queries (the same projections, norms and RoPE as diffusers' Wan processor) and keeps, per head, the share
    of each key group (the encoder's tokens, then each sliding-window frame, then each target frame) and, for the
    groups on the DiT's token grid, the share of the token at the query's own spatial position; then runs the
    processor unchanged."""

    def __init__(self, processor, encoder_tokens: int, window_frames: int, frame_tokens: int):
        self.processor = processor
        self.encoder_tokens, self.window_frames, self.frame_tokens = encoder_tokens, window_frames, frame_tokens
        self.records: list[dict] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        from tinyhistory.backbones.wan import _rotate

        with torch.no_grad():
            q, key, _ = _get_qkv_projections(attn, hidden_states, None)
            q, key = attn.norm_q(q), attn.norm_k(key)
            q, key = (x.unflatten(2, (attn.heads, -1)) for x in (q, key))  # (B, S, H, Dh)
            q, key = _rotate(q, *rotary_emb), _rotate(key, *rotary_emb)
            e, p = self.encoder_tokens, self.frame_tokens
            first_target = e + self.window_frames * p
            frames = (q.shape[1] - first_target) // p
            record: dict = {
                "key_groups": ["encoder"] * (e > 0) + [f"window {i + 1}" for i in range(self.window_frames)]
            }
            record["key_groups"] += [f"target {i + 1}" for i in range(frames)]
            for name, f in (("first", 0), ("last", frames - 1)):
                rows = q[:, first_target + f * p : first_target + (f + 1) * p]  # (B, P, H, Dh)
                probs = (torch.einsum("bqhd,bkhd->bhqk", rows, key) / q.shape[-1] ** 0.5).softmax(-1)  # (B, H, P, S)
                grid = probs[..., e:].unflatten(-1, (-1, p))  # (B, H, P, frames on the grid, P)
                cell = torch.arange(p)
                same = grid[:, :, cell, :, cell].mean((0, 1))  # (H, grid frames): the key at the query's position
                whole = grid.sum(-1).mean((0, 2))  # (H, grid frames)
                if e:
                    whole = torch.cat([probs[..., :e].sum(-1).mean((0, 2))[:, None], whole], dim=1)
                record[f"{name}_target_frame"] = {"share": whole.tolist(), "same_position": same.tolist()}
            self.records.append(record)
        return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history-frames", type=int, required=True)
    parser.add_argument("--windows", type=int, default=16)
    args = parser.parse_args()

    model, cfg = load_model(args.checkpoint, merge=True)
    model.eval()
    codec = build_codec(cfg.codec)
    clip = clip_from_config(cfg.data)
    segment = cfg.train.segment_frames
    eval_set = next_segment_set(clip.heldout, codec, args.history_frames, segment, args.windows)
    text = encode_prompts(cfg.text, [cfg.text.caption])
    h, b = args.history_frames, args.windows
    context = window_context(model, eval_set, codec)
    x0 = codec.encode(eval_set.pixels[:, :, h:])  # (B, C, segment, h, w)
    noise, txt = eval_set.noise, text.expand(b)
    positions = torch.arange(h, h + segment).expand(b, -1)
    truth = eval_set.truth
    last_held = batch_to_uint8(eval_set.pixels[:, :, h - 1 : h].expand(-1, -1, segment, -1, -1).contiguous())

    result: dict = {
        "checkpoint": str(args.checkpoint),
        "history_frames": h,
        "windows": b,
        "context_tokens": context.num_tokens if context is not None else 0,
        "last_frame_held": psnr_by_frame(truth, last_held, b),
        "mean_guess": {},
    }
    for t in NOISE_LEVELS:
        x_t = (1 - t) * x0 + t * noise
        tt = torch.full((b,), t)
        row = {}
        for mode, ctx in (("history", context), ("removed", None)):
            v = model(x_t, tt, txt, ctx, frame_positions=positions)
            row[mode] = psnr_by_frame(truth, batch_to_uint8(codec.decode((x_t - t * v).float())), b)
        result["mean_guess"][str(t)] = row
        print(f"t={t}: history {np.mean(row['history']):.2f} removed {np.mean(row['removed']):.2f}", flush=True)

    if context is not None:
        frame_tokens = x0.shape[3] * x0.shape[4] // (model.backbone.patch_size[1] * model.backbone.patch_size[2])
        window = (context.sources == NO_PRODUCER)[0] if context.sources is not None else None
        window_tokens = int(window.sum()) if window is not None else 0
        encoder_tokens = context.num_tokens - window_tokens
        blocks = model.backbone.transformer.blocks
        originals = [block.attn1.processor for block in blocks]
        probes = [AttentionProbe(p, encoder_tokens, window_tokens // frame_tokens, frame_tokens) for p in originals]
        for block, probe in zip(blocks, probes, strict=True):
            block.attn1.processor = probe
        try:
            model(noise, torch.ones(b), txt, context, frame_positions=positions)
        finally:
            for block, original in zip(blocks, originals, strict=True):
                block.attn1.processor = original
        result["attention_t1"] = [probe.records[0] for probe in probes]

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "copy_diagnostics.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "copy_diagnostics.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    frames = len(result["last_frame_held"])
    head = "| | " + " | ".join(f"frame {f + 1}" for f in range(frames)) + " | mean |"
    lines = [
        f"# Mean guess by noise level and attention at t = 1: `{result['checkpoint']}`",
        "",
        f"{result['windows']} held-out windows, {result['history_frames']} frames of true history, "
        f"{result['context_tokens']} context tokens. PSNR (dB) of the decoded estimate x0 = x_t − t·v of each "
        "frame of the next second, the true second noised to t with the next-second table's fixed noise.",
        "",
        head,
        "|" + "---|" * (frames + 2),
        "| last frame held | " + " | ".join(f"{x:.2f}" for x in result["last_frame_held"])
        + f" | {np.mean(result['last_frame_held']):.2f} |",
    ]  # fmt: skip
    for t, row in result["mean_guess"].items():
        for mode in ("history", "removed"):
            values = row[mode]
            lines.append(
                f"| t = {t}, {mode} | " + " | ".join(f"{x:.2f}" for x in values) + f" | {np.mean(values):.2f} |"
            )
    if "attention_t1" in result:
        groups = result["attention_t1"][0]["key_groups"]
        grid = [g for g in groups if g != "encoder"]
        lines += [
            "",
            "Attention of the target queries at t = 1 (the first sampling step), in % of each query's attention, "
            "averaged over heads and queries: the share of each key group (encoder tokens, window frames oldest "
            "first, target frames) and, in brackets, of the one token of that frame at the query's own spatial "
            "position.",
            "",
            "| block | queries | " + " | ".join(groups) + " |",
            "|---|---|" + "---|" * len(groups),
        ]
        for i, rec in enumerate(result["attention_t1"]):
            for name in ("first", "last"):
                share = np.mean(rec[f"{name}_target_frame"]["share"], axis=0) * 100
                same = np.mean(rec[f"{name}_target_frame"]["same_position"], axis=0) * 100
                offset = len(groups) - len(grid)
                cells = [f"{share[j]:.1f}" for j in range(offset)]
                cells += [f"{share[offset + j]:.1f} ({same[j]:.1f})" for j in range(len(grid))]
                lines.append(f"| {i} | {name} target frame | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
