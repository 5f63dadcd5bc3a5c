"""At which spatial scale does a frame-query model stop matching the truth? A diagnostic for issue 13.

The miniature's stage-I models reach ~13.6 dB on held-out frame queries while a 16×16-pixel thumbnail of the truth,
upsampled, scores 22 dB — yet the LR branch alone hands the DiT a 32×32-pixel thumbnail of every frame pair. This
script scores checkpoints on the demo's held-out set (the same windows, queries, masks and noise for all, as
``reproduce table1`` builds it) and, beside the usual PSNR, the PSNR of the sampled and the true frames both
area-averaged to s×s pixels for s = 2 … full size: a model that knows the layout but cannot paint inside a history
token scores high at small s and falls towards the average frame as s grows. The average training frame and the
codec's reconstruction get the same profile, as floor and ceiling, and so does each LR branch's own input (the clean
LR latent of the queried frame's block, decoded and upsampled): what the DiT could reach by copying it — a mean
guess — and the same input with another window's detail added: what a *sample* that reads the input perfectly and
paints its own detail reaches (``eval.frame_query.with_foreign_detail``).

Usage (checkpoints must share the history length and preset; each reads the LR rates it was trained with):

    python scripts/frame_query_scales.py --out DIR proposed=checkpoints/miniature/proposed \\
        no_history=checkpoints/miniature/no_history [--windows 24 --queries 2]

Writes ``DIR/scales.json``, ``DIR/scales.md`` and ``DIR/scales.png`` (the first query of 8 windows: the truth, what
each LR branch hands the DiT — its LR latent decoded and upsampled — and each model's sample and one-step mean
guess). Each model's one-step mean guess (``x0 = ε − v(ε, 1)``) gets a profile too: it is the row to hold against
the LR input, a mean guess as well; the sample against the LR input with another window's detail. Where that mean
guess's coarse picture (2×2 … 16×16 pixels) comes from is fitted too (``eval.frame_query.coarse_readout_fit``): the
share it carries of the right token, of the frame's mean and of the history's mean, the rest shrunk to the average;
and octave by octave (``band_fit``), how much of the input's detail between two scales the guess copies.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tinyhistory.data.windows import clip_from_config, to_uint8
from tinyhistory.eval.figures import grid_image
from tinyhistory.eval.frame_query import (
    READOUT_SOURCES,
    band_fit,
    coarse_readout_fit,
    eval_set_for_clip,
    evaluate_method,
    lr_input_frames,
    psnr_by_scale,
    queried_pixels,
    with_foreign_detail,
)
from tinyhistory.geometry import Rate
from tinyhistory.reproduce.table1 import restrict_to_rates
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model


def labelled_folders(parser: argparse.ArgumentParser, items: list[str]) -> list[tuple[str, Path]]:
    """``LABEL=CHECKPOINT_FOLDER`` arguments as (label, folder) pairs; a malformed one is a usage error."""
    pairs = []
    for item in items:
        label, sep, folder = item.partition("=")
        if not sep or not label or not folder:
            parser.error(f"expected LABEL=CHECKPOINT_FOLDER, got {item!r}")
        pairs.append((label, Path(folder)))
    return pairs


def add_low_noise_arguments(parser: argparse.ArgumentParser) -> None:
    """``--low-noise LABEL=CHECKPOINT`` (repeatable) and ``--boundary``: two-expert sampling for a labelled model,
    as ``tinyhistory generate --low-noise`` does it."""
    parser.add_argument(
        "--low-noise",
        action="append",
        default=[],
        metavar="LABEL=CHECKPOINT",
        help="the model LABEL samples the steps below --boundary with CHECKPOINT's DiT, without history",
    )
    parser.add_argument("--boundary", type=float, default=0.0, help="flow time where --low-noise's experts take over")


def low_noise_experts(parser: argparse.ArgumentParser, args: argparse.Namespace, labels: list[str]) -> dict[str, Path]:
    """The ``--low-noise`` checkpoint of each label that has one; an unknown label or a missing ``--boundary`` is a
    usage error."""
    experts = dict(labelled_folders(parser, args.low_noise))
    unknown = sorted(set(experts) - set(labels))
    if unknown:
        parser.error(f"--low-noise names labels that are not models here: {unknown} (models: {labels})")
    if experts and not 0.0 < args.boundary < 1.0:
        parser.error(f"--low-noise needs --boundary in (0, 1), got {args.boundary}")
    return experts


def expert_settings(label: str, experts: dict[str, Path], boundary: float, model, cfg, settings):
    """The sampling of model ``label``: ``(settings, low-noise expert or None, what to record of it)``; with an
    expert, ``settings`` gets the ``--boundary``."""
    from dataclasses import replace

    from tinyhistory.generate.run import load_low_noise_checkpoint

    if label not in experts:
        return settings, None, {}
    expert = load_low_noise_checkpoint(experts[label], model, cfg)
    return replace(settings, boundary=boundary), expert, {"low_noise": str(experts[label]), "boundary": boundary}


# The fit's scales: at 128 px a 4×4×2 history token covers a 32×32-pixel block, so 2×2 and 4×4 are whole tokens
# (their means), 8×8 and 16×16 the detail inside one (what the LR latent still holds below a token).
FIT_SIZES = (2, 4, 8, 16)


def lr_label(rate: str) -> str:
    return f"LR input {rate}, upsampled"


def cell(text: str) -> str:
    """``text`` as one markdown table cell: a ``|`` in a label would split the row."""
    return text.replace("|", "\\|")


def recent_and_old(per_window: list[dict], frames: int, recent: int) -> dict:
    """Mean PSNR of the queries in the last ``recent`` of ``frames`` history frames and of the older ones."""
    split: dict[str, list[float]] = {"recent": [], "old": []}
    for window in per_window:
        for query, value in zip(window["queries"], window["psnr_per_query"], strict=True):
            split["recent" if query >= frames - recent else "old"].append(value)
    out = {}
    for name, values in split.items():
        out[f"psnr_{name}"] = float(np.mean(values)) if values else float("nan")
        out[f"queries_{name}"] = len(values)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="LABEL=CHECKPOINT_FOLDER")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--queries", type=int, default=2)
    parser.add_argument(
        "--split",
        choices=("heldout", "train"),
        default="heldout",
        help="score on the held-out part (default) or on the training part: the gap between the two measures "
        "how much of a model's score is recall of frames it was trained on rather than reading its history",
    )
    parser.add_argument(
        "--recent-frames",
        type=int,
        default=0,
        help="also report the PSNR of queries in the last N history frames (recent) and of the older ones apart "
        "(issue 24: a tiered history keeps the recent frames at a finer rate)",
    )
    args = parser.parse_args()
    started = time.time()
    pairs = labelled_folders(parser, args.models)

    loaded = [(label, *load_model(folder)) for label, folder in pairs]
    base_cfg = loaded[0][2]
    lengths = {label: cfg.train.history_frames for label, _, cfg in loaded}
    if len(set(lengths.values())) != 1:
        raise SystemExit(f"the checkpoints have different history lengths {lengths}; compare like with like")
    all_rates = sorted({r for _, _, cfg in loaded for r in cfg.history.rates})
    clip = clip_from_config(base_cfg.data)
    split = getattr(clip, args.split)
    eval_set, codec = eval_set_for_clip(split, base_cfg.codec, all_rates, base_cfg.train, args.windows, args.queries)
    text = encode_prompts(base_cfg.text, [base_cfg.text.caption])
    truth = queried_pixels(eval_set)
    size = truth.shape[-1]
    sizes = [s for s in (2, 4, 8, 16, 32, 64, 128, 256) if s < size] + [size]

    b, c, k, h, w = truth.shape
    average = clip.train.mean(dim=1)[None, :, None].expand(b, c, k, h, w)
    recon = codec.decode(codec.encode(truth))
    lr_inputs = {
        lr_label(rate): lr_input_frames(eval_set, i, Rate.parse(rate), codec) for i, rate in enumerate(all_rates)
    }
    results: dict = {
        "history_frames": base_cfg.train.history_frames,
        "split": args.split,
        "windows": args.windows,
        "queries": args.queries,
        "sizes": sizes,
        "references": {
            "average training frame": psnr_by_scale(truth, average, sizes),
            "codec reconstruction": psnr_by_scale(truth, recon, sizes),
        }
        | {label: psnr_by_scale(truth, frames, sizes) for label, frames in lr_inputs.items()}
        | {
            f"{label}, with another window's detail": psnr_by_scale(truth, with_foreign_detail(truth, frames), sizes)
            for label, frames in lr_inputs.items()
            if args.windows > 1
        },
        "models": {},
    }
    samples, mean_guesses = {}, {}
    band_sizes = [s for s in sizes if s % 2 == 0]  # each octave's upper scale (its half is the coarser one)
    for (label, model, cfg), (_, folder) in zip(loaded, pairs, strict=True):
        print(f"[scales] {label}: {folder} ({cfg.history.method}, rates {cfg.history.rates})")
        metrics, sampled, one_step = evaluate_method(
            model, restrict_to_rates(eval_set, all_rates, tuple(cfg.history.rates)), text, codec, one_step_pixels=True
        )
        samples[label] = sampled
        mean_guesses[label] = one_step
        results["models"][label] = {
            "checkpoint": str(folder),
            "method": cfg.history.method,
            "rates": list(cfg.history.rates),
            "heldout_loss": metrics["heldout_loss"],
            "psnr": metrics["psnr"],
            "psnr_one_step": metrics["psnr_one_step"],
            "psnr_by_scale": psnr_by_scale(truth, sampled, sizes),
            "psnr_one_step_by_scale": psnr_by_scale(truth, one_step, sizes),
            "coarse_readout_fit": None,
            "band_fit": None,
        }
        if cfg.history.rates:  # the fits hold the mean guess against its own (first) LR branch's input
            own_input = lr_inputs[lr_label(cfg.history.rates[0])]
            results["models"][label] |= {
                "coarse_readout_fit": {
                    s: coarse_readout_fit(one_step, own_input, eval_set.pixels, average, s) for s in FIT_SIZES
                },
                "band_fit": {s: band_fit(one_step, own_input, s) for s in band_sizes},
            }
        if args.recent_frames:
            results["models"][label] |= recent_and_old(
                metrics["per_window"], base_cfg.train.history_frames, args.recent_frames
            )
    results["seconds"] = round(time.time() - started, 1)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scales.json").write_text(json.dumps(results, indent=2) + "\n")
    loss_name = "held-out loss" if args.split == "heldout" else "loss on these windows"
    windows = "held-out" if args.split == "heldout" else "training"
    header = f"| | {loss_name} | PSNR | one-step PSNR | " + " | ".join(f"{s}×{s}" for s in sizes) + " |"
    lines = [
        f"# PSNR by scale: {args.windows} {windows} windows of {base_cfg.train.history_frames} frames, "
        f"{args.queries} queries each",
        "",
        "Sampled (20 Euler steps) and true frames both area-averaged to s×s pixels before PSNR.",
        "",
        header,
        "|" + "---|" * (4 + len(sizes)),
    ]
    for label, m in results["models"].items():
        cells = " | ".join(f"{m['psnr_by_scale'][s]:.2f}" for s in sizes)
        scores = f"{m['heldout_loss']:.4f} | {m['psnr']:.2f} | {m['psnr_one_step']:.2f}"
        lines.append(f"| {cell(label)} | {scores} | {cells} |")
    for label, m in results["models"].items():  # x0 = ε − v(ε, 1): to hold against the LR input (a mean guess too)
        cells = " | ".join(f"{m['psnr_one_step_by_scale'][s]:.2f}" for s in sizes)
        lines.append(f"| {cell(label)}, one-step mean guess | | | | {cells} |")
    for label, profile in results["references"].items():
        lines.append(f"| {cell(label)} | | | | " + " | ".join(f"{profile[s]:.2f}" for s in sizes) + " |")
    fits = {label: m["coarse_readout_fit"] for label, m in results["models"].items() if m["coarse_readout_fit"]}
    if fits:
        lines += [
            "",
            "Where each one-step mean guess's coarse picture comes from: least squares of (guess − average frame) on "
            "the queried frame's LR input (right token), its spatial mean (frame mean) and the window's mean frame "
            "(history mean), each less the average frame; 1 − their sum is shrinkage toward the average. Slope: the "
            "right token's weight alone; R²: the share of the guess the three explain.",
            "",
            "| | scale | " + " | ".join(READOUT_SOURCES) + " | shrinkage | slope | R² |",
            "|---|---|" + "---|" * (len(READOUT_SOURCES) + 3),
        ]
        for label, by_size in fits.items():
            for size, fit in by_size.items():
                weights = [fit[name] for name in READOUT_SOURCES]
                cells = [f"{v:.2f}" for v in (*weights, 1 - sum(weights), fit["slope"], fit["r2"])]
                lines.append(f"| {cell(label)} | {size}×{size} | " + " | ".join(cells) + " |")
        lines += [
            "",
            "The same mean guesses octave by octave (`band_fit`): the content between s/2×s/2 and s×s pixels of the "
            "guess regressed on the LR input's; slope 1 copies the input's detail in that octave, below 1 flattens it; "
            "R²: the share of the guess's octave that copy explains; energy: the guess's octave energy over the "
            "input's. At 128 px a 4×4×2 token covers 32×32 pixels: the octaves up to 4×4 are between tokens, 8×8 and "
            "16×16 inside one.",
            "",
            "| | " + " | ".join(f"{s // 2}→{s}" for s in band_sizes) + " |",
            "|---|" + "---|" * len(band_sizes),
        ]
        for label, m in results["models"].items():
            if m["band_fit"]:
                bands = m["band_fit"].values()
                cells = [f"{b['slope']:.2f} / {b['r2']:.2f} / {b['energy']:.2f}" for b in bands]
                lines.append(f"| {cell(label)}: slope / R² / energy | " + " | ".join(cells) + " |")
    if args.recent_frames:
        lines += [
            "",
            f"Queries in the last {args.recent_frames} history frames (recent) and before them (old):",
            "",
            "| | recent PSNR | recent queries | old PSNR | old queries |",
            "|---|---|---|---|---|",
        ]
        for label, m in results["models"].items():
            recent, old = f"{m['psnr_recent']:.2f} | {m['queries_recent']}", f"{m['psnr_old']:.2f} | {m['queries_old']}"
            lines.append(f"| {cell(label)} | {recent} | {old} |")
    (args.out / "scales.md").write_text("\n".join(lines) + "\n")
    picks = list(range(0, args.windows, max(1, args.windows // 8)))[:8]
    rows = [("ground truth", np.stack([to_uint8(truth[i])[0] for i in picks]))]
    rows += [(label, np.stack([to_uint8(lr_inputs[label][i])[0] for i in picks])) for label in lr_inputs]
    rows += [(label, np.stack([to_uint8(samples[label][i])[0] for i in picks])) for label in samples]
    rows += [
        (f"{label}, one-step", np.stack([to_uint8(mean_guesses[label][i])[0] for i in picks])) for label in mean_guesses
    ]
    grid_image(rows, args.out / "scales.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
