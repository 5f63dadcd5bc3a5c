"""``demo``, ``studio`` and ``study``: the end-to-end programs built on the library (the embedded demo, the local
web page, the blind A/B study)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tinyhistory.cli.arguments import HELP_FORMAT, positive_int


def _cmd_demo(args: argparse.Namespace) -> int:
    from tinyhistory.reproduce.demo import run_demo

    run_demo(
        Path(args.out),
        from_scratch=args.from_scratch,
        checkpoints=args.checkpoints,
        finetune_steps=args.finetune_steps,
        stage2=not args.no_stage2,
        sample_steps=args.sample_steps,
        cache=args.cache,
        preset=args.preset,
    )
    return 0


def _cmd_studio(args: argparse.Namespace) -> int:
    from tinyhistory.studio import serve

    return serve(
        checkpoint=args.checkpoint,
        preset=args.preset,
        model_path=args.model,
        host=args.host,
        port=args.port,
        out=args.out,
        max_upload_mb=args.max_upload_mb,
        offload=args.offload,
        overrides=list(args.set or []),
    )


def _cmd_study(args: argparse.Namespace) -> int:
    """A blind A/B study of generated videos: ``new`` (make/finish), ``serve`` (the raters' page), ``report``."""
    if args.study_command == "new":
        from tinyhistory.study.layout import create_study

        study = create_study(
            args.out, args.system, args.storyboard, args.seed, args.history, args.steps, not args.no_progress
        )
        print(f"[study] {study.root}: {len(study.videos)} videos of {len(study.systems)} systems, all registered")
        return 0
    if args.study_command == "serve":
        from tinyhistory.study.server import serve

        return serve(args.study, args.host, args.port)
    from tinyhistory.study.report import build_report

    report = build_report(args.study, args.out, args.rounds, args.seed, not args.no_metrics, not args.no_progress)
    for problem in report["problems"]:
        print(f"[study] warning: {problem}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.study) / "report"
    print(f"[study] {report['votes']} votes, {report['raters']} raters: {out / 'report.md'}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``, ``studio`` and ``study`` (with ``new``, ``serve``, ``report``) to the top-level subcommands."""
    demo = subparsers.add_parser("demo", formatter_class=HELP_FORMAT, help="the embedded end-to-end demo (miniature)")
    demo.add_argument("--out", default="demo_out")
    demo.add_argument(
        "--preset", default="miniature", help="the preset the checkpoints were trained with (footage, codec, caption)"
    )
    demo.add_argument("--checkpoints", default=None, help="folder with the committed checkpoints (and stage2/)")
    demo.add_argument("--finetune-steps", type=positive_int, default=40, help="steps of the live fine-tune")
    demo.add_argument("--from-scratch", action="store_true", help="retrain every model (hours on a CPU)")
    demo.add_argument("--no-stage2", action="store_true", help="stop after the stage-I half")
    demo.add_argument(
        "--sample-steps", type=positive_int, default=20, help="Euler steps per generated segment (stage II)"
    )
    demo.add_argument(
        "--cache", default=None, help="train from this `data prepare` cache instead of caching the demo clip"
    )
    demo.set_defaults(func=_cmd_demo)

    st = subparsers.add_parser(
        "studio",
        formatter_class=HELP_FORMAT,
        help="a local web page: storyboard editor + streaming generation (the studio extra)",
    )
    st.add_argument("--preset", default=None, help="check that the checkpoint was trained with this preset")
    st.add_argument(
        "--checkpoint", default=None, help="a stage-II checkpoint folder (default: the demo's miniature model)"
    )
    st.add_argument("--model", default=None, metavar="DIR", help="the base model folder, if not the one trained on")
    st.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    st.add_argument("--port", type=int, default=7860)
    st.add_argument("--out", default="studio_out", help="folder for the runs (one subfolder per run)")
    st.add_argument("--max-upload-mb", type=float, default=2048, help="largest upload accepted (default 2048 MB)")
    st.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the checkpoint's config")
    st.add_argument("--offload", action="store_true", help="diffusers group offload of the DiT (CUDA only)")
    st.set_defaults(func=_cmd_studio)

    sy = subparsers.add_parser(
        "study", formatter_class=HELP_FORMAT, help="blind A/B votes on generated videos and an Elo table with intervals"
    )
    sy_sub = sy.add_subparsers(dest="study_command", required=True)
    sn = sy_sub.add_parser(
        "new", formatter_class=HELP_FORMAT, help="make (or finish: rerun it) a study; generates what checkpoints lack"
    )
    sn.add_argument("--out", required=True, help="the study folder")
    sn.add_argument(
        "--system",
        action="append",
        required=True,
        metavar="NAME=RUN_OR_FOLDER",
        help="a system: a `generate` output folder (STORY.mp4 or STORY.seedS.mp4 for each STORY.json) or a checkpoint",
    )
    sn.add_argument("--storyboard", nargs="+", required=True, help="storyboard JSON files (the same for every system)")
    sn.add_argument("--seed", type=int, nargs="+", default=[0], help="seeds (one video per system, storyboard, seed)")
    sn.add_argument(
        "--history", default=None, help="a video every checkpoint system continues (and metrics compare to)"
    )
    sn.add_argument("--steps", type=positive_int, default=None, help="sampling steps for checkpoint systems")
    sn.add_argument("--no-progress", action="store_true")
    ss = sy_sub.add_parser(
        "serve", formatter_class=HELP_FORMAT, help="the raters' page (votes go to STUDY/votes.jsonl)"
    )
    ss.add_argument("study")
    ss.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1: this machine only)")
    ss.add_argument("--port", type=int, default=7870, help="port (0: any free one)")
    sr = sy_sub.add_parser("report", formatter_class=HELP_FORMAT, help="Elo ratings, intervals, agreement, metrics")
    sr.add_argument("study")
    sr.add_argument("--out", default=None, help="report folder (default STUDY/report)")
    sr.add_argument("--rounds", type=positive_int, default=1000, help="bootstrap rounds for the intervals")
    sr.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    sr.add_argument("--no-metrics", action="store_true", help="skip the automatic metrics")
    sr.add_argument("--no-progress", action="store_true")
    sy.set_defaults(func=_cmd_study)
