"""``generate``: stream a storyboard into a video with a stage-II checkpoint (:mod:`tinyhistory.generate.run`),
after the checks that need no model (limits, ``--out`` against the inputs, a history long enough to be one)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tinyhistory.cli.arguments import HELP_FORMAT, non_negative_float, positive_int


def _cmd_generate(args: argparse.Namespace) -> int:
    from tinyhistory.generate.run import generate

    settings = {
        "sampler": args.sampler,
        "steps": args.steps,
        "guidance": args.guidance,
        "distilled_guidance": args.distilled_guidance,
        "seed": args.seed,
        "segment_frames": args.segment_frames,
        "flow_shift": args.flow_shift,
        "boundary": args.boundary,
    }
    _check_sampling_limits(args)
    from tinyhistory.inputs import check_outputs_spare_inputs, inputs_of

    out = Path(args.out)
    written = [out.with_name(out.name + suffix) for suffix in ("", ".session", ".png", ".segments.jsonl", ".lock",
                                                               ".previous.mp4")]  # fmt: skip
    read = inputs_of([("--checkpoint", args.checkpoint), ("--model", args.model), ("--low-noise", args.low_noise)],
                     inside_ok=True)  # fmt: skip
    files = inputs_of([("--storyboard", args.storyboard), ("--history", args.history), ("--image", args.image)])
    read += [given for given in files if given.path.is_file()]  # (not a file: generate says what is wrong with it)
    check_outputs_spare_inputs("--out", out, written, read)  # (--resume's session is its own output: continued)
    result = generate(
        args.checkpoint,
        args.storyboard,
        args.out,
        preset=args.preset,
        history=args.history,
        image=args.image,
        resume=args.resume,
        settings=settings,
        offload=args.offload,
        progress=not args.no_progress,
        model_path=args.model,
        overrides=list(args.set or []),
        overwrite=args.overwrite,
        low_noise=args.low_noise,
    )
    print(json.dumps(result, indent=2))
    return 0


def _check_sampling_limits(args: argparse.Namespace) -> None:
    """Steps, seed and segment length within what the run can use (:mod:`tinyhistory.limits`), before the model
    loads. The segment's bound needs the storyboard and the checkpoint's fps; where either does not read, ``generate``
    says why in its own words."""
    from tinyhistory.limits import check_sampling_steps, check_seed, check_segment_frames

    check_sampling_steps(args.steps)
    check_seed(args.seed)
    if args.segment_frames is None and args.history is None:
        return
    try:
        from tinyhistory.paths import resolve_path
        from tinyhistory.text.storyboard import Storyboard
        from tinyhistory.train.checkpoint import read_config

        story = Storyboard.load(resolve_path(args.storyboard))
        cfg = read_config(resolve_path(args.checkpoint))
    except (OSError, ValueError):
        return
    # (temporal factor 1: pixel frames bound latent frames for every codec, without loading one)
    check_segment_frames(args.segment_frames, story.duration, cfg.data.fps, 1, cfg.train.segment_frames)
    if args.history is not None:
        _check_history_length(resolve_path(args.history), cfg)


# Pixel frames per latent frame of each codec kind, and whether the first frame is a latent frame of its own (the
# causal VAEs: 1 + 4k frames); a kind not listed is not checked here.
_TEMPORAL = {"pixel": (1, False), "learned": (1, False), "wan": (4, True), "hunyuan": (4, True), "ltx": (8, True)}


def _check_history_length(history: Path, cfg) -> None:
    """A ``--history`` shorter than one history block (the encoders' temporal rate, in latent frames) gives the model
    no history at all: the run would go on as if none was given. An error instead, naming the lengths."""
    from tinyhistory.data.video import count_video_frames
    from tinyhistory.geometry import Rate

    if cfg.history.method == "no_history" or cfg.codec.kind not in _TEMPORAL or not history.is_file():
        return
    factor, causal = _TEMPORAL[cfg.codec.kind]
    block = max(Rate.parse(r).t for r in cfg.history.rates)  # latent frames
    try:
        frames = count_video_frames(history, cfg.data.fps)
    except (OSError, ValueError):
        return  # generate names what is wrong with the file
    latent = (1 + (frames - 1) // factor if frames else 0) if causal else frames // factor
    if latent < block:
        needed = 1 + (block - 1) * factor if causal else block * factor
        raise ValueError(
            f"--history {history}: {frames} frame(s) at {cfg.data.fps:g} fps make {latent} latent frame(s), fewer "
            f"than one history block ({block} latent frames, rates {', '.join(cfg.history.rates)}); the model would "
            f"see no history. Give at least {needed} frames ({needed / cfg.data.fps:g} s), or --image for one frame"
        )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``generate`` to the top-level subcommands."""
    ge = subparsers.add_parser(
        "generate",
        formatter_class=HELP_FORMAT,
        help="stream a storyboard into a video, one segment at a time (stage II model)",
    )
    ge.add_argument("--preset", default=None, help="check that the checkpoint was trained with this preset")
    ge.add_argument("--checkpoint", required=True, help="a stage-II checkpoint folder")
    ge.add_argument("--model", default=None, metavar="DIR", help="the base model folder, if not the one trained on")
    ge.add_argument("--storyboard", required=True, help="storyboard JSON (shot times from the start of generation)")
    ge.add_argument("--out", required=True, help="the mp4 to write (also OUT.png, OUT.segments.jsonl, OUT.session)")
    start = ge.add_mutually_exclusive_group()
    start.add_argument("--history", default=None, help="a video to continue (the whole of it is history)")
    start.add_argument("--image", default=None, help="an image to start from")
    start.add_argument("--resume", default=None, help="an OUT.session file to continue")
    ge.add_argument(
        "--sampler", default=None, choices=["euler", "unipc"], help="default: unipc from the model folder, else euler"
    )
    ge.add_argument("--steps", type=positive_int, default=None, help="sampling steps per segment (default 20)")
    ge.add_argument(
        "--guidance",
        type=non_negative_float,
        default=None,
        help="classifier-free guidance scale (1 = off; default 3, HunyuanVideo 1: it is guidance-distilled)",
    )
    ge.add_argument(
        "--distilled-guidance",
        type=non_negative_float,
        default=None,
        help="the embedded guidance of a guidance-distilled DiT (HunyuanVideo; default 6.0, the pipeline's)",
    )
    ge.add_argument("--seed", type=int, default=None, help="default 0")
    ge.add_argument(
        "--segment-frames",
        type=positive_int,
        default=None,
        help="latent frames per segment (default: the preset's 1 s)",
    )
    ge.add_argument(
        "--flow-shift", type=non_negative_float, default=None, help="scheduler time shift (default: the folder's)"
    )
    ge.add_argument(
        "--low-noise",
        default=None,
        metavar="CHECKPOINT",
        help="a checkpoint whose DiT takes the steps below --boundary, without history (Wan 2.2 A14B's two "
        "experts, with a LoRA of yours as the second: the history LoRA trained at t >= boundary, train.min_t)",
    )
    ge.add_argument(
        "--boundary",
        type=non_negative_float,
        default=None,
        help="flow time below which the second expert takes the steps (default: the model folder's, A14B 0.875)",
    )
    ge.add_argument("--set", action="append", metavar="KEY=VALUE", help="override the checkpoint's config")
    ge.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier run at --out (never those of a run still writing there)",
    )
    ge.add_argument("--offload", action="store_true", help="diffusers group offload of the DiT (CUDA only)")
    ge.add_argument("--no-progress", action="store_true")
    ge.set_defaults(func=_cmd_generate)
