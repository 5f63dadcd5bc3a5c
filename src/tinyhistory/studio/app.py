"""``tinyhistory studio``: the storyboard editor and streaming generation in a browser page (Gradio).

The page is a thin shell over :class:`~tinyhistory.studio.engine.Studio`: handlers validate what was typed or
uploaded (messages in the page, never a traceback), hand a request to the engine and return at once; a timer polls
the engine's snapshot and redraws only what changed. Safe by default: it binds 127.0.0.1, never opens a share link,
sends no analytics and checks every upload (size, that a video is a video, that a session is a session).
"""

from __future__ import annotations

import functools
import html
import json
import os
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

# Gradio sends usage analytics and checks PyPI for a newer version unless told not to, before anything else.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from gradio.route_utils import FnIndexInferError  # noqa: E402
from PIL import Image  # noqa: E402

from tinyhistory.limits import check_sampling_steps, check_seed, check_segment_frames  # noqa: E402
from tinyhistory.studio import shots  # noqa: E402
from tinyhistory.studio.costs import HistoryCost, history_cost, image_cost, storyboard_cost  # noqa: E402
from tinyhistory.studio.engine import Busy, Loaded, Request, Snapshot, Studio  # noqa: E402
from tinyhistory.studio.uploads import UploadError, check_image, check_session, check_video  # noqa: E402

HEADERS = ["start (s)", "end (s)", "prompt", "check"]
STARTS = ["nothing", "image", "video"]
POLL_SECONDS = 0.5
EXAMPLE = [[0.0, 1.0, "A big white rabbit wakes up in a green meadow."], [1.0, 2.0, "Three rodents watch from a tree."]]
CSS = """
#badge .badge {font-weight: 700; padding: 2px 10px; border-radius: 10px; margin-right: 8px}
#badge .idle {background: #dcfce7; color: #166534} #badge .busy {background: #fef3c7; color: #92400e}
#badge .failed {background: #fee2e2; color: #991b1b}
.message-error {color: #b91c1c; font-weight: 600}
#progress progress {width: 100%; height: 14px}
#segment-log table {width: 100%; border-collapse: collapse; font-size: 0.9em}
#segment-log td, #segment-log th {border-bottom: 1px solid #e5e7eb; padding: 2px 6px; text-align: left}
"""
# System fonts: the default theme would ask a font CDN from every visitor's browser.
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO = ["ui-monospace", "monospace"]


# -- storyboard ----------------------------------------------------------------------------------------------------
def _rows(table) -> list[list]:
    """The table's ``start, end, prompt`` cells (the check column is ours)."""
    if table is None:
        return []
    if hasattr(table, "values"):  # a DataFrame (gradio hands one over in some versions whatever ``type`` says)
        table = table.values.tolist()
    return [list(row)[:3] for row in table]


def _with_checks(rows: list[list], checked: shots.Checked) -> list[list]:
    rows = rows or [[None, None, ""]]
    notes = checked.notes + [""] * (len(rows) - len(checked.notes))
    return [[*row, note] for row, note in zip(rows, notes, strict=False)]


def _story_message(checked: shots.Checked) -> str:
    if checked.ok:
        story = checked.story
        return f"✓ {len(story.shots)} shots, {story.duration:g} s"
    return _error(checked.message)


def _export(checked: shots.Checked, folder: Path):
    """The Export button carries the valid storyboard's file (a download needs a file before the click)."""
    if not checked.ok:
        return gr.update(value=None, interactive=False)
    path = shots.export_json(checked.story, folder / "storyboard.json")
    return gr.update(value=str(path), interactive=True)


# -- the page ------------------------------------------------------------------------------------------------------
class StudioPage:
    """The Gradio page of one :class:`Studio`; handlers are methods so they share the engine and its limits."""

    def __init__(self, studio: Studio):
        self.studio = studio
        self.loaded: Loaded = studio.loaded
        self.exports = studio.scratch / "export"
        self.exports.mkdir(exist_ok=True)
        self._frame_counts: dict[tuple[str, float], int] = {}

    # -- storyboard handlers --------------------------------------------------------------------------------------
    def table_changed(self, table, kind, image, video, segment_frames):
        rows = _rows(table)
        checked = shots.check_rows(rows)
        return (
            _with_checks(rows, checked),
            _story_message(checked),
            _export(checked, self.exports),
            self.start_info(kind, image, video, rows, segment_frames),
            json.dumps(shots.rows_to_data(rows)[0], indent=2),
        )

    def add_shot(self, table, kind, image, video, segment_frames):
        rows = [r for r in _rows(table) if any(not shots.is_blank(c) for c in r)]
        start = _last_end(rows)
        length = max(self._segment_seconds(segment_frames), 1.0)
        return self.table_changed([*rows, [start, start + length, ""]], kind, image, video, segment_frames)

    def remove_shot(self, table, selected, kind, image, video, segment_frames):
        rows = _rows(table)
        if rows:
            index = selected if isinstance(selected, int) and 0 <= selected < len(rows) else len(rows) - 1
            rows = rows[:index] + rows[index + 1 :]
        return (*self.table_changed(rows, kind, image, video, segment_frames), None)

    def import_json(self, file, kind, image, video, segment_frames):
        if file is None:
            return (gr.skip(),) * 5
        rows, message = shots.import_json(file)
        table, status, export, info, typed = self.table_changed(rows, kind, image, video, segment_frames)
        if message:  # the file's own message names the file, as the CLI does
            status = _error(message)
        return table, status, export, info, typed

    def apply_json(self, text, kind, image, video, segment_frames):
        rows, message = shots.import_text(text or "")
        if message and not rows:  # not JSON, or no shots: keep what was typed, so it can be fixed
            return gr.skip(), _error(message), gr.skip(), gr.skip(), gr.skip()
        table, status, export, info, typed = self.table_changed(rows, kind, image, video, segment_frames)
        return table, (_error(message) if message else status), export, info, typed

    # -- start ----------------------------------------------------------------------------------------------------
    def _segment_seconds(self, segment_frames) -> float:
        frames = int(segment_frames or self.loaded.cfg.train.segment_frames)
        return frames * self.loaded.codec.temporal_factor / self.loaded.fps

    def _video_frames(self, path: str) -> int:
        from tinyhistory.data.video import count_video_frames

        key = (path, self.loaded.fps)
        if key not in self._frame_counts:
            self._frame_counts[key] = count_video_frames(path, self.loaded.fps)
        return self._frame_counts[key]

    def history(self, kind, image, video) -> HistoryCost:
        """The chosen start as the session will hold it; raises UploadError for a bad or missing upload."""
        limit = self.studio.max_upload_bytes
        if kind == "image":
            if image is None:
                raise UploadError("upload an image to start from, or choose another start")
            check_image(image, limit)
            return image_cost(self.loaded)
        if kind == "video":
            if video is None:
                raise UploadError("upload a video to continue, or choose another start")
            check_video(video, limit)
            try:
                return history_cost(self.loaded, self._video_frames(video))
            except ValueError as exc:  # a header that reads but frames that do not decode
                name = Path(video).name
                raise UploadError(f"{name}: its frames do not decode ({exc})".replace(str(video), name)) from None
        return history_cost(self.loaded, 0)

    def start_info(self, kind, image, video, table, segment_frames) -> str:
        try:
            cost = self.history(kind, image, video)
        except UploadError as exc:
            return _error(str(exc))
        text = html.escape(cost.describe(self.loaded.fps))
        checked = shots.check_rows(_rows(table))
        if checked.ok and segment_frames:
            try:
                self._check_segment(int(segment_frames), checked.story)
            except ValueError as exc:
                return text + "<br>" + _error(str(exc))
            segments, tokens = storyboard_cost(self.loaded, checked.story, cost.latent_frames, int(segment_frames))
            text += f"<br>This storyboard: {segments} segments; the last one sees {tokens} context tokens."
        return text

    def start_kind(self, kind, image, video, table, segment_frames):
        return (
            gr.update(visible=kind == "image"),
            gr.update(visible=kind == "video"),
            self.start_info(kind, image, video, table, segment_frames),
        )

    def session_uploaded(self, session):
        """A .session upload: its settings go into the settings fields (a resumed session keeps its segment)."""
        if session is None:
            return ("",) + (gr.skip(),) * 5
        try:
            saved = check_session(session, self.studio.max_upload_bytes)
        except UploadError as exc:
            return (_error(str(exc)),) + (gr.skip(),) * 5
        note = (
            f"Session made with {saved.segment_frames}-frame segments, {saved.steps} steps, guidance "
            f"{saved.guidance:g}, {saved.sampler}: Resume continues it with the storyboard above."
        )
        return note, saved.steps, saved.guidance, saved.seed, saved.sampler, saved.segment_frames

    # -- run ------------------------------------------------------------------------------------------------------
    def _settings(self, steps, guidance, seed, sampler, segment_frames, story=None) -> dict:
        """The settings fields as ``tinyhistory generate``'s flags, within the same limits (the API takes any
        number: a segment of 100,000 frames would run on until memory runs out)."""

        def number(value, kind):
            return None if value is None or value == "" else kind(value)

        settings = {
            "steps": number(steps, int),
            "guidance": number(guidance, float),
            "seed": number(seed, int),
            "sampler": sampler or None,
            "segment_frames": number(segment_frames, int),
        }
        check_sampling_steps(settings["steps"], "steps")
        check_seed(settings["seed"], "seed")
        if story is not None:
            self._check_segment(settings["segment_frames"], story)
        return settings

    def _check_segment(self, segment_frames: int | None, story) -> None:
        loaded = self.loaded
        check_segment_frames(segment_frames, story.duration, loaded.fps, loaded.codec.temporal_factor,
                             loaded.cfg.train.segment_frames, "segment")  # fmt: skip

    def generate(self, table, kind, image, video, steps, guidance, seed, sampler, segment_frames, offload):
        checked = shots.check_rows(_rows(table))
        if not checked.ok:
            return _error(f"Nothing started: {checked.message}")
        try:
            self.history(kind, image, video)
            path = {"image": image, "video": video}.get(kind)
            settings = self._settings(steps, guidance, seed, sampler, segment_frames, checked.story)
            request = Request(checked.story, settings, kind, Path(path) if path else None, offload=bool(offload))
            self.studio.start(request)
        except (UploadError, Busy, ValueError) as exc:
            return _error(str(exc))
        return "Started."

    def resume(self, table, session, previous, steps, guidance, seed, sampler, segment_frames, offload):
        """Continue the uploaded session, else the last run. Once an upload is resumed it leaves the page: the run
        it starts is what the next Resume continues."""
        keep = (gr.skip(), gr.skip())
        checked = shots.check_rows(_rows(table))
        if not checked.ok:
            return _error(f"Nothing resumed: {checked.message}"), *keep
        limit = self.studio.max_upload_bytes
        try:
            if session is not None:
                check_session(session, limit)
                path = Path(session)
            elif self.studio.current_session is not None:
                path = self.studio.current_session
            else:
                return _error("Nothing to resume: generate first, or upload a .session file."), *keep
            carry = None  # the uploaded session's video so far, which the new run's mp4 starts with
            if session is not None and previous is not None:
                check_video(previous, limit)
                carry = Path(previous)
            settings = self._settings(steps, guidance, seed, sampler, segment_frames, checked.story)
            self.studio.start(Request(checked.story, settings, "resume", path, carry, bool(offload)))
        except (UploadError, Busy, ValueError) as exc:
            return _error(str(exc)), *keep
        return ("Resuming the uploaded session." if session is not None else "Resuming."), None, None

    def stop(self) -> str:
        return "Stopping after the current denoising step." if self.studio.stop() else "Nothing is running."

    # -- the poll -------------------------------------------------------------------------------------------------
    def poll(self, seen: int):
        """Redraw from the engine's snapshot; the heavy outputs only when a segment (or the state) changed."""
        snap = self.studio.snapshot()
        light = (_badge(snap), _progress(snap))
        buttons = (
            gr.update(interactive=not snap.busy),
            gr.update(interactive=snap.busy),
            gr.update(interactive=not snap.busy),
        )
        if snap.version == seen:
            return (*light, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), *buttons, seen)
        files = snap.files
        video = str(files.video) if files and files.video else None
        downloads = [str(p) for p in (files.video, files.sheet, files.session) if p] if files else None
        # The reply to the last button press is stale once the engine moved on (the badge says what goes on).
        return (*light, "", video, _gallery(snap.frames), _log(snap), downloads, *buttons, snap.version)

    # -- layout ---------------------------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        # (uploads live in gradio's cache; files older than a day are deleted, checked every hour)
        with gr.Blocks(title="tinyhistory studio", analytics_enabled=False, delete_cache=(3600, 86400)) as page:
            gr.Markdown(f"## tinyhistory studio\n{_model_line(self.loaded)}")
            ui = SimpleNamespace(badge=gr.HTML(_badge(Snapshot()), elem_id="badge"))
            with gr.Row():
                with gr.Column(scale=3):
                    self._storyboard(ui)
                    self._watch(ui)
                with gr.Column(scale=2):
                    self._start(ui)
                    self._controls(ui)
            ui.log = gr.HTML(_log(Snapshot()), elem_id="segment-log")
            ui.downloads = gr.File(
                label="Downloads: video, contact sheet, session",
                file_count="multiple",
                interactive=False,
                elem_id="downloads",
            )
            self._wire(ui)
            page.load(self.table_changed, [ui.table, *self._start_inputs(ui)], self._table_outputs(ui))
        return page

    def _storyboard(self, ui: SimpleNamespace) -> None:
        checked = shots.check_rows(EXAMPLE)
        ui.table = gr.Dataframe(
            _with_checks(EXAMPLE, checked),
            headers=HEADERS,
            datatype=["number", "number", "str", "str"],
            type="array",
            interactive=True,
            static_columns=[3],
            show_row_numbers=True,
            wrap=True,
            column_widths=["10%", "10%", "50%", "24%"],
            label="Storyboard (seconds from the start of the generated part; double-click a cell to edit)",
            elem_id="shots",
        )
        with gr.Row():
            ui.add = gr.Button("Add shot", size="sm", elem_id="add-shot")
            ui.remove = gr.Button("Remove selected shot", size="sm", elem_id="remove-shot")
            ui.upload = gr.UploadButton("Import JSON", size="sm", file_types=[".json"], elem_id="import-json")
            ui.export = gr.DownloadButton("Export JSON", size="sm", elem_id="export-json")
        ui.story_status = gr.HTML(_story_message(checked), elem_id="story-status")
        with gr.Accordion("Storyboard as JSON", open=False):
            ui.typed = gr.Code(language="json", label="storyboard JSON", elem_id="story-json")
            ui.apply = gr.Button("Apply JSON", size="sm", elem_id="apply-json")

    def _watch(self, ui: SimpleNamespace) -> None:
        ui.progress = gr.HTML(_progress(Snapshot()), elem_id="progress")
        with gr.Row():
            ui.movie = gr.Video(label="The video so far", height=300, loop=True, elem_id="video")
            ui.gallery = gr.Gallery(
                label="Latest segment",
                columns=3,
                height=300,
                object_fit="contain",
                allow_preview=True,
                elem_id="frames",
            )

    def _start(self, ui: SimpleNamespace) -> None:
        ui.kind = gr.Radio(STARTS, value="nothing", label="Start from", elem_id="start-kind")
        ui.image = gr.File(label="Image", file_types=["image"], visible=False, elem_id="start-image")
        ui.video = gr.File(label="History video", file_types=["video"], visible=False, elem_id="start-video")
        ui.start_info = gr.HTML(elem_id="start-info")
        defaults = self.loaded.default_settings()
        with gr.Accordion("Settings (as tinyhistory generate)", open=True):
            with gr.Row():
                ui.steps = gr.Number(defaults["steps"], label="steps", precision=0, minimum=1, elem_id="steps")
                ui.guidance = gr.Number(defaults["guidance"], label="guidance", elem_id="guidance")
                ui.seed = gr.Number(defaults["seed"], label="seed", precision=0, elem_id="seed")
            with gr.Row():
                ui.sampler = gr.Dropdown(["euler", "unipc"], value=defaults["sampler"], label="sampler")
                ui.segment = gr.Number(
                    defaults["segment_frames"],
                    label="segment (latent frames)",
                    precision=0,
                    minimum=1,
                    elem_id="segment-frames",
                )
                ui.offload = gr.Checkbox(self.loaded.offloaded, label="offload (CUDA)", elem_id="offload")
        with gr.Accordion("Resume an uploaded session", open=False):
            ui.session = gr.File(label=".session file", file_types=[".session"], elem_id="resume-session")
            ui.previous = gr.File(label="its video so far (optional)", file_types=["video"], elem_id="resume-video")
            ui.session_note = gr.HTML(elem_id="session-note")

    def _controls(self, ui: SimpleNamespace) -> None:
        with gr.Row():
            ui.go = gr.Button("Generate", variant="primary", elem_id="generate")
            ui.stop = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop")
            ui.resume = gr.Button("Resume", elem_id="resume")
        ui.message = gr.HTML(elem_id="run-message")

    @staticmethod
    def _start_inputs(ui: SimpleNamespace) -> list:
        return [ui.kind, ui.image, ui.video, ui.segment]

    @staticmethod
    def _table_outputs(ui: SimpleNamespace) -> list:
        return [ui.table, ui.story_status, ui.export, ui.start_info, ui.typed]

    def _wire(self, ui: SimpleNamespace) -> None:
        """Events: the editor and uploads answer at once; Generate/Resume/Stop return at once; the timer redraws.
        Every handler is :func:`_answered`: whatever a request holds, its caller gets a sentence."""
        for name in ("table_changed", "add_shot", "remove_shot", "import_json", "apply_json", "start_info",
                     "start_kind", "session_uploaded", "generate", "resume", "stop", "poll"):  # fmt: skip
            setattr(self, name, _answered(getattr(self, name)))
        start_inputs, table_outputs = self._start_inputs(ui), self._table_outputs(ui)
        info_inputs = [ui.kind, ui.image, ui.video, ui.table, ui.segment]
        ui.table.input(self.table_changed, [ui.table, *start_inputs], table_outputs)
        selected = gr.State(None)
        ui.table.select(_selected_row, None, selected)
        ui.add.click(self.add_shot, [ui.table, *start_inputs], table_outputs)
        ui.remove.click(self.remove_shot, [ui.table, selected, *start_inputs], [*table_outputs, selected])
        ui.upload.upload(self.import_json, [ui.upload, *start_inputs], table_outputs)
        ui.apply.click(self.apply_json, [ui.typed, *start_inputs], table_outputs)
        for source in (ui.image, ui.video, ui.segment):
            source.change(self.start_info, info_inputs, ui.start_info)
        ui.kind.change(self.start_kind, info_inputs, [ui.image, ui.video, ui.start_info])
        settings = [ui.steps, ui.guidance, ui.seed, ui.sampler, ui.segment]
        ui.session.change(self.session_uploaded, ui.session, [ui.session_note, *settings])
        ui.go.click(self.generate, [ui.table, ui.kind, ui.image, ui.video, *settings, ui.offload], ui.message)
        resume_inputs = [ui.table, ui.session, ui.previous, *settings, ui.offload]
        ui.resume.click(self.resume, resume_inputs, [ui.message, ui.session, ui.previous])
        ui.stop.click(self.stop, None, ui.message)
        seen = gr.State(-1)
        redrawn = [ui.badge, ui.progress, ui.message, ui.movie, ui.gallery, ui.log, ui.downloads]
        redrawn += [ui.go, ui.stop, ui.resume]
        gr.Timer(POLL_SECONDS).tick(self.poll, seen, [*redrawn, seen], show_progress="hidden")


# -- small renderers -----------------------------------------------------------------------------------------------
def _answered(handler):
    """``handler`` with every failure turned into a :class:`gr.Error` sentence for the caller (the page shows it, an
    API client reads it), never Gradio's ``{"error": null}``: the page's own controls cannot send most bad values,
    but its API takes any JSON. Our one-line errors (``ValueError``) pass as they are; anything else is named by its
    type, and its traceback goes to the terminal, where a bug report starts."""

    @functools.wraps(handler)  # (the same name: Gradio's API names come from it)
    def call(*args):
        try:
            return handler(*args)
        except gr.Error:
            raise
        except ValueError as exc:
            raise gr.Error(f"not done: {exc}", print_exception=False) from None
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(f"not done: this request could not be handled ({type(exc).__name__}: {exc})",
                           print_exception=False) from None  # fmt: skip

    return call


def _error(text: str) -> str:
    return f'<span class="message-error">✗ {html.escape(text)}</span>'


def _last_end(rows: list[list]) -> float:
    """Where a new shot starts: after the latest end in the table (cells may arrive as text once edited)."""
    ends = []
    for row in rows:
        try:
            ends.append(float(row[1]))
        except (TypeError, ValueError, IndexError):
            continue
    return max((e for e in ends if np.isfinite(e)), default=0.0)


def _selected_row(event: gr.SelectData) -> int | None:
    index = event.index
    return index[0] if isinstance(index, list | tuple) and index else None


def _model_line(loaded: Loaded) -> str:
    height, width = loaded.frame_shape
    return (
        f"`{loaded.checkpoint}` · preset `{loaded.cfg.preset}` · {width}×{height} at {loaded.fps:g} fps · "
        f"device `{loaded.device}`"
    )


def _badge(snap: Snapshot) -> str:
    if snap.busy:
        label, css = "BUSY", "busy"
    elif snap.state == "failed":
        label, css = "FAILED", "failed"
    else:
        label, css = "IDLE", "idle"
    return f'<span class="badge {css}" data-state="{snap.state}">{label}</span>{html.escape(snap.message)}'


def _progress(snap: Snapshot) -> str:
    if not snap.busy or not snap.steps:
        return '<div data-busy="false"><progress value="0" max="1"></progress></div>'
    return (
        f'<div data-busy="true"><progress value="{snap.step}" max="{snap.steps}"></progress>'
        f"segment {snap.segment} of {snap.segments} · denoising step {snap.step} of {snap.steps}</div>"
    )


def _log(snap: Snapshot) -> str:
    head = "<tr><th>#</th><th>time</th><th>prompt</th><th>history</th><th>context tokens</th><th>took</th></tr>"
    rows = "".join(
        f'<tr class="segment" data-index="{line.index}" data-frames="{line.frames}" '
        f'data-tokens="{line.context_tokens}"><td>{line.index}</td><td>{line.start_s:.2f}–{line.end_s:.2f} s</td>'
        f"<td>{html.escape(line.prompt)}</td><td>{line.history_s:.2f} s</td><td>{line.context_tokens}</td>"
        f"<td>{line.seconds:.2f} s</td></tr>"
        for line in snap.lines
    )
    return f"<table><thead>{head}</thead><tbody>{rows}</tbody></table>"


def _gallery(frames: np.ndarray | None) -> list[Image.Image] | None:
    """The latest segment's frames, small ones enlarged (nearest) so that a 64-pixel frame can be seen."""
    if frames is None:
        return None
    scale = max(1, 192 // max(frames.shape[1], frames.shape[2]))
    size = (frames.shape[2] * scale, frames.shape[1] * scale)
    return [Image.fromarray(f).resize(size, Image.Resampling.NEAREST) for f in frames]


def launch(studio: Studio, host: str = "127.0.0.1", port: int | None = None) -> tuple[gr.Blocks, str]:
    """Serve the page on ``host:port`` in the background (never a share link, nothing printed); returns the Blocks
    (``block_thread()`` waits for Ctrl-C, ``close()`` stops it) and the local URL."""
    page = StudioPage(studio).build()
    page.queue(default_concurrency_limit=4)
    theme = gr.themes.Default(font=FONTS, font_mono=MONO)
    _, url, _ = page.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        max_file_size=studio.max_upload_bytes,
        show_error=True,  # a request Gradio itself refuses (a wrong value, a file not uploaded) gets its sentence
        ssr_mode=False,
        enable_monitoring=False,
        mcp_server=False,
        run_history=False,  # it would record every poll in the browser and offers a Hub bucket
        pwa=False,
        quiet=True,  # (its banner suggests share=True)
        theme=theme,
        css=CSS,
        app_kwargs={"exception_handlers": {FnIndexInferError: _no_such_endpoint}},
    )
    return page, url


def _no_such_endpoint(request, exc):
    """Gradio answers a call of an API name it does not have with "500 Internal Server Error"; it is the caller's
    mistake, so: 404 and a sentence naming the name."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": f"no such API endpoint ({exc}); GET /gradio_api/info lists them"}, status_code=404)
