"""``tinyhistory studio`` driven in a real browser (Debian's headless Chromium through Playwright), demo model.

One page session does what a person would: a bad storyboard (the CLI's message beside the shot, nothing starts), a
2-shot storyboard generated with 2 steps, segments appearing one by one while the mp4 on disk grows, Stop, Resume with
a longer storyboard, the video continued (the same first frames, then the rest), downloads, and upload checks. The
app runs in this process on a free port bound to 127.0.0.1; the page must fetch nothing from anywhere else.

Set ``TINYHISTORY_STUDIO_SCREENSHOT=docs/studio.png`` to also write the README's screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest

_CONNECTIONS: list = []


def _audit(event: str, args: tuple) -> None:
    """Every socket this process opens (gradio's import and launch included) must be local."""
    if event == "socket.connect":
        _CONNECTIONS.append(args[1])


sys.addaudithook(_audit)  # before gradio is imported

pytest.importorskip("gradio")
pytest.importorskip("playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (make test installs it)", allow_module_level=True)

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from tinyhistory.studio.costs import history_cost  # noqa: E402
from tinyhistory.studio.engine import Busy, Loaded, Request, Studio  # noqa: E402
from tinyhistory.text.storyboard import Storyboard  # noqa: E402

SEGMENT = 8  # pixel frames per 1-s segment of the miniature preset (8 latent frames, framewise codec)
_AT_IMPORT = list(_CONNECTIONS)  # what importing gradio and the studio connected to (nothing, or local)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from tinyhistory.studio.app import launch

    out = tmp_path_factory.mktemp("studio_runs")
    studio = Studio(Loaded.load(preset="miniature"), out, max_upload_bytes=2**20)  # 1 MB: the size check is testable
    _CONNECTIONS.clear()  # from here on: the launch and the page's session (other tests' sockets are theirs)
    page, url = launch(studio, "127.0.0.1", _free_port())
    yield studio, url
    page.close()
    studio.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        # root in a container: Chromium's sandbox needs user namespaces it does not get here
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


# -- page helpers ------------------------------------------------------------------------------------------------------
def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def cells(page: Page) -> list[list[str]]:
    rows = page.locator("#shots [role=row][data-index]").count()
    cell = "#shots [data-testid=cell-{}-{}]"
    return [[page.locator(cell.format(r, c)).inner_text().split("\n")[0] for c in range(4)] for r in range(rows)]


def edit(page: Page, row: int, column: int, text: str) -> None:
    """Type into a table cell as a person does: double-click, type, Enter."""
    page.locator(f"#shots [data-testid=cell-{row}-{column}]").dblclick()
    page.locator(f"#shots [data-testid=cell-{row}-{column}] textarea").fill(text)
    page.keyboard.press("Enter")


def text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text()


def state(page: Page) -> str:
    return page.locator("#badge .badge").get_attribute("data-state")


def segment_lines(page: Page) -> list[dict]:
    rows = page.locator("#segment-log tr.segment")
    return [
        {
            "index": int(rows.nth(i).get_attribute("data-index")),
            "tokens": int(rows.nth(i).get_attribute("data-tokens")),
            "frames": int(rows.nth(i).get_attribute("data-frames")),
            "text": rows.nth(i).inner_text(),
        }
        for i in range(rows.count())
    ]


def decoded(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def import_file(page: Page, path: Path) -> None:
    with page.expect_file_chooser() as chooser:
        page.click("#import-json")
    chooser.value.set_files(str(path))


def upload(page: Page, component: str, path: Path) -> None:
    page.locator(f"#{component} input[type=file]").set_input_files(str(path))


def screenshot(page: Page, path: Path) -> None:
    """A full-page PNG, quantised to 256 colours (the page is flat UI: small and still sharp)."""
    from PIL import Image

    page.screenshot(path=str(path), full_page=True)
    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


# -- the test ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_studio_in_a_browser(app, browser, tmp_path):
    studio, url = app
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_selector("#generate")
    wait_for(lambda: cells(page) and cells(page)[0][3] == "✓", 20, "the example storyboard")

    # Import: a storyboard file with a bad shot fills the table and names the file as the CLI does; a good one.
    shots = [{"start": 0, "end": 1, "prompt": "A big white rabbit wakes up in a green meadow."}]
    shots.append({"start": 1, "end": 2, "prompt": "Three rodents watch from a tree."})
    bad = tmp_path / "bad_story.json"
    bad.write_text(json.dumps({"shots": [shots[0], {"start": 1, "end": 2}]}))
    import_file(page, bad)
    wait_for(lambda: "bad_story.json: shot 1: missing field 'prompt'" in text(page, "#story-status"), 20, "import")
    assert cells(page)[1][3] == "missing field 'prompt'"
    good = tmp_path / "two_shots.json"
    good.write_text(json.dumps({"shots": shots}))
    import_file(page, good)
    wait_for(lambda: "✓ 2 shots, 2 s" in text(page, "#story-status"), 20, "the imported storyboard")

    # A bad storyboard: the CLI's message, beside the shot and under the table; Generate starts nothing.
    edit(page, 1, 1, "0.5")
    message = "storyboard: shot 1: end (0.5) must be after start (1)"
    wait_for(lambda: message in text(page, "#story-status"), 20, "the storyboard message")
    assert cells(page)[1][3] == "end (0.5) must be after start (1)" and cells(page)[0][3] == "✓"
    page.click("#generate")
    wait_for(lambda: "Nothing started: " + message in text(page, "#run-message"), 20, "nothing started")
    runs = [p for p in studio.out_dir.iterdir() if p.name != ".tinyhistory.lock"]  # (the studio's own lock)
    assert studio.snapshot().state == "idle" and not runs

    # The 2-shot storyboard (6 s: six 1-s segments, so that Stop comes before its end), 2 denoising steps.
    edit(page, 1, 1, "6")
    wait_for(lambda: "✓ 2 shots, 6 s" in text(page, "#story-status"), 20, "a valid storyboard")
    # the committed stage-II model: the encoder's 80 tokens for 5 s of history beside the last 2 frames' 128
    assert "This storyboard: 6 segments; the last one sees 208 context tokens." in text(page, "#start-info")
    page.fill("#steps input", "2")
    page.keyboard.press("Tab")
    started = time.monotonic()
    page.click("#generate")
    wait_for(lambda: state(page) == "running", 30, "the busy state")
    assert page.locator("#generate").is_disabled() and "BUSY" in text(page, "#badge")
    with pytest.raises(Busy):  # one generation at a time per app, whoever asks
        studio.start(Request(story=None))
    wait_for(lambda: "denoising step" in text(page, "#progress"), 30, "the progress bar")
    first = wait_for(lambda: segment_lines(page), 60, "the first segment")
    first_s = time.monotonic() - started
    run = studio.snapshot().run_dir
    video = run / "story.mp4"
    assert len(decoded(video)) >= SEGMENT  # the mp4 on disk holds the first segment already
    assert "A big white rabbit wakes up in a green meadow." in first[0]["text"]
    assert first[0]["tokens"] == 0 and "0.00 s" in first[0]["text"]

    page.click("#stop")
    wait_for(lambda: state(page) == "stopped", 60, "the stop")
    done = segment_lines(page)
    assert 1 <= len(done) < 6, "Stop should end the run before the storyboard's end"
    before = decoded(video)
    assert len(before) == SEGMENT * len(done) == sum(line["frames"] for line in done)
    assert "Resume continues it" in text(page, "#badge")

    # Resume with a longer storyboard: a third shot, typed into the table.
    page.click("#add-shot")
    wait_for(lambda: len(cells(page)) == 3, 20, "the new row")
    assert cells(page)[2][:2] == ["6", "7"]
    edit(page, 2, 2, "The big white rabbit runs across the meadow.")
    wait_for(lambda: "✓ 3 shots, 7 s" in text(page, "#story-status"), 20, "the longer storyboard")
    page.click("#resume")
    wait_for(lambda: state(page) == "finished", 90, "the resumed run to finish")
    lines = segment_lines(page)
    assert [line["index"] for line in lines] == list(range(7))
    # the encoder's 4 tokens per 2 latent frames, and once there is history the last 2 frames' 128 beside them
    assert [line["tokens"] for line in lines] == [0] + [16 * i + 128 for i in range(1, 7)]
    assert "The big white rabbit runs across the meadow." in lines[6]["text"] and "6.00 s" in lines[6]["text"]
    after = decoded(video)
    assert len(after) == 7 * SEGMENT
    np.testing.assert_array_equal(after[: len(before)], before)  # continued, not started again
    log = [json.loads(line) for line in (run / "story.mp4.segments.jsonl").read_text().splitlines()]
    assert [r["index"] for r in log] == list(range(7)) and [r["history_frames"] for r in log] == [
        8 * i for i in range(7)
    ]

    # The page plays the video so far; its downloads are the mp4, the contact sheet and the session.
    duration = wait_for(
        lambda: page.evaluate(
            "() => { const v = document.querySelector('#video video'); return v && v.readyState >= 1 ? v.duration : 0 }"
        ),
        20,
        "the video element",
    )
    assert abs(duration - 7 * SEGMENT / 8) < 0.2
    downloads = text(page, "#downloads").replace("\n", "")  # (the list shows a name's stem and suffix apart)
    assert all(name in downloads for name in ("story.mp4", "story.mp4.png", "story.mp4.session"))
    links = page.locator("#downloads a[download]")
    mp4_link = next(i for i in range(links.count()) if links.nth(i).get_attribute("href").endswith("story.mp4"))
    with page.expect_download() as download:  # the mp4 as a person downloads it, counted with PyAV
        links.nth(mp4_link).click()
    assert len(decoded(Path(download.value.path()))) == 7 * SEGMENT
    screenshot(page, tmp_path / "studio.png")
    if os.environ.get("TINYHISTORY_STUDIO_SCREENSHOT"):
        shutil.copyfile(tmp_path / "studio.png", os.environ["TINYHISTORY_STUDIO_SCREENSHOT"])
    assert (tmp_path / "studio.png").stat().st_size < 300_000

    # Export gives the storyboard file that `tinyhistory generate --storyboard` reads; Remove takes the selected shot.
    with page.expect_download() as download:
        page.click("#export-json")
    exported = Storyboard.load(download.value.path())
    assert [s.end for s in exported.shots] == [1, 6, 7] and exported.shots[2].prompt.startswith("The big white")
    page.locator("#shots [data-testid=cell-1-2]").click()
    page.click("#remove-shot")
    wait_for(lambda: "✓ 2 shots, 7 s" in text(page, "#story-status"), 20, "the removal")
    assert [row[2] for row in cells(page)][1] == "The big white rabbit runs across the meadow."

    # Uploads: a non-video and an oversized file get a message in the page; a real clip shows its cost.
    page.locator("#start-kind label", has_text="video").click()
    junk = tmp_path / "notes.mp4"
    junk.write_text("not a video at all\n" * 50)
    upload(page, "start-video", junk)
    wait_for(lambda: "notes.mp4: not a video the studio can read" in text(page, "#start-info"), 20, "the refusal")
    clip = tmp_path / "clip.mp4"
    _two_second_clip(clip)
    page.locator("#start-video button[aria-label='Clear']").click()
    upload(page, "start-video", clip)
    cost = history_cost(studio.loaded, 16)
    expected = f"history 2.00 s: 16 frames at 8 fps, 16 latent frames, {cost.context_tokens} context tokens"
    wait_for(lambda: expected in text(page, "#start-info"), 30, "the history's cost")
    huge = tmp_path / "huge.mp4"
    huge.write_bytes(os.urandom(2 * 2**20))
    page.locator("#start-video button[aria-label='Clear']").click()
    upload(page, "start-video", huge)
    limit = 'exceed the maximum allowed size of 1.0 Mb: "huge.mp4"'  # gradio refuses it while it arrives
    wait_for(lambda: limit in page.locator("body").inner_text(), 20, "the size limit's message")
    assert "Traceback" not in page.locator("body").inner_text()

    hosts = {u.split("/")[2] for u in requests if u.startswith("http")}
    assert hosts == {url.split("/")[2]}, f"the page fetched from elsewhere: {hosts}"
    assert _CONNECTIONS and all(_local(address) for address in _AT_IMPORT + _CONNECTIONS), _AT_IMPORT + _CONNECTIONS
    print(f"first segment after {first_s:.1f} s")
    page.close()


def _local(address) -> bool:
    """A loopback address, or a Unix socket (a path)."""
    return not isinstance(address, tuple) or address[0] in ("127.0.0.1", "::1", "localhost")


def _two_second_clip(path: Path) -> None:
    from tinyhistory.data.video import decode_video, write_video

    frames = decode_video(Path(__file__).parents[1] / "assets" / "bbb_64px_8fps.mp4", fps=8, size=64, duration=2.0)
    write_video(frames, path, fps=8)
