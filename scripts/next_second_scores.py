"""Teacher-forced next second of several stage-II checkpoints, each with its history and with it removed.

Issue 24's quality table asks what block-causal context attention and tiered rates cost in stage II; issue 22 asks
whether a stage-II model uses its history at all. Both are the demo's teacher-forced protocol
(:mod:`tinyhistory.eval.next_segment`) on the held-out part of the checkpoints' clip: the same windows, the same
noise and the same sampler for every model, each model scored with its true history, with its history removed and
with another window's history (swapped). Beside them, what copying the history reaches (the last frame held, the
last LR input of each of the models' rates held): a model's number read against what its context hands it.

With ``--long-range N`` (the image-feature model installed, ASSETS.md) the models are also scored, with their
history and with it removed, on up to N long-range seconds (:mod:`tinyhistory.eval.long_range`, the demo's choice):
held-out seconds like something in the history outside the last ``--window`` frames and unlike those frames, where a
memory can help and a sliding window cannot. Every row then carries the MobileNetV2 feature cosine to the truth too.
Such a second starts at a cut that nothing in the history announces; ``--long-range-cue 0 1`` scores a second set
whose history ends in the returning shot's first frame (the cue), as a storyboard's shot change would announce it;
``--long-range-recent N`` also scores them with only the last N history frames (the older history, where the shot
was seen before, gone: what the memory adds); ``--long-range-only`` skips the evenly spaced windows.
``--cutaway N`` also scores the evenly spaced windows with a cut-away spliced into each history
(:func:`~tinyhistory.eval.next_segment.cutaway_set`: N frames of another window ending ``--cutaway-cue`` frames before
the target) with the whole history, none and the last ``--long-range-recent`` frames: a held-out long-range second
made to order, where the older history holds the shot the target continues.
``--older N`` also scores the evenly spaced windows with the encoder's tokens of all but the last N history frames
(no window: a ``train.history_gap`` step's view), against the history removed: whether a model reads anything but
its last frames.

    python scripts/next_second_scores.py --out DIR --history-frames 16 \\
        full=runs/i24/s2_full/final block_causal=runs/i24/s2_block_causal/final

Writes ``DIR/next_second.json`` and ``DIR/next_second.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from frame_query_scales import (  # scripts/ is on sys.path when a script runs
    add_low_noise_arguments,
    cell,
    expert_settings,
    labelled_folders,
    low_noise_experts,
)

from tinyhistory.assemble import build_codec
from tinyhistory.data.windows import clip_from_config
from tinyhistory.eval.long_range import listing_table, long_range_windows
from tinyhistory.eval.next_segment import cutaway_set, evaluate_next_segment, next_segment_set, reference_metrics
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
    parser.add_argument("--long-range", type=int, default=0, help="also score up to N long-range seconds")
    parser.add_argument("--window", type=int, default=3, help="the sliding window the long-range seconds avoid")
    parser.add_argument(
        "--long-range-cue", type=int, nargs="+", default=[0], metavar="K",
        help="score a long-range set for each K: the history ends in K frames of the returning shot (default: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--long-range-recent", type=int, default=0, metavar="N",
        help="also score the long-range seconds with only the last N history frames (0: not)",
    )  # fmt: skip
    parser.add_argument("--long-range-only", action="store_true", help="skip the evenly spaced windows")
    parser.add_argument("--cutaway", type=int, default=0, help="also score the windows with an N-frame cut-away")
    parser.add_argument("--cutaway-cue", type=int, default=2, help="frames of the return after the cut-away")
    parser.add_argument(
        "--older", type=int, default=0, metavar="N",
        help="also score the evenly spaced windows without their last N history frames (0: not)",
    )  # fmt: skip
    add_low_noise_arguments(parser)
    args = parser.parse_args()
    started = time.time()
    pairs = labelled_folders(parser, args.models)
    experts = low_noise_experts(parser, args, [label for label, _ in pairs])
    features = None
    if args.long_range or args.cutaway:  # their tables report the feature cosine to the truth
        from tinyhistory.eval.features import MobileNetV2Features

        features = MobileNetV2Features()  # a clear FileNotFoundError when the weights are not installed

    results: dict = {"history_frames": args.history_frames, "windows": args.windows, "models": {}}
    eval_set = codec = text = None
    long_range: dict[str, tuple] = {}  # results key → (section, set), one per cue that found seconds
    rates: dict[str, object] = {}  # every model's rates, for the LR references
    for label, folder in pairs:
        model, cfg = load_model(folder, merge=True)
        if eval_set is None:  # the first checkpoint fixes clip, codec, segment and prompt for all
            codec = build_codec(cfg.codec)
            clip = clip_from_config(cfg.data)
            segment = cfg.train.segment_frames
            eval_set = next_segment_set(clip.heldout, codec, args.history_frames, segment, args.windows)
            text = encode_prompts(cfg.text, [cfg.text.caption])
            plain = SamplingSettings(steps=args.sample_steps, guidance=1.0, segment_frames=segment)
            for cue in args.long_range_cue if args.long_range else ():
                key = long_range_key(cue)
                found = long_range_windows(
                    clip.heldout, codec, args.history_frames, segment, args.window, features, cfg.data.fps,
                    args.long_range, cue=cue,
                )  # fmt: skip
                results[key] = found[0] if found else {"protocol": "no long-range seconds found", "cue_frames": cue}
                if found:
                    found[0]["recent_frames"] = args.long_range_recent
                    long_range[key] = found
            if args.cutaway:
                spliced = cutaway_set(eval_set, args.cutaway, args.cutaway_cue)
                results["cutaway"] = {
                    "protocol": (
                        f"the {args.windows} evenly spaced held-out windows with history frames "
                        f"{args.history_frames - args.cutaway_cue - args.cutaway}–"
                        f"{args.history_frames - args.cutaway_cue - 1} replaced by the same frames of the window "
                        f"{args.windows // 2} places on (a cut away to another part of the clip), the history "
                        f"ending in {args.cutaway_cue} frame(s) of the target's own shot, teacher-forced as above"
                    ),
                    "cue_frames": args.cutaway_cue,
                    "recent_frames": args.long_range_recent,
                    "seconds": [],
                    "models": {},
                }
                long_range["cutaway"] = (results["cutaway"], spliced)
        steps = trained_steps(folder) or trained_steps(folder.parent)  # a final/ from before it carried its log
        row = {"checkpoint": str(folder), "steps": steps, "rates": list(cfg.history.rates)}
        settings, low_noise, expert = expert_settings(label, experts, args.boundary, model, cfg, plain)
        row |= expert
        rates.update({str(p.rate): p.rate for p in model.producers})
        modes = ("true", "removed", "foreign", *(("older",) if args.older else ()))
        for mode in () if args.long_range_only else modes:
            print(f"[next second] {label}: history {mode}", flush=True)
            metrics, _ = evaluate_next_segment(
                model, eval_set, text, codec, settings, features, history=mode, low_noise=low_noise, recent=args.older
            )
            row[mode] = metrics
        results["models"][label] = row
        for key, (section, lr_set) in long_range.items():
            scores = section["models"][label] = {}
            for mode in ("true", "removed", *(("recent",) if args.long_range_recent else ())):
                print(f"[next second] {label}: {key} seconds, history {mode}", flush=True)
                scores[mode], _ = evaluate_next_segment(
                    model, lr_set, text, codec, settings, features, history=mode, low_noise=low_noise,
                    recent=args.long_range_recent,
                )  # fmt: skip
    results["references"] = reference_metrics(eval_set, codec, list(rates.values()))
    results["seconds"] = round(time.time() - started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "next_second.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# Teacher-forced next {eval_set.segment} frames after {args.history_frames} true history frames "
        f"({args.windows} held-out windows, {args.sample_steps} Euler steps, same noise for all)",
        "",
        f"Sampled ({args.sample_steps} Euler steps from the fixed noise) and one-step (the mean guess "
        "x0 = ε − v(ε, 1)) PSNR, each with "
        "the true history, with it removed and with another window's (swapped).",
        "",
        "| | steps | context tokens | PSNR | removed | swapped | Δ removed | Δ swapped | one-step PSNR | removed | "
        "swapped | Δ removed | Δ swapped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    scored = {label: row for label, row in results["models"].items() if "true" in row}  # not --long-range-only
    for label, row in scored.items():
        cells = [label, str(row["steps"]), str(row["true"]["context_tokens"])]
        for key in ("psnr", "psnr_one_step"):
            true, removed, foreign = (row[mode][key] for mode in ("true", "removed", "foreign"))
            cells += [f"{v:.2f}" for v in (true, removed, foreign)]
            cells += [f"{true - removed:+.2f}", f"{true - foreign:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if features is not None:
        lines += [
            "",
            "MobileNetV2 feature cosine of the generated second to the true one:",
            "",
            "| | with history | removed | swapped |",
            "|---|---|---|---|",
        ]
        for label, row in scored.items():
            cells = [f"{row[mode]['feature_to_truth']:.3f}" for mode in ("true", "removed", "foreign")]
            lines.append(f"| {cell(label)} | " + " | ".join(cells) + " |")
    if args.older and scored:
        lines += older_lines(scored, args.older, features is not None)
    lines += ["", "What copying the history reaches (no model):", "", "| reference | PSNR | SSIM |", "|---|---|---|"]
    for name, ref in results["references"].items():
        lines.append(f"| {cell(name)} | {ref['psnr']:.2f} | {ref['ssim']:.3f} |")
    if args.cutaway:
        lines += long_range_lines(results["cutaway"], "A cut-away spliced into the history: the shot returns")
    for cue in args.long_range_cue if args.long_range else ():
        if long_range_key(cue) in long_range:
            lines += long_range_lines(results[long_range_key(cue)])
        else:
            found = f"history {args.history_frames}, window {args.window}, cue {cue}"
            lines += ["", f"No long-range seconds in the held-out part ({found})."]
    (args.out / "next_second.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def long_range_key(cue: int) -> str:
    """The results key of the long-range set with a ``cue``-frame cue (``long_range`` without one, as before)."""
    return "long_range" if cue == 0 else f"long_range_cue{cue}"


def older_lines(scored: dict, gap: int, with_features: bool) -> list[str]:
    """The evenly spaced windows with the older history only (the last ``gap`` frames and the window gone) against
    the whole history and none: a model that reads only its last frames scores as with none."""
    metrics = ("psnr", "psnr_one_step", *(("feature_to_truth",) if with_features else ()))
    names = {"psnr": "PSNR", "psnr_one_step": "one-step PSNR", "feature_to_truth": "feature cos."}
    lines = [
        "",
        f"## The older history alone: all but the last {gap} history frames (encoder tokens, no window)",
        "",
        "Δ: older history less removed; above 0, the model reads history beyond its last frames.",
        "",
        "| | " + " | ".join(f"{names[k]}: whole | older | removed | Δ" for k in metrics) + " |",
        "|---|" + "---|---|---|---|" * len(metrics),
    ]
    for label, row in scored.items():
        cells = []
        for key in metrics:
            whole, older, removed = (row[mode][key] for mode in ("true", "older", "removed"))
            digits = 3 if key == "feature_to_truth" else 2
            cells += [f"{v:.{digits}f}" for v in (whole, older, removed)] + [f"{older - removed:+.{digits}f}"]
        lines.append(f"| {cell(label)} | " + " | ".join(cells) + " |")
    return lines


def long_range_lines(
    section: dict, title: str = "Long-range seconds: content from the history that the window no longer shows"
) -> list[str]:
    """The long-range seconds' table (each model with its history and with it removed) and their listing."""
    cue = section.get("cue_frames", 0)
    lines = [
        "",
        f"## {title}" + (f" (the history ends in a {cue}-frame cue of the returning shot)" if cue else ""),
        "",
        section["protocol"]
        + ". Each model with its whole history, with it removed"
        + (
            f" and with only its last {section['recent_frames']} history frames (recent only: the older history, "
            "where the shot was seen before, gone)"
            if section.get("recent_frames")
            else ""
        )
        + "; Δ: that row less the whole history's.",
        "",
        "| | history | PSNR | Δ | feature cos. to truth | Δ |",
        "|---|---|---|---|---|---|",
    ]
    for label, scores in section["models"].items():
        true = scores["true"]
        for mode, name in (("true", "whole"), ("removed", "removed"), ("recent", "recent only")):
            if mode not in scores:
                continue
            m = scores[mode]
            psnr, cos = m["psnr"], m["feature_to_truth"]
            deltas = (
                ("", "")
                if mode == "true"
                else (f"{psnr - true['psnr']:+.2f}", f"{cos - true['feature_to_truth']:+.3f}")
            )
            lines.append(f"| {cell(label)} | {name} | {psnr:.2f} | {deltas[0]} | {cos:.3f} | {deltas[1]} |")
    return [*lines, *(["", *listing_table(section["seconds"])] if section["seconds"] else [])]


if __name__ == "__main__":
    main()
