"""Long-range seconds (issue 22): targets like something earlier in the history and unlike the last window."""

from __future__ import annotations

import pytest
import torch

from tinyhistory.eval.long_range import listing, long_range_seconds


def _scene_features(scenes: str) -> torch.Tensor:
    """One orthogonal unit feature per scene letter, per frame: ``"AAAB"`` → 4 frames of (4 scenes) features."""
    names = sorted(set(scenes))
    eye = torch.eye(len(names))
    return torch.stack([eye[names.index(c)] for c in scenes])


def test_a_shot_that_returns_after_a_cut_is_found_and_one_seen_in_the_window_is_not():
    # history of 8 frames (window 2), target 2 frames; scene A returns at frames 10-11 after B at 6-9
    clip = _scene_features("AAAAAABBBBAACCCC")
    seconds = long_range_seconds(clip, history=8, segment=2, window=2, count=5, min_recall=0.9, margin=0.5)
    starts = [s.start for s in seconds]
    assert 2 in starts  # history 2..9 = AAAABBBB, last window BB, target 10..11 = AA: recall 1, recent 0
    best = next(s for s in seconds if s.start == 2)
    assert best.target == (10, 12) and best.recall == pytest.approx(1.0) and best.recent == pytest.approx(0.0)
    assert 2 <= best.matched_frame <= 5  # an A frame outside the last window
    # the target C C at 12..13 never appeared before: not a long-range second, whatever the window holds
    assert all(s.target[0] < 12 for s in seconds)
    # targets do not overlap
    spans = sorted(s.target for s in seconds)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_a_target_like_the_window_is_not_long_range():
    clip = _scene_features("AAAABBBBBBBB")  # the target B is what the last window shows
    assert long_range_seconds(clip, history=6, segment=2, window=2, count=3, min_recall=0.5, margin=0.1) == []


def test_a_cue_ends_the_history_in_the_returning_shot_and_is_left_out_of_both_comparisons():
    # A returns at frame 10 after B at 6-9; with a 1-frame cue the history must end in that A frame
    clip = _scene_features("AAAAAABBBBAAAACCCC")
    seconds = long_range_seconds(clip, history=8, segment=2, window=2, count=5, min_recall=0.9, margin=0.5, cue=1)
    starts = [s.start for s in seconds]
    # history 3..10 = AAABBBB|A: the cue A, the window before it BB, the target 11..12 = AA
    assert 3 in starts
    cued = next(s for s in seconds if s.start == 3)
    assert cued.target == (11, 13) and cued.recall == pytest.approx(1.0) and cued.recent == pytest.approx(0.0)
    assert 3 <= cued.matched_frame <= 5  # an older A frame, never the cue (frame 10)
    # the uncued pick (history 2..9 = AAAABBBB, target 10..11): its last frame B does not show the target
    assert 2 in [s.start for s in long_range_seconds(clip, 8, 2, 2, 5, 0.9, 0.5)] and 2 not in starts
    with pytest.raises(ValueError, match="cue"):
        long_range_seconds(clip, history=8, segment=2, window=2, count=1, cue=6)


def test_listing_and_bad_arguments():
    clip = _scene_features("AAAAAABBBBAACCCC")
    rows = listing(long_range_seconds(clip, 8, 2, 2, 1, 0.9, 0.5), fps=8.0)
    assert rows[0]["target_seconds"] == [1.25, 1.5] and rows[0]["recall"] == 1.0
    with pytest.raises(ValueError, match="window"):
        long_range_seconds(clip, history=4, segment=2, window=4, count=1)
    with pytest.raises(ValueError, match="fewer than history"):
        long_range_seconds(clip, history=15, segment=2, window=2, count=1)
