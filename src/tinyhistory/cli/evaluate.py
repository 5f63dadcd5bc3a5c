"""``eval lpips``, ``eval consistency`` and ``eval frame-query``: the evaluation tools on files a user already has
(:mod:`tinyhistory.eval`)."""

from __future__ import annotations

import argparse
import json

from tinyhistory.cli.arguments import HELP_FORMAT, positive_float, positive_int


def _cmd_eval_lpips(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from tinyhistory.eval.lpips import LPIPS, uint8_to_lpips_input

    images = []
    for path in (args.ref, args.dist):
        try:
            images.append(np.asarray(Image.open(path).convert("RGB")))
        except (FileNotFoundError, OSError) as exc:
            raise ValueError(f"{path}: cannot read image ({exc})") from None
    if min(images[0].shape[:2]) < 32:  # AlexNet/VGG pool five times; smaller images vanish before the last layer
        raise ValueError(f"{args.ref} is {images[0].shape[:2]}; LPIPS needs images of at least 32x32 pixels")
    if images[0].shape != images[1].shape:
        raise ValueError(
            f"{args.ref} is {images[0].shape[:2]} but {args.dist} is {images[1].shape[:2]}; sizes must match"
        )
    value = LPIPS(args.net)(uint8_to_lpips_input(images[0]), uint8_to_lpips_input(images[1])).item()
    print(f"{value:.4f}")
    return 0


def _cmd_eval_consistency(args: argparse.Namespace) -> int:
    from tinyhistory.data.video import decode_video
    from tinyhistory.eval.consistency import consistency_report, write_report
    from tinyhistory.eval.optional import optional_report

    generated = decode_video(args.video, fps=args.fps, size=args.size)
    history = decode_video(args.history, fps=args.fps, size=args.size)
    report = consistency_report(generated, history)
    report["optional"] = optional_report(generated, args.raft_weights, args.aesthetic_clip, args.aesthetic_head)
    write_report(report, args.out)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_eval_frame_query(args: argparse.Namespace) -> int:
    from tinyhistory.eval.frame_query import frame_query_report

    report = frame_query_report(args.checkpoint, args.data, args.out, args.windows, args.queries, args.seed)
    print(json.dumps({k: v for k, v in report.items() if k != "per_window"}, indent=2))
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` and its three tools to the top-level subcommands."""
    ev = subparsers.add_parser("eval", formatter_class=HELP_FORMAT, help="evaluation tools")
    ev_sub = ev.add_subparsers(dest="eval_command", required=True)
    lp = ev_sub.add_parser(
        "lpips", formatter_class=HELP_FORMAT, help="LPIPS distance between two images (official v0.1 values)"
    )
    lp.add_argument("ref")
    lp.add_argument("dist")
    lp.add_argument("--net", default="alex", choices=["alex", "vgg"])
    lp.set_defaults(func=_cmd_eval_lpips)
    co = ev_sub.add_parser(
        "consistency",
        formatter_class=HELP_FORMAT,
        help="feature, identity and dynamics scores of a video against its history",
    )
    co.add_argument("--video", required=True, help="the generated continuation")
    co.add_argument("--history", required=True, help="the history it continues")
    co.add_argument("--out", required=True, help="folder for consistency.json and consistency.md")
    co.add_argument("--fps", type=positive_float, default=4.0, help="frames per second sampled from both videos")
    co.add_argument(
        "--size", type=positive_int, default=None, help="square-crop and resize to SIZE (default: native frames)"
    )
    co.add_argument("--raft-weights", default=None, help="optional: torchvision RAFT state dict (dynamic degree)")
    co.add_argument("--aesthetic-clip", default=None, help="optional: local CLIP ViT-L/14 folder (LAION aesthetic)")
    co.add_argument("--aesthetic-head", default=None, help="optional: LAION aesthetic MLP head (.pth state dict)")
    co.set_defaults(func=_cmd_eval_consistency)
    fq = ev_sub.add_parser(
        "frame-query", formatter_class=HELP_FORMAT, help="frame-query reconstruction (Table 1 protocol) on any video"
    )
    fq.add_argument("--checkpoint", required=True, help="a checkpoint folder (e.g. checkpoints/miniature/proposed)")
    fq.add_argument("--data", required=True, help="a video file")
    fq.add_argument("--out", required=True)
    fq.add_argument("--windows", type=positive_int, default=24)
    fq.add_argument("--queries", type=positive_int, default=2)
    fq.add_argument("--seed", type=int, default=0)
    fq.set_defaults(func=_cmd_eval_frame_query)
