"""``data prepare``, ``data inspect`` and ``data frames``: the latent cache that training reads, and the frame
archives (:mod:`tinyhistory.data`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinyhistory.cli.arguments import HELP_FORMAT, MODEL_HELP, model_override, positive_float, positive_int


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from tinyhistory.config import load_config
    from tinyhistory.data.prepare import run_prepare

    cfg = load_config(args.preset, args.config, model_override(args) + list(args.set or []))
    source, out = args.input or cfg.prepare.input, args.out or cfg.prepare.out
    if not source or not out:
        raise ValueError("data prepare needs --input and --out (or prepare.input / prepare.out in the --config TOML)")
    from tinyhistory.inputs import check_outputs_spare_inputs, inputs_of
    from tinyhistory.locks import LOCK_NAME

    names = ("shards", "manifest.jsonl", "report.json", "report.rank0.json", "empty_prompt.safetensors", LOCK_NAME)
    written = [Path(out), *(Path(out) / name for name in names)]
    read = inputs_of([("--input", source)], inside_ok=True)  # (a cache folder beside the videos is not a video)
    read += inputs_of([("model.path (--model)", cfg.model.path), ("codec.path", cfg.codec.path),
                       ("text.path", cfg.text.path)])  # fmt: skip
    check_outputs_spare_inputs("--out", out, written, read)
    return run_prepare(cfg, source, out, args.window_frames, prune=args.prune)


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from tinyhistory.data.cache import inspect_cache

    summary = inspect_cache(args.cache)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['cache']}: {summary['videos']} videos, {summary['windows']} windows, "
            f"{summary['latent_frames']} latent frames, {summary['shots']} storyboard shots"
        )
        for video in summary["per_video"]:
            print(
                f"  {video['source']}: {video['seconds']} s, {video['windows']} windows, latents "
                f"{video['latent_shape']} × {video['latent_frames']} frames, rates {', '.join(video['rates'])}, "
                f"{video['shots']} shots"
            )
        for bad in summary["damaged"]:
            print(f"  DAMAGED {bad['shard']} ({bad['source']}): {bad['reason']}")
        if summary["stale_shards"]:
            print(f"  {len(summary['stale_shards'])} shards on disk outside the manifest (earlier settings)")
    return 1 if summary["damaged"] else 0


def _cmd_data_frames(args: argparse.Namespace) -> int:
    from tinyhistory.data.frames import save_frames
    from tinyhistory.data.video import decode_video

    frames = decode_video(args.video, fps=args.fps, size=args.size)
    save_frames(args.out, frames, args.fps)
    print(f"{args.out}: {frames.shape[0]} frames of {frames.shape[1]}x{frames.shape[2]} at {args.fps:g} fps")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` and its three subcommands to the top-level subcommands."""
    data = subparsers.add_parser("data", formatter_class=HELP_FORMAT, help="data preparation")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    dp = data_sub.add_parser(
        "prepare",
        formatter_class=HELP_FORMAT,
        help="cache latents and text embeddings for training (exit 3: items skipped, some or all)",
    )
    dp.add_argument("--preset", default="tiny")
    dp.add_argument("--model", default=None, metavar="DIR", help=MODEL_HELP)
    dp.add_argument("--config", default=None, help="TOML file overriding the preset (may hold a [prepare] table)")
    dp.add_argument("--set", action="append", metavar="KEY=VALUE")
    dp.add_argument("--input", help="a folder of videos (recursive), a JSONL file or one video (or prepare.input)")
    dp.add_argument("--out", help="the cache folder (or prepare.out)")
    dp.add_argument(
        "--window-frames",
        type=positive_int,
        default=None,
        help="frames per cached window (default: data.window_frames)",
    )
    dp.add_argument(
        "--prune", action="store_true", help="keep only this run's videos in the manifest (lists what it dropped)"
    )
    dp.set_defaults(func=_cmd_data_prepare)

    di = data_sub.add_parser(
        "inspect", formatter_class=HELP_FORMAT, help="what a data-prepare cache holds; exit 1 if a shard is damaged"
    )
    di.add_argument("cache")
    di.add_argument("--json", action="store_true")
    di.set_defaults(func=_cmd_data_inspect)

    df = data_sub.add_parser(
        "frames", formatter_class=HELP_FORMAT, help="decode a video once into a lossless frame archive (*.frames.xz)"
    )
    df.add_argument("video")
    df.add_argument("--fps", type=positive_float, required=True)
    df.add_argument("--size", type=positive_int, default=None, help="square-crop and resize to SIZE (default: native)")
    df.add_argument("--out", required=True, help="archive path ending in .frames.xz")
    df.set_defaults(func=_cmd_data_frames)
