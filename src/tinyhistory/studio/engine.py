"""The studio's engine: one loaded model, one generation at a time, in a background thread.

The page never waits on the model: ``Studio.start`` hands a :class:`Request` to a worker thread and returns, and the
page polls ``Studio.snapshot`` for what happened since (segments, the current denoising step, files). Everything a
run writes is what ``tinyhistory generate`` writes (the mp4, the contact sheet, the per-segment JSONL, the session
saved after every segment), so a studio run can be continued with ``tinyhistory generate --resume`` and back.

Stop: the DiT is wrapped (:class:`_StepHook`) so that each denoising step first checks the stop flag; a stop request
therefore ends the run after the current step. The unfinished segment is dropped and the session's random generator
is put back to where it was before that segment, so the session in memory equals the one saved after the last
finished segment, and Resume continues exactly as ``--resume`` would.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tinyhistory.data.mp4 import GrowingMp4
from tinyhistory.files import replace_file

if TYPE_CHECKING:
    from tinyhistory.generate.session import SessionSetup

DEMO_CHECKPOINT = "checkpoints/miniature/stage2/proposed"  # the embedded demo's stage-II model
VIDEO = "story.mp4"  # a run folder holds what ``tinyhistory generate --out DIR/story.mp4`` writes


class Busy(ValueError):
    """A generation is running; the app does one at a time."""


class Stopped(Exception):
    """Raised inside the worker when Stop was pressed (after the current denoising step)."""


# -- the model ----------------------------------------------------------------------------------------------------
@dataclass
class Loaded:
    """A stage-II model ready to generate, loaded as ``tinyhistory generate`` loads it."""

    model: torch.nn.Module
    cfg: object
    codec: object
    encode_text: Callable
    device: torch.device
    checkpoint: str
    offloaded: bool = False

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None = None,
        preset: str | None = None,
        model_path: str | None = None,
        offload: bool = False,
        overrides: list[str] = (),
    ) -> Loaded:
        from tinyhistory.generate.run import load_for_generation
        from tinyhistory.paths import resolve_path

        if checkpoint is None:
            if preset not in (None, "miniature"):
                raise ValueError(
                    f"--checkpoint is needed for preset {preset!r} (a stage-II run folder, e.g. RUN/final)"
                )
            checkpoint = resolve_path(DEMO_CHECKPOINT)
        model, cfg, codec, encode_text, device = load_for_generation(checkpoint, preset, model_path, offload, overrides)
        return cls(model, cfg, codec, encode_text, device, str(checkpoint), offload)

    @property
    def fps(self) -> float:
        return self.cfg.data.fps

    @property
    def setup(self) -> SessionSetup:
        """What a generation session reads of the checkpoint's config (``tinyhistory generate``'s own)."""
        from tinyhistory.generate.run import session_setup

        return session_setup(self.cfg)

    @property
    def recipe(self):
        """How the model folder's own pipeline samples (the family adapter reads it: e.g. Wan 2.2 TI2V's clean first
        frame, which makes an image start cost no history)."""
        from tinyhistory.generate.session import sampling_recipe

        return sampling_recipe(self.model.backbone, self.cfg.model)

    @property
    def frame_shape(self) -> tuple[int, int]:
        from tinyhistory.generate.session import frame_shape

        return frame_shape(self.cfg.data)

    def default_settings(self) -> dict:
        """``tinyhistory generate``'s defaults for this model (the preset's segment, the folder's sampler)."""
        from tinyhistory.generate.run import sampling_settings

        return asdict(sampling_settings(self.setup, self.model.backbone, {}, None, None))

    def ensure_offload(self, wanted: bool) -> None:
        """Group offload (CUDA only), switched on for the first run that asks; it cannot be taken off again."""
        from tinyhistory.generate.run import enable_offload

        if wanted and not self.offloaded:
            self.model.producers.to(self.device)
            self.model.enhancers.to(self.device)
            enable_offload(self.model, self.device)
            self.offloaded = True
        elif not wanted and self.offloaded:
            raise ValueError("offload is on for this studio (it stays on until the studio restarts); tick it again")


# -- a generation request and what the page sees -------------------------------------------------------------------
@dataclass
class Request:
    """One press of Generate or Resume."""

    story: object  # a Storyboard
    settings: dict = field(default_factory=dict)  # sampling flags as the CLI's (None: not given)
    start: str = "nothing"  # "nothing" | "image" | "video" | "resume"
    path: Path | None = None  # the image, video or .session file
    previous_video: Path | None = None  # resume of an uploaded session: the video made so far (optional)
    offload: bool = False


@dataclass(frozen=True)
class SegmentLine:
    """A finished segment as the page lists it (times in seconds; storyboard time from the generated start)."""

    index: int
    start_s: float
    end_s: float
    prompt: str
    history_s: float
    context_tokens: int
    seconds: float
    frames: int


@dataclass(frozen=True)
class Files:
    """Copies of the run's outputs as of one segment, for the page to show and serve (the originals keep growing)."""

    video: Path | None
    sheet: Path | None
    session: Path | None


@dataclass
class Snapshot:
    """What the page shows; ``version`` changes whenever anything but the step counter does."""

    state: str = "idle"  # idle | starting | running | stopping | stopped | finished | failed
    message: str = "Ready."
    version: int = 0
    lines: list[SegmentLine] = field(default_factory=list)
    segment: int = 0  # the segment being generated, counted within the storyboard (1-based)
    segments: int = 0  # the storyboard's segments in all
    step: int = 0
    steps: int = 0
    frames: np.ndarray | None = None  # the latest segment's frames
    video_frames: int = 0
    files: Files | None = None
    run_dir: Path | None = None

    @property
    def busy(self) -> bool:
        return self.state in ("starting", "running", "stopping")


class _StepHook:
    """The DiT as ``sample_segment`` calls it (once per denoising step); ``before_step`` runs first and may raise
    :class:`Stopped`. Everything else is the wrapped model's."""

    def __init__(self, model, before_step: Callable[[], None]):
        self.model = model
        self.before_step = before_step

    def __call__(self, *args, **kwargs):
        self.before_step()
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.model, name)


class _Run:
    """A run's folder and its growing outputs: ``story.mp4`` and its companions ``story.mp4.png`` (contact sheet),
    ``story.mp4.segments.jsonl`` and ``story.mp4.session``, named as ``tinyhistory generate`` names them, so
    ``tinyhistory generate --resume DIR/story.mp4.session --out DIR/story.mp4`` continues a studio run."""

    def __init__(self, folder: Path, fps: float, height: int, width: int):
        from tinyhistory.generate.run import ContactSheet

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.video = GrowingMp4(folder / VIDEO, fps, height, width)
        self.sheet = ContactSheet(fps)
        self.sheet_path = folder / f"{VIDEO}.png"
        self.log_path = folder / f"{VIDEO}.segments.jsonl"
        self.session_path = folder / f"{VIDEO}.session"
        self.lines: list[SegmentLine] = []

    def add(self, frames: np.ndarray) -> None:
        self.video.append(frames)
        self.sheet.add(frames)
        tmp = self.sheet_path.with_name(self.sheet_path.name + ".tmp.png")
        self.sheet.save(tmp)
        if tmp.is_file():
            tmp.replace(self.sheet_path)

    def log(self, record: dict) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def copy_to(self, folder: Path) -> Files:
        """Copies of the outputs, for the page (a served file must not change while it is sent)."""
        folder.mkdir(parents=True, exist_ok=True)
        copies = []
        for path in (self.video.path, self.sheet_path, self.session_path):
            copies.append(Path(shutil.copyfile(path, folder / path.name)) if path.is_file() else None)
        return Files(*copies)


class Studio:
    """One model, one generation at a time; every method may be called from any thread."""

    def __init__(
        self, loaded: Loaded, out_dir: str | Path, max_upload_bytes: int, keep_previews: int = 3, out_lock=None
    ):
        from tinyhistory.locks import folder_lock

        self.loaded = loaded
        self.out_dir = Path(out_dir)
        # One studio per output folder, for its whole life (``OUT/.tinyhistory.lock``; ``out_lock``: already taken,
        # as ``serve`` does before loading the model): two would pick run folders side by side and could pick the
        # same one. An ``--out`` that is a file, read-only or another studio's is one line at start, not a failure
        # at the first Generate.
        self._out_lock = (out_lock or folder_lock(self.out_dir, "studio")).acquire()
        self._run_lock = None  # the running generation's lock on its run's story.mp4 (as ``tinyhistory generate``)
        self.max_upload_bytes = max_upload_bytes
        # Files the page serves (copies of the outputs, exported storyboards): under the system's temporary folder,
        # which gradio serves from anyway, so the runs' own folder never needs to be opened to the browser.
        self.scratch = Path(tempfile.mkdtemp(prefix="tinyhistory-studio-"))
        self.previews = self.scratch / "segments"
        self.previews.mkdir()
        self.keep_previews = keep_previews
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = Snapshot()
        self._run: _Run | None = None

    # -- the page's calls -----------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            return replace(self._state, lines=list(self._state.lines))

    def start(self, request: Request) -> None:
        """Start generating in the background; raises :class:`Busy` while a generation runs."""
        with self._lock:
            if self._state.busy:
                raise Busy(f"busy: {self._state.message} Press Stop first, or wait.")
            self._stop.clear()
            self._update(state="starting", message="Starting…", step=0, steps=0)
            self._thread = threading.Thread(target=self._work, args=(request,), name="tinyhistory-studio", daemon=True)
            self._thread.start()

    def stop(self) -> bool:
        """Ask the running generation to end after its current denoising step; False if none runs."""
        with self._lock:
            if not self._state.busy:
                return False
            self._stop.set()
            self._update(state="stopping", message="Stopping after the current denoising step…")
            return True

    def wait(self, timeout: float | None = None) -> Snapshot:
        """Block until the running generation ends (tests, scripts)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.snapshot()

    @property
    def current_session(self) -> Path | None:
        """The session file of the last run (what Resume continues when nothing is uploaded)."""
        run = self._run
        return run.session_path if run is not None and run.session_path.is_file() else None

    def close(self) -> None:
        self.stop()
        self.wait(60)
        shutil.rmtree(self.scratch, ignore_errors=True)
        self._out_lock.release()

    # -- the worker -----------------------------------------------------------------------------------------------
    def _update(self, **changes) -> None:
        """Change the page's state (caller holds the lock); any change but the step counter is a new version."""
        if set(changes) - {"step", "steps"}:
            changes["version"] = self._state.version + 1
        self._state = replace(self._state, **changes)

    def _set(self, **changes) -> None:
        with self._lock:
            if self._stop.is_set() and changes.get("state") == "running":
                changes["state"], changes["message"] = "stopping", self._state.message
            self._update(**changes)

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise Stopped

    def _work(self, request: Request) -> None:
        session = None
        try:
            session, run = self._prepare(request)
            self._generate(session, run, request.story)
        except Stopped:
            done = len(self._run.lines) if self._run is not None else 0
            resume = " Resume continues it." if self.current_session else ""
            self._set(state="stopped", message=f"Stopped after {done} segments.{resume}", step=0)
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            self._set(state="failed", message=str(exc), step=0)
        except Exception as exc:  # the page gets a sentence, the terminal the traceback
            traceback.print_exc(file=sys.stderr)
            self._set(state="failed", message=f"generation failed: {type(exc).__name__}: {exc}", step=0)
        finally:
            if self._run_lock is not None:
                self._run_lock.release()
                self._run_lock = None

    def _prepare(self, request: Request):
        """The session to continue and the run it writes into (a new run folder unless it resumes the last run)."""
        from tinyhistory.generate.run import sampling_settings
        from tinyhistory.generate.session import GenerationSession

        loaded = self.loaded
        loaded.ensure_offload(request.offload)
        saved = GenerationSession.read_settings(request.path) if request.start == "resume" else None
        settings = sampling_settings(loaded.setup, loaded.model.backbone, request.settings, saved, request.path)
        height, width = loaded.frame_shape
        if request.start == "resume":
            self._set(message="Loading the session…")
            session = GenerationSession.load(
                request.path, loaded.model, loaded.setup, loaded.codec, loaded.encode_text, loaded.device, settings
            )
            same_run = self._run is not None and Path(request.path) == self._run.session_path
            run = self._run if same_run else self._new_run(height, width)
            if not same_run and request.previous_video is not None:
                self._carry(run, request.previous_video, sum(r.pixel_frames for r in session.records))
        else:
            session = GenerationSession(
                loaded.model, loaded.setup, loaded.codec, loaded.encode_text, settings, loaded.device
            )
            run = self._new_run(height, width)
            self._start(session, request)
        self._lock_run(run)
        session.save(run.session_path)
        story = json.dumps(request.story.to_dict(), indent=2) + "\n"  # whole or not at all (a kill, a full disk)
        replace_file(run.folder / "storyboard.json", story.encode(), "storyboard")
        return session, run

    def _lock_run(self, run: _Run) -> None:
        """Hold ``story.mp4.lock`` of the run while writing it, as ``tinyhistory generate --out DIR/story.mp4``
        does: a ``generate --resume`` of this run's session into its folder refuses (naming this studio's PID) instead
        of writing into the same mp4, log and session, and the studio refuses a run folder such a command holds."""
        from tinyhistory.locks import file_lock

        self._run_lock = file_lock(run.video.path, "studio").acquire()

    def _new_run(self, height: int, width: int) -> _Run:
        folder = self.out_dir / time.strftime("run-%Y%m%d-%H%M%S")
        while folder.exists():
            folder = folder.with_name(folder.name + "-")
        self._run = _Run(folder, self.loaded.fps, height, width)
        with self._lock:
            self._update(lines=[], frames=None, files=None, video_frames=0, run_dir=folder)
        return self._run

    def _start(self, session, request: Request) -> None:
        from tinyhistory.data.video import count_video_frames, iter_video_chunks
        from tinyhistory.generate.run import decode_image

        height, width = self.loaded.frame_shape
        if request.start == "video":
            self._set(message="Reading the history video…")
            total = count_video_frames(request.path, self.loaded.fps)
            chunks = iter_video_chunks(request.path, self.loaded.fps, (height, width))
            session.start_from_video(self._stoppable(chunks), total)
        elif request.start == "image":
            session.start_from_image(decode_image(request.path, height, width))

    def _stoppable(self, chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            self._check_stop()
            yield chunk

    def _carry(self, run: _Run, video: Path, frames: int) -> None:
        """The video made before an uploaded session was saved goes first into the new run's mp4: its first ``frames``
        (what the session generated), read from a copy cut back to its whole fragments. A run killed after a
        segment's video but before its session holds that segment too (the session generates it again; carried, it
        came twice), and one killed inside an append ends in part of a fragment (the upload is not changed)."""
        from tinyhistory.data.mp4 import whole_fragments
        from tinyhistory.data.video import iter_video_chunks

        self._set(message="Copying the earlier video…")
        height, width = self.loaded.frame_shape
        copy = self.scratch / f"carry-{run.folder.name}.mp4"
        shutil.copyfile(video, copy)
        try:
            whole_fragments(copy)
            carried = 0
            for chunk in iter_video_chunks(copy, self.loaded.fps, (height, width), chunk=64):
                chunk = chunk[: max(0, frames - carried)]
                if len(chunk) == 0:
                    break
                run.add(chunk)
                carried += len(chunk)
        finally:
            copy.unlink(missing_ok=True)
        if carried < frames:
            print(
                f"[studio] warning: {video.name} holds {carried} of the {frames} frames the session generated; the "
                "continuation follows them",
                file=sys.stderr,
            )

    def _generate(self, session, run: _Run, story) -> None:
        remaining = session.storyboard_segments(story)
        done = (session.history_frames - session.origin) // session.settings.segment_frames
        if remaining <= 0:
            raise ValueError(
                f"the storyboard ({story.duration:g} s) is no longer than what was generated already "
                f"({done * session.seconds_per_segment():g} s): make it longer to resume"
            )
        total = done + remaining
        steps = session.settings.steps
        counter = {"step": 0}

        def before_step() -> None:
            self._check_stop()
            counter["step"] += 1
            with self._lock:
                self._update(step=counter["step"], steps=steps)

        session.model = _StepHook(session.model, before_step)
        self._set(
            state="running",
            segments=total,
            segment=done + 1,
            steps=steps,
            step=0,
            message=self._running(done + 1, total),
        )
        segments = session.follow_storyboard(story)
        for _ in range(remaining):
            self._check_stop()
            generator = session.generator.get_state()
            counter["step"] = 0
            try:
                record, frames = next(segments)
            except Stopped:
                session.generator.set_state(generator)  # as saved after the last finished segment
                raise
            self._finish_segment(session, run, record, frames, total)
        self._set(
            state="finished",
            message=f"Finished: {total} segments, {run.video.frames / self.loaded.fps:.2f} s of video.",
            step=0,
        )

    def _running(self, segment: int, total: int) -> str:
        return f"Generating segment {segment} of {total}…"

    def _finish_segment(self, session, run: _Run, record, frames: np.ndarray, total: int) -> None:
        """The segment joins the video, the contact sheet, the log and the saved session, then the page."""
        length = session.seconds_per_segment()
        start_s = (record.start_frame - session.origin) / session.settings.segment_frames * length
        history_s = (session.pixel_frames - record.pixel_frames) / self.loaded.fps
        run.add(frames)
        run.log(asdict(record) | {"start_s": round(start_s, 3)})
        session.save(run.session_path)
        line = SegmentLine(
            record.index,
            start_s,
            start_s + length,
            record.prompt,
            history_s,
            record.context_tokens,
            record.latency_s,
            len(frames),
        )
        run.lines.append(line)
        files = run.copy_to(self.previews / f"{run.folder.name}-{len(run.lines):05d}")
        self._prune_previews()
        count = (session.history_frames - session.origin) // session.settings.segment_frames  # of the storyboard
        message = self._running(count + 1, total) if count < total else "Finishing…"
        self._set(
            lines=list(run.lines),
            frames=frames,
            files=files,
            video_frames=run.video.frames,
            segment=count + 1,
            step=0,
            message=message,
            state="running",
        )

    def _prune_previews(self) -> None:
        """Keep the last few copies (a page may still be fetching the one before the latest)."""
        folders = sorted(p for p in self.previews.iterdir() if p.is_dir())
        for old in folders[: -self.keep_previews]:
            shutil.rmtree(old, ignore_errors=True)
