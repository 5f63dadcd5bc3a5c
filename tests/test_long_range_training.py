"""Stage-II training on windows whose target is a shot that returns (``train.long_range_share``, issue 22).

The clip is real footage: Big Buck Bunny frames from two shots cut as A, B, A again, written as an mp4 and decoded
as any training video is; the search uses the real MobileNetV2 features (ASSETS.md)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tinyhistory.data.video import decode_video, write_video
from tinyhistory.data.windows import WindowSampler, to_pixels
from tinyhistory.eval.features import MobileNetV2Features
from tinyhistory.paths import resolve_path
from tinyhistory.train.long_range import FILE, LongRangePicks, find_long_range_picks
from tinyhistory.train.trainer import train

# 8 frames of shot A, 6 of shot B, A again for 14 frames (the training part), then 12 frames of shot C held out
SHOTS = (("A", 8), ("B", 6), ("A", 14), ("C", 12))
SECONDS = {"A": 20.0, "B": 95.0, "C": 150.0}  # where each shot is taken from in the 64-px asset


@pytest.fixture(scope="module")
def returning_shot_video(tmp_path_factory) -> tuple:
    """An mp4 of :data:`SHOTS` and the frame where A returns (14)."""
    asset = resolve_path("assets/bbb_64px_8fps.mp4")
    taken = {name: 0 for name in SECONDS}
    parts = []
    for name, count in SHOTS:
        frames = decode_video(asset, fps=8.0, size=64, start=SECONDS[name], duration=4.0)
        parts.append(frames[taken[name] : taken[name] + count])  # A goes on where it was cut
        taken[name] += count
    path = tmp_path_factory.mktemp("clip") / "returning.mp4"
    write_video(np.concatenate(parts), path, fps=8.0)
    return path, 14


def test_the_search_finds_the_windows_that_end_in_the_returning_shot(returning_shot_video):
    path, returns = returning_shot_video
    pixels = to_pixels(decode_video(path, fps=8.0, size=64))[:, :28]  # the training part
    sampler = WindowSampler(pixels, frames=12, codec=None, rates=[], uses_lr=[])
    found = find_long_range_picks(sampler, segment=2, features=MobileNetV2Features())
    # history 10: the older 5-6 frames show A, the last 3 before the cue B, the cue (1 or 2 frames) and target A
    by_start = {row["window_start_frame"]: row for row in found.rows}
    assert set(by_start) == {returns + 1 - 10, returns + 2 - 10}, found.rows
    assert by_start[returns + 1 - 10]["cue_frames"] == 1 and by_start[returns + 2 - 10]["cue_frames"] == 2
    assert all(row["target_frames"][0] - row["cue_frames"] == returns for row in found.rows)
    assert all(row["matched_frame"] < 8 and row["recall"] - row["recent"] >= 0.1 for row in found.rows)
    assert found.picks.tolist() == sorted(by_start)
    g = torch.Generator().manual_seed(0)
    assert set(found.pick(16, g).tolist()) == set(by_start)


def test_training_draws_that_share_of_steps_from_them_split_before_the_target(
    returning_shot_video, small_config, tmp_path, monkeypatch, record_trainer_calls
):
    path, returns = returning_shot_video
    calls = record_trainer_calls("batch_for")
    overrides = [
        'train.stage="ar"', "train.history_frames=12", "train.segment_frames=2", "train.checkpoint_every=3",
        f'data.video="{path}"', "data.heldout_fraction=0.3", "train.long_range_share=0.5",
    ]  # fmt: skip
    train(small_config(*overrides, "train.steps=6"), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / FILE).read_text())
    starts = {row["pick"] for row in saved["windows"]}
    assert starts == {returns + 1 - 10, returns + 2 - 10}
    steps = [(c["picks"].tolist(), c["split"]) for c in calls if c["split"] is not None]  # held-out: no split
    assert 1 <= len(steps) <= 5, calls  # about half of 6 steps, from the run's seeded generator
    assert all(split == 10 and set(picks) <= starts for picks, split in steps)
    # a resumed run reads the windows it found instead of searching again
    monkeypatch.setattr("tinyhistory.train.long_range.find_long_range_picks", lambda *a: pytest.fail("searched"))
    summary = train(small_config(*overrides, "train.steps=8"), tmp_path / "run", progress=False)
    assert summary["steps"] == 8


def test_long_range_share_is_stage_two_only_and_needs_returning_shots(small_config, returning_shot_video, tmp_path):
    path, _ = returning_shot_video
    no_return = tmp_path / "no_return.mp4"  # A, B, C: nothing comes back
    frames = decode_video(path, fps=8.0, size=64)
    write_video(np.concatenate([frames[:8], frames[14:28], frames[8:14], frames[28:]]), no_return, fps=8.0)
    cfg = small_config(
        'train.stage="ar"', "train.history_frames=12", "train.segment_frames=2", f'data.video="{no_return}"',
        "data.heldout_fraction=0.3", "train.steps=2", "train.long_range_share=0.5",
    )  # fmt: skip
    with pytest.raises(ValueError, match="no training window of 12 frames ends in a shot that returns"):
        train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="train.long_range_share = 0.5 draws stage II"):
        small_config("train.long_range_share=0.5")
    with pytest.raises(ValueError, match=r"train.long_range_share must be in \[0, 1\]"):
        small_config(
            'train.stage="ar"', "train.history_frames=12", "train.segment_frames=2", "train.long_range_share=2"
        )  # noqa: E501


def test_a_batch_of_long_range_windows_holds_one_shape():
    """From a cache with aspect-ratio buckets: the first pick's shape decides the rest of the batch."""
    picks = torch.tensor([[0, 0], [0, 2], [1, 0], [1, 4], [1, 6]])
    found = LongRangePicks(picks, rows=[{}] * 5, shapes=[(16, 8, 20)] * 2 + [(16, 16, 16)] * 3)
    g = torch.Generator().manual_seed(0)
    runs_seen = set()
    for _ in range(30):
        batch = found.pick(4, g)
        assert len(set(batch[:, 0].tolist())) == 1  # one run here is one shape
        runs_seen.add(int(batch[0, 0]))
    assert runs_seen == {0, 1}
