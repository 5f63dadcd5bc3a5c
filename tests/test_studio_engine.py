"""The studio without a browser: the storyboard table's messages, the growing mp4, what a history costs, Stop in the
middle of a segment followed by Resume (equal to a run never stopped), and the upload checks."""

from __future__ import annotations

import json
import time

import av
import numpy as np
import pytest
import torch

from tinyhistory.cli import build_parser
from tinyhistory.data.mp4 import GrowingMp4
from tinyhistory.generate.session import GenerationSession, SamplingSettings
from tinyhistory.studio import shots
from tinyhistory.studio.costs import history_cost, image_cost
from tinyhistory.studio.engine import Loaded, Request, Studio
from tinyhistory.studio.uploads import UploadError, check_image, check_session, check_video
from tinyhistory.text.storyboard import Storyboard

STAGE2 = "checkpoints/miniature/stage2"


def _cli_message(data: dict, tmp_path) -> str:
    """What ``tinyhistory generate --storyboard FILE`` says about ``data`` (with the file's name as the source)."""
    path = tmp_path / "storyboard"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as error:
        Storyboard.load(path)
    return str(error.value).replace(str(path), "storyboard")


@pytest.mark.parametrize(
    "rows, bad",
    [
        ([[0, 1, "a"], [2, 1, "b"]], {1: "end (1) must be after start (2)"}),
        ([[0, 1, "a"], [1, 2, ""]], {1: "missing field 'prompt'"}),  # an empty cell is a field not given
        ([[0, 1, "a"], ["soon", 2, "b"]], {1: "field 'start' must be a number of seconds, got 'soon'"}),
        ([[0, 1, "a"], [None, 2, "b"], [None, None, None]], {1: "missing field 'start'"}),
        ([[0, 2, "a"], [1, 3, "b"]], {0: "overlaps the shot in row 2", 1: "overlaps the shot in row 1"}),
    ],
)
def test_the_table_says_what_the_cli_says_beside_each_bad_shot(rows, bad, tmp_path):
    checked = shots.check_rows(rows)
    data, _ = shots.rows_to_data(rows)
    assert not checked.ok and checked.message == _cli_message(data, tmp_path)
    for row, note in enumerate(checked.notes):
        assert note == bad.get(row, "✓" if any(c not in (None, "") for c in rows[row]) else "")


def test_a_valid_table_round_trips_through_json(tmp_path):
    checked = shots.check_rows([[0, 1.5, " a "], ["1.5", "3", "b"]])
    assert checked.ok and checked.notes == ["✓", "✓"]
    path = shots.export_json(checked.story, tmp_path / "s.json")
    assert Storyboard.load(path) == checked.story
    rows, message = shots.import_json(path)
    assert message == "" and rows == [[0.0, 1.5, "a"], [1.5, 3.0, "b"]]
    (tmp_path / "bad.json").write_text("{not json")
    assert shots.import_json(tmp_path / "bad.json")[1].startswith("bad.json: invalid JSON")


def _decode(path) -> tuple[np.ndarray, list[float]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return np.stack([f.to_ndarray(format="rgb24") for f in frames]), [float(f.time) for f in frames]


def test_the_growing_mp4_holds_every_segment_as_soon_as_it_is_appended(tmp_path):
    video = GrowingMp4(tmp_path / "v.mp4", 8, 64, 64)
    rng = np.random.default_rng(0)
    written = []
    for n in (5, 8, 8, 3):  # blocky frames, so H.264 keeps them close
        blocks = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        written.append(blocks.repeat(8, axis=1).repeat(8, axis=2))
        video.append(written[-1])
        frames, times = _decode(video.path)
        expected = np.concatenate(written)
        assert len(frames) == len(expected) == video.frames
        assert times == [i / 8 for i in range(len(expected))]  # each segment follows the one before
        assert np.abs(frames.astype(int) - expected).mean() < 12


@pytest.mark.parametrize("method", ["proposed", "window", "none"])
def test_what_the_page_says_a_history_costs_is_what_the_session_holds(method):
    loaded = Loaded.load(f"{STAGE2}/{method}")
    settings = SamplingSettings(steps=1, segment_frames=8)
    for frames in (1, 2, 3, 8, 13):
        session = GenerationSession(loaded.model, loaded.setup, loaded.codec, _no_text, settings, loaded.device)
        session.start_from_video(np.zeros((frames, 128, 128, 3), dtype=np.uint8))
        context = session.context()
        cost = history_cost(loaded, frames)
        assert cost.kept_frames == session.pixel_frames and cost.latent_frames == session.history_frames
        assert cost.context_tokens == (context.num_tokens if context is not None else 0)
    session = GenerationSession(loaded.model, loaded.setup, loaded.codec, _no_text, settings, loaded.device)
    session.start_from_image(np.zeros((128, 128, 3), dtype=np.uint8))
    context = session.context()
    assert image_cost(loaded).context_tokens == (context.num_tokens if context is not None else 0)


def _no_text(prompts):
    from tinyhistory.text.condition import TextCondition

    return TextCondition(torch.zeros(len(prompts), 64, 384))


@pytest.fixture(scope="module")
def loaded():
    return Loaded.load(f"{STAGE2}/proposed")


def _story(seconds: int) -> Storyboard:
    return Storyboard.from_dict({"shots": [{"start": 0, "end": seconds, "prompt": "A rabbit in a meadow."}]})


def test_stop_in_a_segment_then_resume_equals_a_run_never_stopped(loaded, tmp_path):
    settings = {"steps": 6}
    whole = Studio(loaded, tmp_path / "whole", 2**30)
    whole.start(Request(_story(3), settings))
    assert whole.wait(120).state == "finished"

    studio = Studio(loaded, tmp_path / "stopped", 2**30)
    studio.start(Request(_story(3), settings))
    deadline = time.monotonic() + 120
    while not (studio.snapshot().segment == 2 and studio.snapshot().step >= 2):  # inside the second segment
        assert time.monotonic() < deadline and studio.snapshot().state != "finished"
        time.sleep(0.005)
    assert studio.stop()
    stopped = studio.wait(60)
    assert stopped.state == "stopped" and len(stopped.lines) == 1  # the second segment was dropped mid-way
    assert "Resume continues it" in stopped.message
    studio.start(Request(_story(3), settings, "resume", studio.current_session))
    resumed = studio.wait(120)
    assert resumed.state == "finished" and [line.index for line in resumed.lines] == [0, 1, 2]

    a, b = (GenerationSession.load(s.current_session, *_parts(loaded)) for s in (whole, studio))
    assert torch.equal(a.latents, b.latents) and a.pixel_frames == b.pixel_frames == 24
    frames_a, _ = _decode(whole.snapshot().run_dir / "story.mp4")
    frames_b, _ = _decode(resumed.run_dir / "story.mp4")
    assert len(frames_a) == len(frames_b) == 24
    log = (resumed.run_dir / "story.mp4.segments.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in log] == [0, 1, 2]
    for s in (whole, studio):
        s.close()


def _parts(loaded: Loaded) -> tuple:
    return loaded.model, loaded.setup, loaded.codec, loaded.encode_text, loaded.device


def test_a_storyboard_no_longer_than_what_was_made_is_refused(loaded, tmp_path):
    studio = Studio(loaded, tmp_path, 2**30)
    studio.start(Request(_story(1), {"steps": 1}))
    assert studio.wait(60).state == "finished"
    studio.start(Request(_story(1), {"steps": 1}, "resume", studio.current_session))
    snap = studio.wait(60)
    assert snap.state == "failed" and "no longer than what was generated already" in snap.message
    studio.start(Request(_story(2), {"steps": 1, "segment_frames": 4}, "resume", studio.current_session))
    snap = studio.wait(60)
    assert snap.state == "failed" and "keeps" in snap.message  # the CLI's message: the segment length stays
    studio.close()


def test_uploads_that_are_not_what_they_claim_get_a_sentence(tmp_path):
    text = tmp_path / "clip.mp4"
    text.write_text("hello\n" * 100)
    with pytest.raises(UploadError, match=r"^clip.mp4: not a video the studio can read"):
        check_video(text, 2**30)
    with pytest.raises(UploadError, match=r"^clip.mp4: 0.000572 MB is over the studio's upload limit of 0.000488 MB"):
        check_video(text, 512)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UploadError, match="empty"):
        check_image(tmp_path / "empty.png", 2**30)
    with pytest.raises(UploadError, match="not an image"):
        check_image(text, 2**30)
    with pytest.raises(UploadError, match="not a tinyhistory session"):
        check_session(text, 2**30)
    assert check_video("assets/bbb_64px_8fps.mp4", 2**30).fps == 8


def test_the_studio_command_binds_to_this_machine_by_default():
    args = build_parser().parse_args(["studio"])
    assert args.host == "127.0.0.1" and args.func.__name__ == "_cmd_studio" and args.max_upload_mb == 2048
