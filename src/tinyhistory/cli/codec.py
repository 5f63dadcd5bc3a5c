"""``codec train``: the tiny preset's learned framewise codec (:mod:`tinyhistory.codecs.learned_train`)."""

from __future__ import annotations

import argparse
import json

from tinyhistory.cli.arguments import HELP_FORMAT, non_negative_float, positive_float, positive_int


def _cmd_codec_train(args: argparse.Namespace) -> int:
    from tinyhistory.codecs.learned_train import CodecTrainSettings, train_codec

    settings = CodecTrainSettings(
        video=args.video,
        out=args.out,
        fps=args.fps,
        size=args.size,
        start=args.start,
        seconds=args.seconds,
        heldout_fraction=args.heldout_fraction,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lpips_weight=args.lpips_weight,
        latent_channels=args.latent_channels,
        channels=tuple(args.channels),
        seed=args.seed,
        checkpoint_minutes=args.checkpoint_minutes,
        checkpoint_every=args.checkpoint_every,
    )
    print(json.dumps(train_codec(settings, progress=not args.no_progress), indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``codec`` and ``codec train`` to the top-level subcommands."""
    codec = subparsers.add_parser("codec", formatter_class=HELP_FORMAT, help="the tiny preset's learned codec")
    codec_sub = codec.add_subparsers(dest="codec_command", required=True)
    ct = codec_sub.add_parser(
        "train",
        formatter_class=HELP_FORMAT,
        help="train a framewise 8x autoencoder (L1 + LPIPS) on a video's training part; rerun to resume",
    )
    ct.add_argument("--video", default="assets/bbb_128px_8fps.mp4", help="the footage (its tail is held out)")
    ct.add_argument("--out", default="runs/miniature/codec", help="the run folder; the codec is written there")
    ct.add_argument("--fps", type=positive_float, default=8.0)
    ct.add_argument("--size", type=positive_int, default=128, help="square frames of SIZE pixels")
    ct.add_argument("--start", type=non_negative_float, default=0.0, help="seconds into the video")
    ct.add_argument("--seconds", type=positive_float, default=None, help="how much of it (default: all)")
    ct.add_argument("--heldout-fraction", type=positive_float, default=0.2, help="the held-out tail")
    ct.add_argument("--steps", type=positive_int, default=2000)
    ct.add_argument("--batch-size", type=positive_int, default=16)
    ct.add_argument("--learning-rate", type=positive_float, default=1e-3)
    ct.add_argument("--lpips-weight", type=non_negative_float, default=0.5)
    ct.add_argument("--latent-channels", type=positive_int, default=16)
    ct.add_argument("--channels", type=positive_int, nargs="+", default=[32, 64, 128], help="widths at 1/2, 1/4, 1/8")
    ct.add_argument("--seed", type=int, default=0)
    ct.add_argument("--checkpoint-minutes", type=positive_float, default=10.0)
    ct.add_argument("--checkpoint-every", type=positive_int, default=100, help="steps between checkpoints")
    ct.add_argument("--no-progress", action="store_true")
    ct.set_defaults(func=_cmd_codec_train)
