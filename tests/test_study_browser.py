"""``tinyhistory study serve`` driven in a real browser (Debian's headless Chromium through Playwright).

Two raters (two browser contexts: their own storage) rate a 3-system study of 2 storyboards (6 pairs each) with
clicks and keys. The server is the real CLI in a subprocess on 127.0.0.1 (audited: its only listening socket is on
loopback). Midway it is stopped (a vote sent while it is down is refused on the page, not lost in silence) and
started again: one rater reloads, the other goes on from the page as it was; both finish without a vote lost or
repeated, every pair gets exactly one vote from each, and the report lists all twelve votes.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("playwright")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (make test installs it)", allow_module_level=True)

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from study_videos import SIZE, fake_system, write_storyboards  # noqa: E402

from tinyhistory.cli import main  # noqa: E402
from tinyhistory.study.layout import create_study  # noqa: E402
from tinyhistory.study.votes import read_votes  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Server:
    """``tinyhistory study serve STUDY --port PORT`` as a subprocess (started, audited, stopped with SIGTERM)."""

    def __init__(self, root: Path, port: int):
        self.root, self.port, self.process = root, port, None

    def start(self) -> None:
        command = [sys.executable, "-m", "tinyhistory.cli", "study", "serve", str(self.root), "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(self._answers, 60, "the study server")
        self.audit()

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.process.stdout.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def audit(self) -> None:
        """The server's listening sockets: exactly one, on 127.0.0.1."""
        import psutil

        listening = [c for c in psutil.Process(self.process.pid).net_connections("inet") if c.status == "LISTEN"]
        assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", self.port)]

    def stop(self) -> str:
        self.process.terminate()  # SIGTERM: the server shuts down cleanly (votes are on disk already)
        output, _ = self.process.communicate(timeout=20)
        assert self.process.returncode == 0, output
        return output


@pytest.fixture
def study(tmp_path) -> Path:
    stories = write_storyboards(tmp_path / "storyboards")
    for k, name in enumerate("ABC"):
        fake_system(tmp_path / "systems" / name, k)
    systems = [f"{n}={tmp_path / 'systems' / n}" for n in "ABC"]
    return create_study(tmp_path / "study", systems, [str(s) for s in stories], progress=False).root


# -- page helpers ------------------------------------------------------------------------------------------------------
def done(page: Page) -> int:
    return int(page.locator("#progress").get_attribute("data-done"))


def token(page: Page) -> str:
    return page.locator("#rate").get_attribute("data-token")


def videos_play_in_sync(page: Page) -> bool:
    return page.evaluate(
        """() => {
            const [l, r] = [document.getElementById("left"), document.getElementById("right")];
            return l.readyState >= 2 && r.readyState >= 2 && l.videoWidth === SIZE && r.videoWidth === SIZE
                && !l.paused && !r.paused && l.currentTime > 0 && Math.abs(l.currentTime - r.currentTime) < 0.15;
        }""".replace("SIZE", str(SIZE))
    )


def vote(page: Page, how: str, reasons: list[str] = ()) -> None:
    """One vote as a person gives it: reasons ticked (by click or key), then a click (``#id``) or a key."""
    before = done(page)
    for reason in reasons:
        if reason.isdigit():
            page.keyboard.press(reason)
        else:
            page.click(f"#reasons input[value={reason}]")
    if how.startswith("#"):
        page.click(how)
    else:
        page.keyboard.press(how)
    wait_for(lambda: done(page) == before + 1, 20, f"the vote ({how}) to be saved")


@pytest.mark.slow  # as the studio's browser test
def test_two_raters_vote_through_a_server_restart(study, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    server = Server(study, port)
    server.start()
    requests: list[str] = []
    with sync_playwright() as p:
        # root in a container: Chromium's sandbox needs user namespaces it does not get here
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        )
        ann = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        ben = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
        for page in (ann, ben):
            page.on("request", lambda r: requests.append(r.url))

        # ann: name, Start; the pair, its storyboard, two videos on one clock; three votes (clicks and keys).
        ann.goto(url)
        ann.fill("#rater-input", "ann")
        ann.click("#start")
        ann.wait_for_selector("#rate:not([hidden])")
        assert ann.inner_text("#progress") == "0 of 6 rated" and ann.inner_text("#rater-name") == "ann"
        assert "s" in ann.inner_text("#storyboard td.time")  # e.g. "0–1 s" beside the prompt
        assert any(p in ann.inner_text("#storyboard") for p in ("rabbit", "rodents"))
        wait_for(lambda: videos_play_in_sync(ann), 30, "both videos playing in sync")
        first = token(ann)
        ann.reload()  # a reload shows the same pair again
        ann.wait_for_selector("#rate:not([hidden])")
        assert token(ann) == first and done(ann) == 0
        vote(ann, "#vote-left", ["identity"])
        vote(ann, "ArrowRight", ["3"])
        assert ann.inner_text("#status").startswith("Saved")
        vote(ann, "t")

        # ben: name and Enter; two votes.
        ben.goto(url)
        ben.fill("#rater-input", "ben")
        ben.press("#rater-input", "Enter")
        ben.wait_for_selector("#rate:not([hidden])")
        vote(ben, "b")
        vote(ben, "#vote-right", ["motion", "artefacts"])
        shown_to_ben = token(ben)

        # The server stops: ben's vote is refused on the page (and counted nowhere); it restarts.
        server.stop()
        ben.keyboard.press("j")
        wait_for(lambda: "Not saved" in ben.inner_text("#status"), 20, "the refusal")
        assert done(ben) == 2 and token(ben) == shown_to_ben
        server.start()

        # ben goes on from the page as it was (same pair), ann reloads and continues at 3 of 6.
        vote(ben, "j")
        vote(ben, "#vote-tie")
        vote(ben, "ArrowLeft")
        vote(ben, "#vote-left", ["4"])
        ann.reload()
        ann.wait_for_selector("#rate:not([hidden])")
        assert ann.inner_text("#progress") == "3 of 6 rated"
        wait_for(lambda: videos_play_in_sync(ann), 30, "both videos playing in sync after the restart")
        vote(ann, "#vote-both_bad")
        vote(ann, "f")
        ann.keyboard.press("Space")  # Space pauses both videos (and votes nothing)
        wait_for(lambda: ann.evaluate("() => document.getElementById('left').paused"), 10, "pause")
        vote(ann, "ArrowDown")
        for page in (ann, ben):
            page.wait_for_selector("#finished:not([hidden])")
            assert page.inner_text("#progress") == "6 of 6 rated"
        browser.close()
    server.stop()

    # Every vote once, in the order given, with its reasons; each rater saw every pair once; all pairs balanced.
    votes, problems = read_votes(study / "votes.jsonl")
    assert problems == [] and len(votes) == 12
    by = {r: [v for v in votes if v.rater == r] for r in ("ann", "ben")}
    assert [v.choice for v in by["ann"]] == ["left", "right", "tie", "both_bad", "left", "tie"]
    assert [v.choice for v in by["ben"]] == ["both_bad", "right", "right", "tie", "left", "left"]
    assert [v.reasons for v in by["ann"]][:2] == [("identity",), ("motion",)]
    assert by["ben"][1].reasons == ("motion", "artefacts") and by["ben"][5].reasons == ("prompt",)
    assert all(len({v.pair for v in rater_votes}) == 6 for rater_votes in by.values())
    assert set(Counter(v.pair for v in votes).values()) == {2}
    # time on screen, except for the pair the old server showed ben before the restart
    assert [v.seconds is None for v in votes].count(True) == 1 and by["ben"][2].seconds is None
    assert all(u.startswith(url) for u in requests), [u for u in requests if not u.startswith(url)]

    # The report lists every vote.
    assert main(["study", "report", str(study), "--no-metrics", "--rounds", "100", "--no-progress"]) == 0
    report = json.loads((study / "report" / "report.json").read_text())
    assert [v["choice"] for v in report["every_vote"]] == [v.choice for v in votes]
    listed = (study / "report" / "report.md").read_text().split("## Every vote")[1].splitlines()
    assert sum(line.startswith("| ") and line[2].isdigit() for line in listed) == 12
