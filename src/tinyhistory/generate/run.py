"""``tinyhistory generate``: a storyboard → an mp4, one segment at a time, with the whole history in context.

    tinyhistory generate --checkpoint checkpoints/miniature/stage2/proposed \\
        --storyboard story.json --out story.mp4 [--history clip.mp4 | --image still.png]

Shot times in the storyboard count from the start of the generated part (the given history comes before it).
Writes ``OUT`` (H.264, the generated part, appended segment by segment as a fragmented mp4 that plays while the run
goes on), ``OUT.png`` (a contact sheet, one frame per second, rewritten per segment), ``OUT.segments.jsonl`` (per
segment: prompt, history length and context tokens, latency; frame counts in latent frames) and ``OUT.session``
(the paused session, saved after every segment: ``--resume OUT.session`` continues it with a longer storyboard).
With a real model folder everything runs in latent time through the VAE's exact streaming encoder and decoder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from tinyhistory.assemble import build_codec
from tinyhistory.backbones.base import Backbone
from tinyhistory.config import RunConfig, apply_overrides, check_generation_overrides
from tinyhistory.data.mp4 import GrowingMp4, whole_fragments
from tinyhistory.data.video import count_video_frames, iter_video_chunks
from tinyhistory.files import WriteError, append_line, repair_jsonl, writing
from tinyhistory.generate.session import (
    GenerationSession,
    SamplingSettings,
    SessionSetup,
    frame_shape,
    sampling_recipe,
)
from tinyhistory.locks import file_lock
from tinyhistory.paths import resolve_path
from tinyhistory.text.cache import PromptEncoder
from tinyhistory.text.storyboard import Storyboard
from tinyhistory.train.checkpoint import load_model


def contact_sheet(frames: np.ndarray, fps: float, path: str | Path, columns: int = 10, tile_height: int = 256) -> None:
    """One frame per second of ``(T, H, W, 3)`` uint8 frames in a grid, each labelled with its time.

    Laid out tight: as many columns as there are pictures (at most ``columns``), so a 2-s video is two tiles wide, not
    a strip of ten with eight blank; tiles ``tile_height`` pixels high at most (a 64-px frame grows by a whole factor,
    nearest-neighbour, so its pixels stay sharp; a 480-px frame shrinks), so a long 480p video is not 16,000 px wide.
    """
    picks = list(range(0, len(frames), max(1, round(fps))))
    if not picks:
        return
    height, width = frames.shape[1:3]
    if height <= tile_height:
        scale = max(1, tile_height // height)
        h, w, resample = height * scale, width * scale, Image.Resampling.NEAREST
    else:
        h, w, resample = tile_height, max(1, round(width * tile_height / height)), Image.Resampling.LANCZOS
    columns = min(columns, len(picks))
    rows = math.ceil(len(picks) / columns)
    gap, label = 2, 14
    sheet = Image.new("RGB", (columns * (w + gap) - gap, rows * (h + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, frame_index in enumerate(picks):
        x, y = (i % columns) * (w + gap), (i // columns) * (h + label)
        sheet.paste(Image.fromarray(frames[frame_index]).resize((w, h), resample), (x, y + label - 2))
        draw.text((x + 2, y), f"{frame_index / fps:.0f} s", fill="black")
    sheet.save(path)


def enable_offload(model, device: torch.device) -> None:
    """diffusers' block-level group offload of the DiT: blocks live on the CPU and visit the GPU one at a time."""
    if device.type != "cuda":
        raise ValueError("--offload moves DiT blocks between the CPU and a CUDA device; no CUDA device is available")
    offload_blocks(model.backbone, device)


def offload_blocks(backbone, device: torch.device, home: str = "cpu") -> None:
    """Group-offload the DiT's blocks (``home`` ⇄ ``device``, one block at a time) and keep the rest on ``device``.

    The adapter calls the DiT's patch embedding, condition embedder, RoPE, ``norm_out`` and ``proj_out`` itself
    (not the transformer's ``forward``, where diffusers' hooks would onload them), so those stay on the device; they
    are a small part of the weights. Each block is called on its own, so the hooks on the blocks do their work.
    """
    from diffusers.hooks import apply_group_offloading

    transformer = backbone.transformer
    apply_group_offloading(
        transformer,
        onload_device=device,
        offload_device=torch.device(home),
        offload_type="block_level",
        num_blocks_per_group=1,
    )
    # diffusers puts everything outside the block lists in a group onloaded by the transformer's own forward, which
    # the adapter never calls: those modules (a small part of the weights) live on the device instead.
    for name, child in transformer.named_children():
        if name not in backbone.block_lists:
            child.to(device)
    for parameter in transformer.parameters(recurse=False):  # scale_shift_table
        parameter.data = parameter.data.to(device)


def session_setup(cfg: RunConfig) -> SessionSetup:
    """What a :class:`GenerationSession` reads of the run's config (its model folder, frame shape, fps, segment length,
    empty prompt and the identity its saved file records), taken here so the session never holds the whole config."""
    height, width = frame_shape(cfg.data)
    return SessionSetup(
        model=cfg.model,
        height=height,
        width=width,
        fps=cfg.data.fps,
        segment_frames=cfg.train.segment_frames,
        text_empty=cfg.text.empty,
        preset=cfg.preset,
        history_method=cfg.history.method,
        history_rates=tuple(cfg.history.rates),
    )


def sampling_settings(
    setup: SessionSetup,
    backbone: Backbone | type[Backbone],
    given: dict,
    saved: SamplingSettings | None,
    resume: str | Path | None,
) -> SamplingSettings:
    """This run's sampling settings: the flags given, else the saved session's (``--resume``), else the defaults
    (the preset's 1-s segment; the model folder's sampler, UniPC for Wan, Euler for HunyuanVideo and without a
    folder; the family's classifier-free guidance, off for guidance-distilled HunyuanVideo). ``setup``: the
    session's values of the run's config (its segment length and model folder); ``backbone``: the family's adapter
    (the model's, or its class), whose pipeline's sampler and guidance are the defaults.

    A resumed session takes new steps, guidance, sampler, flow shift or seed for what comes next (and says so);
    the segment length is fixed by the session (positions and blocks depend on it)."""
    given = {k: v for k, v in given.items() if v is not None}
    if saved is not None:
        if "segment_frames" in given and given["segment_frames"] != saved.segment_frames:
            raise ValueError(
                f"--segment-frames {given['segment_frames']}: {resume} was made with {saved.segment_frames}-frame "
                "segments, which a resumed session keeps"
            )
        changed = {k: v for k, v in given.items() if getattr(saved, k) != v}
        if changed:
            before = ", ".join(f"{k} {getattr(saved, k)} -> {v}" for k, v in changed.items())
            print(f"[generate] resuming {resume} with new settings for the segments to come: {before}")
        return SamplingSettings(**(asdict(saved) | given))
    defaults = {
        "segment_frames": setup.segment_frames,
        "sampler": sampling_recipe(backbone, setup.model).sampler,
        "guidance": backbone.default_guidance,
    }
    return SamplingSettings(**(defaults | given))


def generate(
    checkpoint: str | Path,
    storyboard: str | Path,
    out: str | Path,
    preset: str | None = None,
    history: str | Path | None = None,
    image: str | Path | None = None,
    resume: str | Path | None = None,
    settings: dict | SamplingSettings | None = None,
    offload: bool = False,
    progress: bool = True,
    model_path: str | None = None,
    overrides: list[str] = (),
    overwrite: bool = False,
    low_noise: str | Path | None = None,
) -> dict:
    """Stream ``storyboard`` into ``out`` (see the module docstring). ``settings``: the sampling flags given (None
    for those not given), or whole :class:`SamplingSettings`; ``overrides``: ``section.key=value`` for the
    checkpoint's config (e.g. ``data.height=128``); ``low_noise``: a checkpoint whose DiT takes the steps below
    ``settings``' boundary (:func:`load_low_noise_checkpoint`)."""
    if history is not None and image is not None:
        raise ValueError("give either --history or --image, not both")
    checkpoint, storyboard, history, image, resume, low_noise = (
        resolve_path(p) if p is not None else None for p in (checkpoint, storyboard, history, image, resume, low_noise)
    )
    if low_noise is not None and not low_noise.is_dir():
        raise FileNotFoundError(f"--low-noise: checkpoint folder not found: {low_noise}")
    for flag, path in (("--history", history), ("--image", image), ("--resume", resume)):
        if path is not None and path.is_dir():
            raise ValueError(f"{flag} {path} is a folder; give a file")
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{flag}: file not found: {path}")
    check_out_suffix(Path(out))
    # One writer per --out, taken before looking at what exists there: a running run's files are not "an earlier
    # run" to resume, and --overwrite never deletes them.
    with file_lock(out, "generate"):
        outputs = plan_outputs(Path(out), [checkpoint, storyboard, history, image], resume, overwrite)
        earlier = earlier_video(Path(out), resume)  # (a new --out: the session's own video is copied in first)
        inputs = (checkpoint, storyboard, history, image, resume)
        return _generate(
            *inputs, outputs, preset, settings, offload, progress, model_path, overrides, earlier, low_noise
        )  # fmt: skip


def _generate(
    checkpoint: Path,
    storyboard: Path,
    history: Path | None,
    image: Path | None,
    resume: Path | None,
    outputs: tuple[Path, Path, Path, Path],
    preset: str | None,
    settings: dict | SamplingSettings | None,
    offload: bool,
    progress: bool,
    model_path: str | None,
    overrides: list[str],
    earlier: Path | None = None,
    low_noise: Path | None = None,
) -> dict:
    """:func:`generate` once its outputs are locked and checked. ``earlier``: a resumed session's own video, copied
    into a new ``--out`` (with its segment log) before the continuation (:func:`earlier_video`)."""
    story = Storyboard.load(storyboard)
    model, cfg, codec, encode_text, device = load_for_generation(checkpoint, preset, model_path, offload, overrides)
    saved = GenerationSession.read_settings(resume) if resume is not None else None
    if isinstance(settings, SamplingSettings):
        settings = asdict(settings)
    setup = session_setup(cfg)
    settings = sampling_settings(setup, model.backbone, settings or {}, saved, resume)
    expert = load_low_noise_checkpoint(low_noise, model, cfg, model_path) if low_noise is not None else None

    out, session_path, sheet_path, log_path = outputs
    height, width = frame_shape(cfg.data)
    if resume is not None:
        session = GenerationSession.load(resume, model, setup, codec, encode_text, device, settings, expert)
    else:
        session = GenerationSession(model, setup, codec, encode_text, settings, device, expert)
        if history is not None:
            total = count_video_frames(history, cfg.data.fps)
            chunks = iter_video_chunks(history, cfg.data.fps, (height, width))
            # A long history takes a while to encode: show it.
            bar = tqdm(chunks, total=math.ceil(total / 16), desc="encoding the history", disable=not progress)
            session.start_from_video(bar, total)
        elif image is not None:
            session.start_from_image(decode_image(image, height, width))
    if session.boundary is not None:
        which = low_noise or f"the model folder's {session.recipe.second_expert}/"
        print(f"[generate] steps below t = {session.boundary:g} are taken by {which}, without history")
    if offload and session.low_noise is not None:  # Wan 2.2 A14B's second expert visits the GPU by blocks too
        offload_blocks(session.low_noise, device)
        session.low_noise_offloaded = True
    fps = cfg.data.fps
    segments = session.storyboard_segments(story)  # a resumed session continues where it stopped
    if segments <= 0:
        raise ValueError(f"the storyboard ({story.duration:g} s) is no longer than what was generated already")

    sheet = ContactSheet(fps)
    generated = sum(r.pixel_frames for r in session.records) if resume is not None else 0
    if earlier is not None:
        print(
            f"[generate] --out {out} is new: the {generated} frames {resume.name} made before are copied from "
            f"{earlier} first, then the continuation follows ({earlier} and its session are left as they are)"
        )
        _copy_whole(earlier.with_name(earlier.name + ".segments.jsonl"), log_path, "segment log")
        _copy_whole(earlier, out.with_name(out.name + ".previous.mp4"), "video")  # carried as a killed resume's is
    if resume is not None:  # a run killed after a segment's outputs but before its session: the session decides
        repair_jsonl(log_path, "segment log", keep=lambda r: int(r.get("index", 0)) < len(session.records))
    with _growing_video(out, fps, height, width, resume, sheet, generated) as video, _hint(session_path):
        bar = tqdm(total=segments, desc="segments", unit="seg", disable=not progress)
        for segment, frames in session.follow_storyboard(story):
            video.append(frames)
            sheet.add(frames)
            sheet.save(sheet_path)
            per_latent = codec.temporal_factor / fps
            record = vars(segment) | {"start_s": round((segment.start_frame - session.origin) * per_latent, 3)}
            append_line(log_path, json.dumps(record) + "\n", "segment log")
            with writing(session_path, "session"):
                session.save(session_path)
            bar.set_postfix(context_tokens=segment.context_tokens, latency_s=segment.latency_s)
            bar.update(1)
        bar.close()
        written = video.frames
    return {
        "video": str(out),
        "contact_sheet": str(sheet_path),
        "log": str(log_path),
        "session": str(session_path),
        "generated_frames": written,
        "seconds": written / fps,
    }


@contextmanager
def _hint(session_path: Path) -> Iterator[None]:
    """A failed write during generation says how to go on: the session on disk holds every whole segment."""
    try:
        yield
    except WriteError as exc:
        if session_path.is_file():
            hint = f"free some space, then continue with --resume {session_path}"
        else:
            hint = "free some space, then start again (--overwrite: no segment was saved whole)"
        raise WriteError(f"{exc}; {hint}") from None


def load_for_generation(checkpoint, preset: str | None, model_path: str | None, offload: bool, overrides=()):
    """A stage-II checkpoint ready to generate on this machine's device: ``(model, cfg, codec, encode_text,
    device)`` (the CLI and the studio). ``overrides``: ``section.key=value`` for the checkpoint's config."""
    model, cfg = load_model(checkpoint, merge=True, model_path=model_path)
    if cfg.train.stage != "ar":
        print(
            f"[generate] warning: {checkpoint} was trained for frame query (stage I), not for generation; "
            "continuations will be poor (train stage II with --stage ar --init-from it)"
        )
    if overrides:
        check_generation_overrides(cfg, list(overrides), checkpoint)
        cfg = apply_overrides(cfg, list(overrides))
    if preset is not None and cfg.preset != preset:
        raise ValueError(f"{checkpoint} was trained with preset {cfg.preset!r}, not {preset!r}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if offload:
        model.producers.to(device)
        model.enhancers.to(device)
        enable_offload(model, device)
    else:
        model.to(device)
    # The VAE stays on the device (0.5 GB for Wan 2.1, 2.8 GB for Wan 2.2 in float32): its causal caches live there.
    codec = build_codec(cfg.codec).to(device)
    encode_text = PromptEncoder(cfg.text, device, offload)  # built once; with --offload it waits on the CPU
    return model.eval(), cfg, codec, encode_text, device


def load_low_noise_checkpoint(folder: str | Path, model, cfg: RunConfig, model_path: str | None = None):
    """Another checkpoint's DiT (its LoRA merged) as the second expert of ``model`` (the checkpoint of config
    ``cfg``): it takes the sampling steps below the boundary without history, as Wan 2.2 A14B's stock low-noise
    expert does. The recipe it serves: a LoRA trained at high noise only (``train.min_t``, the boundary) with the
    history, and a checkpoint trained at every noise level (e.g. without history) for the detail below.

    It must read the same latents and prompts: the same codec, text encoder and DiT family and input channels, else a
    ``ValueError`` names what differs. Returned on the CPU in the DiT's dtype (the session moves it)."""
    expert, expert_cfg = load_model(folder, merge=True, model_path=model_path)
    differ = []
    for what, mine, theirs in (
        ("codec", (cfg.codec.kind, cfg.codec.factor), (expert_cfg.codec.kind, expert_cfg.codec.factor)),
        ("text encoder", (cfg.text.kind, cfg.text.max_tokens), (expert_cfg.text.kind, expert_cfg.text.max_tokens)),
        ("empty prompt (text.empty)", cfg.text.empty, expert_cfg.text.empty),
        ("DiT family", type(model.backbone).__name__, type(expert.backbone).__name__),
        ("latent channels", model.backbone.in_channels, expert.backbone.in_channels),
    ):
        if mine != theirs:
            differ.append(f"{what}: {mine!r} here, {theirs!r} there")
    if differ:
        raise ValueError(f"--low-noise {folder} cannot take this model's low-noise steps ({'; '.join(differ)})")
    return expert.backbone.to(model.backbone.patch_embedding.weight.dtype).eval()


def earlier_video(out: Path, resume: Path | None) -> Path | None:
    """Where the frames a resumed session made before come from, decided before any work.

    ``--out`` holding the run (its mp4, or the ``OUT.previous.mp4`` of a resume killed while carrying it over): None,
    the run goes on there. A new ``--out`` (a branch: the same session, another storyboard): the video saved beside
    the session (``X`` for ``X.session``), copied in first, so the new mp4 is whole, as the studio does with an
    uploaded session and its video. Without that video a new ``--out`` would hold only the continuation, which used
    to happen without a word: that is refused, naming the missing video.
    """
    from tinyhistory.generate.session import session_meta

    previous = out.with_name(out.name + ".previous.mp4")
    if resume is None or out.exists() or previous.exists():
        return None
    frames = sum(int(r.get("pixel_frames", 0)) for r in session_meta(resume)["records"])
    if not frames:
        return None  # nothing generated yet (a session saved before its first segment): nothing to carry
    own = resume.with_name(resume.name.removesuffix(".session")) if resume.name.endswith(".session") else None
    if own is not None and own.is_file() and own.resolve() != out.resolve():
        return own
    if own is not None and own.resolve() == out.resolve():
        missing = f"--out {out} (the video saved with it) is missing"
    else:
        missing = f"--out {out} holds no earlier run and {own or 'no video'} is not beside the session"
    raise ValueError(
        f"--resume {resume}: {missing}, so the new video would hold only the continuation, not the {frames} frames "
        "the session made before; give --out the video the session was saved with, or a copy of it"
    )


def _copy_whole(source: Path, target: Path, what: str) -> None:
    """``source`` to ``target`` whole or not at all (a temporary beside it, then a rename: a kill or a full disk never
    leaves a part that reads as the whole); nothing when ``source`` does not exist."""
    import shutil

    if not source.is_file():
        return
    tmp = target.with_name(target.name + ".tmp")
    with writing(target, what):
        try:
            shutil.copyfile(source, tmp)
            tmp.replace(target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def check_out_suffix(out: Path) -> None:
    """``--out`` names the mp4 (its companions are named after it)."""
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: the video is written as an mp4; give a path ending in .mp4")


def plan_outputs(out: Path, inputs: list, resume, overwrite: bool) -> tuple[Path, Path, Path, Path]:
    """``OUT`` (mp4) and its companions ``OUT.session``, ``OUT.png``, ``OUT.segments.jsonl``, checked before any work.

    An output never replaces an input. Without ``--resume`` none of them may exist unless ``--overwrite`` says to
    replace them (then they are removed first, so two runs never mix); with ``--resume`` they are this session's own
    and are continued.
    """
    check_out_suffix(out)
    outputs = (out, out.with_name(out.name + ".session"), out.with_name(out.name + ".png"))
    outputs += (out.with_name(out.name + ".segments.jsonl"),)
    given = {Path(p).resolve() for p in inputs if p is not None}
    for path in outputs:
        if path.resolve() in given:
            raise ValueError(f"--out {out} would write {path}, which is one of this run's inputs; choose another --out")
        if path.is_dir():
            raise ValueError(f"--out {out}: {path} is a folder")
    if resume is None:
        # (a resume killed while carrying the video over leaves the earlier video as OUT.previous.mp4: a run's too)
        existing = [p for p in (*outputs, out.with_name(out.name + ".previous.mp4")) if p.exists()]
        if existing and not overwrite:
            raise ValueError(
                f"{existing[0]} exists (an earlier run): continue it with --resume {outputs[1]}, or replace its "
                "outputs with --overwrite"
            )
        for path in existing:
            path.unlink()
    out.parent.mkdir(parents=True, exist_ok=True)
    return outputs


class _growing_video:
    """The output mp4, appended to per segment. On ``--resume`` the frames already in ``out`` are carried into the
    new file first (decoded and re-encoded piece by piece, never held whole), then generation appends.

    ``generated``: the pixel frames the resumed session has generated. A run killed after a segment's video but before
    its session was saved left that segment in the mp4 too; only the session's frames are carried (it generates that
    segment again), and a fragment cut short by a kill is dropped. A carry-over that was itself killed left the old
    file as ``OUT.previous.mp4``: that one is complete and is carried again."""

    def __init__(self, out: Path, fps: float, height: int, width: int, resume, sheet: ContactSheet, generated=0):
        self.out, self.fps, self.height, self.width, self.resume, self.sheet = out, fps, height, width, resume, sheet
        self.generated = generated

    def __enter__(self) -> GrowingMp4:
        previous = self.out.with_name(self.out.name + ".previous.mp4")
        if self.resume is None or not (previous.is_file() or self.out.is_file()):
            self.video = GrowingMp4(self.out, self.fps, self.height, self.width)
            return self.video
        if not previous.is_file():
            with writing(previous, "video"):
                self.out.replace(previous)
        whole_fragments(previous)
        self.video = GrowingMp4(self.out, self.fps, self.height, self.width)
        carried = 0
        for chunk in iter_video_chunks(previous, self.fps, (self.height, self.width)):
            chunk = chunk[: max(0, self.generated - carried)]
            if len(chunk) == 0:
                break
            self.video.append(chunk)
            self.sheet.add(chunk)
            carried += len(chunk)
        if carried < self.generated:
            print(
                f"[generate] warning: {self.out} held {carried} of the {self.generated} frames the session generated "
                "(the video was cut short or replaced); the continuation follows them"
            )
        previous.unlink()
        return self.video

    def __exit__(self, *exc) -> None:
        pass  # every segment is on disk as soon as it is appended


class ContactSheet:
    """One frame per second of the generated video, collected as segments arrive (never the whole video)."""

    def __init__(self, fps: float):
        self.fps = fps
        self.every = max(1, round(fps))
        self.seen = 0
        self.picks: list[np.ndarray] = []

    def add(self, frames: np.ndarray) -> None:
        for i in range(len(frames)):
            if (self.seen + i) % self.every == 0:
                self.picks.append(frames[i])
        self.seen += len(frames)

    def save(self, path: str | Path) -> None:
        """Write the sheet so far; the previous sheet stays whole until the new one is (a full disk, a kill)."""
        if self.picks:
            path = Path(path)
            tmp = path.with_name(path.name + ".tmp.png")
            with writing(path, "contact sheet"):
                try:
                    contact_sheet(np.stack(self.picks), 1.0, tmp)
                    tmp.replace(path)
                except BaseException:
                    tmp.unlink(missing_ok=True)
                    raise


def decode_image(path: str | Path, height: int, width: int) -> np.ndarray:
    """An image file as one ``(height, width, 3)`` uint8 frame (cover, then centre crop)."""
    from tinyhistory.data.video import fit_frame
    from tinyhistory.limits import check_image_pixels

    try:
        with Image.open(path) as opened:  # (the header only: the size is checked before any pixel is decoded)
            check_image_pixels(path, *opened.size)
            image = opened.convert("RGB")
    except (FileNotFoundError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read image ({exc})") from None
    # a copy: np.asarray of a PIL image is read-only, and torch.from_numpy warned about it on every --image run
    return np.array(fit_frame(image, height, width, "crop"))
