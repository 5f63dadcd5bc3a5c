"""``tinyhistory studio``: a local web page to write a storyboard and watch it stream into a video.

    tinyhistory studio                          # then open http://127.0.0.1:7860

``engine`` (the model and the generation thread), ``shots`` (the storyboard table), ``uploads`` (checks on uploaded
files) and ``mp4`` (the growing video) need no web framework; ``app`` is the Gradio page (the ``studio`` extra).
"""

from __future__ import annotations

from pathlib import Path

from tinyhistory.studio.uploads import DEFAULT_MAX_UPLOAD_MB


def serve(
    checkpoint: str | None = None,
    preset: str | None = None,
    model_path: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    out: str | Path = "studio_out",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    offload: bool = False,
    overrides: list[str] = (),
) -> int:
    """Load the model, then serve the page until interrupted (Ctrl-C)."""
    try:
        from tinyhistory.studio.app import launch
    except ImportError as exc:  # gradio is an optional extra
        raise ValueError(f"the studio needs Gradio: pip install 'tinyhistory[studio]' ({exc})") from None
    from tinyhistory.studio.engine import Loaded, Studio

    if max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    print("[studio] loading the model…", flush=True)
    loaded = Loaded.load(checkpoint, preset, model_path, offload, overrides)
    studio = Studio(loaded, out, int(max_upload_mb * 2**20))
    print(f"[studio] runs are written to {Path(out).resolve()}", flush=True)
    page, url = launch(studio, host, port)
    print(f"[studio] open {url} (Ctrl-C stops the studio)", flush=True)
    try:
        page.block_thread()  # returns on Ctrl-C, having closed the server
    finally:
        studio.close()
    return 0
