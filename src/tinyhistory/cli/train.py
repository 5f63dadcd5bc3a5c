"""``train``: stage I (frame query) or stage II (autoregressive) from a preset, a TOML file and ``--set`` overrides
(:func:`tinyhistory.train.trainer.train`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinyhistory.cli.arguments import HELP_FORMAT, MODEL_HELP, model_override, positive_int


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from tinyhistory.config import load_config
    from tinyhistory.train.trainer import train

    overrides = model_override(args) + list(args.set or [])
    overrides.append(f'train.stage="{args.stage}"')
    if args.method:
        overrides.append(f'history.method="{args.method}"')
    if args.rate:
        overrides.append("history.rates=[" + ",".join(f'"{r}"' for r in args.rate) + "]")
    if args.steps is not None:
        overrides.append(f"train.steps={args.steps}")
    cfg = load_config(args.preset, args.config, overrides)
    _check_train_outputs(cfg, args.out, args.init_from)
    dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.save_dtype]
    summary = train(
        cfg,
        args.out,
        init_from=args.init_from,
        progress=not args.no_progress,
        save_dtype=dtype,
        stop_after=args.stop_after,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _check_train_outputs(cfg, out: str, init_from: str | None) -> None:
    """What ``train`` writes in ``--out`` never is, holds or lies inside what it reads (:mod:`tinyhistory.inputs`)."""
    from tinyhistory.inputs import check_outputs_spare_inputs, inputs_of
    from tinyhistory.locks import LOCK_NAME

    folder = Path(out)
    written = [folder / name for name in ("config.json", "train_log.jsonl", "summary.json", LOCK_NAME, "last",
                                          "last.tmp", "last.old", "final", "final_ema", "snapshots")]  # fmt: skip
    read = [("--init-from", init_from), ("model.path (--model)", cfg.model.path), ("data.cache", cfg.data.cache),
            ("data.video", cfg.data.video), ("codec.path", cfg.codec.path), ("text.path", cfg.text.path),
            ("text.cache", cfg.text.cache), ("backbone.base_transformer", cfg.backbone.base_transformer)]  # fmt: skip
    read += [("data.extra_train_videos", v) for v in cfg.data.extra_train_videos]
    check_outputs_spare_inputs("--out", out, written, inputs_of(read))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` to the top-level subcommands."""
    tr = subparsers.add_parser(
        "train",
        formatter_class=HELP_FORMAT,
        help="train: stage I (frame query) or stage II (autoregressive, --stage ar)",
    )
    tr.add_argument(
        "--stage", default="frame-query", choices=["frame-query", "ar"], help="frame-query (stage I) or ar (stage II)"
    )
    tr.add_argument("--preset", default="tiny", help="tiny, wan2.1-t2v-1.3b, wan2.1-t2v-14b, wan2.2-ti2v-5b, …")
    tr.add_argument("--model", default=None, metavar="DIR", help=MODEL_HELP)
    tr.add_argument("--config", default=None, help="TOML file overriding the preset")
    tr.add_argument("--method", default=None, help="proposed | only_lr | without_lr | large_patchifier | no_history")
    tr.add_argument("--rate", action="append", default=None, help="encoding rate HxWxT (repeat for several)")
    tr.add_argument("--steps", type=positive_int, default=None)
    tr.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.batch_size=4"
    )
    tr.add_argument("--init-from", default=None, help="start from a checkpoint folder's weights")
    tr.add_argument("--save-dtype", default="fp32", choices=["fp32", "fp16", "bf16"], help="dtype of final weights")
    tr.add_argument("--out", required=True, help="run folder (re-running resumes from OUT/last)")
    tr.add_argument(
        "--stop-after", type=positive_int, default=None, help="leave after N steps (checkpointed); rerun resumes"
    )
    tr.add_argument("--no-progress", action="store_true")
    tr.set_defaults(func=_cmd_train)
