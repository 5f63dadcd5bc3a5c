"""Stage-II training windows whose target is a shot that returns (``train.long_range_share``, issue 22).

A uniformly drawn training window almost never needs its older history: the next second continues the last frames,
so a model learns to read them and nothing older (issue 22's finding: the encoder models' lead on the long-range
seconds is their read of the recent frames). The paper's claim lives in the rare windows where a shot comes back
after a cut. This module finds them in the *training* part of the data, by the held-out search's own test
(:func:`~tinyhistory.eval.long_range.long_range_at`: MobileNetV2 features, the target like something in the older
history and unlike the last ``WINDOW`` frames, the history ending in ``CUES`` frames of the returning shot, which
announce the cut as a storyboard's shot change or a first generated frame would), so that the trainer can draw a
share of its steps from them, each split with the whole window's history before its target.

The search runs once per run folder (a few minutes of MobileNetV2 on a CPU for 3,000 frames) and is kept in
``OUT/long_range_windows.json`` with the windows it found, so that a resumed run draws from the same windows and
anyone can look at them. It reads pixels: the decoded clip's, or with a ``data prepare`` cache each cached video's
source file (checked against the hash the cache recorded); a cache's latent frames must be its pixel frames
(a codec with temporal factor 1, as the miniature's and the pixel codec), which a causal VAE's are not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from tinyhistory.data.cache import CacheSampler
from tinyhistory.data.video import decode_video
from tinyhistory.data.windows import WindowSampler, to_pixels
from tinyhistory.eval.long_range import LongRangeSecond, check_long_range_window, clip_features, long_range_at
from tinyhistory.files import replace_file
from tinyhistory.hashing import file_sha256
from tinyhistory.paths import resolve_path

WINDOW = 3  # frames of sliding window the returning shot must be unlike (the held-out search's --window)
CUES = (1, 2)  # frames of the returning shot that may end the history (the first that qualifies is kept): with
# 2-frame blocks, windows start on even frames, and a cut on an odd or an even frame is then reached with one of them
FILE = "long_range_windows.json"


@dataclass
class LongRangePicks:
    """The sampler's picks whose window ends in a returning shot, and a JSON row for each (where and why)."""

    picks: torch.Tensor  # (N,) WindowSampler starts, or (N, 2) CacheSampler (run, offset) picks
    rows: list[dict]
    shapes: list | None = None  # each pick's latent shape (a cache's aspect-ratio buckets), None: all alike

    def pick(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` picks drawn uniformly (with replacement) among the long-range windows; with several shapes, the
        first pick's decides and the others are drawn among the windows of that shape (a batch is one shape)."""
        index = torch.randint(0, len(self.picks), (batch,), generator=generator)
        if self.shapes is not None and len(set(self.shapes)) > 1:
            pool = torch.tensor([i for i, s in enumerate(self.shapes) if s == self.shapes[int(index[0])]])
            index = torch.cat([index[:1], pool[torch.randint(0, len(pool), (batch - 1,), generator=generator)]])
        return self.picks[index]


def search_window(unit: torch.Tensor, start: int, history: int, segment: int) -> tuple[LongRangeSecond, int] | None:
    """The long-range second of the window at ``start`` with the first of :data:`CUES` that qualifies, and that cue."""
    for cue in CUES:
        found = long_range_at(unit, start, history, segment, WINDOW, cue)
        if found is not None:
            return found, cue
    return None


def _row(found: LongRangeSecond, cue: int, pick: list[int] | int, source: str) -> dict:
    return {
        "pick": pick,
        "source": source,
        "window_start_frame": found.start,
        "target_frames": list(found.target),
        "cue_frames": cue,
        "recall": round(found.recall, 4),
        "recent": round(found.recent, 4),
        "matched_frame": found.matched_frame,
    }


def find_long_range_picks(sampler: WindowSampler | CacheSampler, segment: int, features) -> LongRangePicks:
    """Every training window of ``sampler`` whose last ``segment`` frames are a returning shot (module docstring);
    ``features``: a :class:`~tinyhistory.eval.features.MobileNetV2Features`."""
    history = sampler.frames - segment
    check_long_range_window(history, WINDOW, max(CUES))
    picks, rows = [], []
    if isinstance(sampler, WindowSampler):
        unit = F.normalize(clip_features(sampler.pixels, features).float(), dim=1)  # (T, F)
        for start in sampler.valid_starts.tolist():
            found = search_window(unit, start, history, segment)
            if found is not None:
                picks.append(start)
                rows.append(_row(*found, start, "the decoded clip"))
        return _long_range_picks(sampler, picks, rows)
    by_video: dict[int, list[tuple[int, int, int]]] = {}  # video → (run, offset, first frame) of its training windows
    for run_index, offset in sampler.valid_picks.tolist():
        run = sampler.runs[run_index]
        start = sampler.videos[run.video].window_starts[run.windows[0]] + offset  # a latent frame is a frame
        by_video.setdefault(run.video, []).append((run_index, offset, start))
    for v, video_picks in by_video.items():
        video = sampler.videos[v]
        reach = max(start for _, _, start in video_picks) + sampler.frames  # the held-out tail is never featurised
        unit = F.normalize(clip_features(_source_pixels(video)[:, :reach], features).float(), dim=1)  # (T, F)
        for run_index, offset, start in video_picks:
            found = search_window(unit, start, history, segment)
            if found is not None:
                picks.append([run_index, offset])
                rows.append(_row(*found, [run_index, offset], video.source))
    return _long_range_picks(sampler, picks, rows)


def _long_range_picks(sampler: WindowSampler | CacheSampler, picks: list, rows: list[dict]) -> LongRangePicks:
    """``picks`` (starts, or ``[run, offset]`` pairs) as the sampler's pick tensor, with each window's shape where a
    cache may hold several."""
    tensor = torch.tensor(picks, dtype=torch.long)
    if isinstance(sampler, WindowSampler):
        return LongRangePicks(tensor, rows)
    tensor = tensor.reshape(-1, 2)
    return LongRangePicks(tensor, rows, [sampler.shape_of(p) for p in tensor])


def _source_pixels(video) -> torch.Tensor:
    """A cached video's source decoded as the cache decoded it ``(3, T, H, W)``, after checking that its latent frames
    are its frames and that the file is the one the cache was made from."""
    if video.temporal_factor != 1:
        raise ValueError(
            f"{video.shard}: train.long_range_share finds returning shots frame by frame, and this cache's codec "
            f"has {video.temporal_factor} pixel frames per latent frame (it needs 1: a framewise codec such as the "
            "miniature's or the pixel codec)"
        )
    source = resolve_path(video.source)
    if not source.is_file():
        raise FileNotFoundError(
            f"{video.shard}: train.long_range_share reads the cached video's source {source}, which is not there"
        )
    if video.source_sha256 and file_sha256(source) != video.source_sha256:
        raise ValueError(
            f"{video.shard}: its source {source} changed since the cache was made; run `data prepare` again"
        )
    frames = decode_video(source, fps=video.fps, size=video.config.get("size") or 224)
    return to_pixels(frames)


def long_range_picks_for_run(sampler: WindowSampler | CacheSampler, segment: int, out: Path) -> LongRangePicks:
    """The run's long-range windows: read from ``OUT/long_range_windows.json`` when an earlier start of this run
    found them, else searched (:func:`find_long_range_picks`) and written there. Raises when none is found: a share
    of steps with nothing to draw from is a config that cannot do what it says."""
    path = out / FILE
    if path.is_file():
        saved = json.loads(path.read_text())
        return _long_range_picks(sampler, [r["pick"] for r in saved["windows"]], saved["windows"])
    from tinyhistory.eval.features import MobileNetV2Features

    found = find_long_range_picks(sampler, segment, MobileNetV2Features())
    if not found.rows:
        raise ValueError(
            f"train.long_range_share: no training window of {sampler.frames} frames ends in a shot that returns "
            f"(a {segment}-frame target like the older history and unlike its last {WINDOW} frames, after a "
            f"{'- or '.join(map(str, CUES))}-frame cue); train without it"
        )
    summary = {
        "protocol": (
            f"training windows of {sampler.frames} frames whose last {segment} frames (the target, after a history of "
            f"{sampler.frames - segment}) look like a frame of the history outside its last {WINDOW} frames before "
            f"the cue and unlike those {WINDOW} (MobileNetV2: best cosine to the older history >= 0.6 and >= 0.1 "
            f"above the best to the window), the history ending in {' or '.join(map(str, CUES))} frame(s) of the "
            "target's shot (the cue, held to the same test)"
        ),
        "windows": found.rows,
    }
    replace_file(path, (json.dumps(summary, indent=1) + "\n").encode(), "the long-range training windows")
    return found
