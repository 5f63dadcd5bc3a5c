"""Teacher-forced next second of several stage-II checkpoints, each with its history and with it removed.

Issue 24's quality table asks what block-causal context attention and tiered rates cost in stage II; issue 22 asks
whether a stage-II model uses its history at all. Both are the demo's teacher-forced protocol
(:mod:`tinyhistory.eval.next_segment`) on the held-out part of the checkpoints' clip: the same windows, the same
noise and the same sampler for every model, each model scored with its true history, with its history removed and
with another window's history (swapped). Beside them, what copying the history reaches (the last frame held, the
last LR input of each of the models' rates held): a model's number read against what its context hands it.

    python scripts/next_second_scores.py --out DIR --history-frames 16 \\
        full=runs/i24/s2_full/final block_causal=runs/i24/s2_block_causal/final

Writes ``DIR/next_second.json`` and ``DIR/next_second.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from frame_query_scales import labelled_folders  # scripts/ is on sys.path when a script runs

from tinyhistory.assemble import build_codec
from tinyhistory.data.windows import clip_from_config
from tinyhistory.eval.next_segment import evaluate_next_segment, next_segment_set, reference_metrics
from tinyhistory.generate.session import SamplingSettings
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model, trained_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="LABEL=CHECKPOINT_FOLDER")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--history-frames", type=int, required=True, help="latent frames of true history shown")
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, default=20)
    args = parser.parse_args()
    started = time.time()
    pairs = labelled_folders(parser, args.models)

    results: dict = {"history_frames": args.history_frames, "windows": args.windows, "models": {}}
    eval_set = codec = text = None
    rates: dict[str, object] = {}  # every model's rates, for the LR references
    for label, folder in pairs:
        model, cfg = load_model(folder, merge=True)
        if eval_set is None:  # the first checkpoint fixes clip, codec, segment and prompt for all
            codec = build_codec(cfg.codec)
            clip = clip_from_config(cfg.data)
            segment = cfg.train.segment_frames
            eval_set = next_segment_set(clip.heldout, codec, args.history_frames, segment, args.windows)
            text = encode_prompts(cfg.text, [cfg.text.caption])
            settings = SamplingSettings(steps=args.sample_steps, guidance=1.0, segment_frames=segment)
        steps = trained_steps(folder) or trained_steps(folder.parent)  # a run's final/ beside its train_log.jsonl
        row = {"checkpoint": str(folder), "steps": steps, "rates": list(cfg.history.rates)}
        rates.update({str(p.rate): p.rate for p in model.producers})
        for mode in ("true", "removed", "foreign"):
            print(f"[next second] {label}: history {mode}", flush=True)
            metrics, _ = evaluate_next_segment(model, eval_set, text, codec, settings, history=mode)
            row[mode] = metrics
        results["models"][label] = row
    results["references"] = reference_metrics(eval_set, codec, list(rates.values()))
    results["seconds"] = round(time.time() - started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "next_second.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# Teacher-forced next {eval_set.segment} frames after {args.history_frames} true history frames "
        f"({args.windows} held-out windows, {args.sample_steps} Euler steps, same noise for all)",
        "",
        "Sampled (20 Euler steps from the fixed noise) and one-step (the mean guess x0 = ε − v(ε, 1)) PSNR, each with "
        "the true history, with it removed and with another window's (swapped).",
        "",
        "| | steps | context tokens | PSNR | removed | swapped | Δ removed | Δ swapped | one-step PSNR | removed | "
        "swapped | Δ removed | Δ swapped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in results["models"].items():
        cells = [label, str(row["steps"]), str(row["true"]["context_tokens"])]
        for key in ("psnr", "psnr_one_step"):
            true, removed, foreign = (row[mode][key] for mode in ("true", "removed", "foreign"))
            cells += [f"{v:.2f}" for v in (true, removed, foreign)]
            cells += [f"{true - removed:+.2f}", f"{true - foreign:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "What copying the history reaches (no model):", "", "| reference | PSNR | SSIM |", "|---|---|---|"]
    for name, ref in results["references"].items():
        lines.append(f"| {name} | {ref['psnr']:.2f} | {ref['ssim']:.3f} |")
    (args.out / "next_second.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
