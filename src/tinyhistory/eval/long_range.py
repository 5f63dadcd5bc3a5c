"""Long-range seconds: where a memory can help and a sliding window cannot (issue 22).

The paper's claim is that a compressed *whole* history keeps what a short window forgets: a character or a place
that comes back after a cut. A teacher-forced next second whose content is close to something earlier in the history
but far from the last few frames is such a case. This module finds those seconds in a clip by image features
(ImageNet MobileNetV2, the project's consistency features), so the next-segment protocol can score them apart from
the rest:

* for every candidate window start ``s`` (history ``[s, s+h)``, target ``[s+h, s+h+n)``), the target's mean feature is
  compared (cosine) with each history frame outside the last ``window`` frames (``recall``: the best match) and with
  each of the last ``window`` frames (``recent``: the best match);
* a start qualifies when ``recall >= min_recall`` and ``recall − recent >= margin``: the target looks like something
  the history holds and unlike what the window holds;
* the qualifying starts are ranked by ``recall − recent`` and taken greedily so that no two targets overlap.

Such a target starts at a cut, and nothing in a teacher-forced history says that a cut comes next: a predictor with
no cue must continue the shot it sees, memory or not (of the 8 the miniature's held-out part gives, 7 start exactly
at a cut and the eighth one frame later: consecutive-frame cosine 0.46-0.74 there against a median of 0.98). With
``cue = k`` the history ends with the first ``k`` frames of the returning shot instead, as a shot change announced
by a storyboard or the first generated frame would: the cue frames are left out of both comparisons (``recent`` is
the ``window`` frames before them) and must themselves look like the target, so the window still shows the other
shot but for the cue, and what the memory adds is everything the cue does not show.

The listing (start, target frames, recall, recent, and the history frame that matched) goes into the results so that
anyone can look at the seconds that were picked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from tinyhistory.eval.next_segment import NextSegmentSet


@dataclass(frozen=True)
class LongRangeSecond:
    start: int  # first history frame of the window; the target is [start + history, start + history + segment)
    target: tuple[int, int]  # [first, last) frame of the target in the clip
    recall: float  # best cosine of the target's mean feature to a history frame outside the last window
    recent: float  # best cosine to one of the last ``window`` history frames
    matched_frame: int  # the clip frame that gave ``recall``

    @property
    def gap(self) -> float:
        return self.recall - self.recent


def long_range_seconds(
    frame_features: torch.Tensor,
    history: int,
    segment: int,
    window: int,
    count: int,
    min_recall: float = 0.6,
    margin: float = 0.1,
    stride: int = 1,
    cue: int = 0,
) -> list[LongRangeSecond]:
    """Up to ``count`` non-overlapping long-range seconds of a clip from its per-frame features ``(T, F)``.

    ``history``/``segment``/``window``: frames of history, of the target and of the sliding window the memory is
    compared with; ``cue``: the history's last frames, which must show the target as the older history does (each at
    a cosine ≥ ``min_recall`` and ``margin`` above the window's best: the returning shot's first frames, module
    docstring) and are left out of both comparisons. Returns them best first (largest ``recall − recent``).
    """
    frames = frame_features.shape[0]
    check_long_range_window(history, window, cue)
    if frames < history + segment:
        raise ValueError(f"the clip has {frames} frames, fewer than history + segment = {history + segment}")
    unit = F.normalize(frame_features.float(), dim=1)  # (T, F)
    candidates = []
    for start in range(0, frames - history - segment + 1, stride):
        found = long_range_at(unit, start, history, segment, window, cue, min_recall, margin)
        if found is not None:
            candidates.append(found)
    picked: list[LongRangeSecond] = []
    for c in sorted(candidates, key=lambda c: c.gap, reverse=True):
        if len(picked) == count:
            break
        if all(c.target[1] <= p.target[0] or c.target[0] >= p.target[1] for p in picked):
            picked.append(c)
    return picked


def check_long_range_window(history: int, window: int, cue: int) -> None:
    """The window and the cue must leave older history to recall from."""
    if window <= 0 or cue < 0 or window + cue >= history:
        raise ValueError(
            f"the window ({window} frames) and the cue ({cue} frames) must be shorter than the history "
            f"({history} frames) together, the window > 0 and the cue ≥ 0"
        )


def long_range_at(
    unit: torch.Tensor,
    start: int,
    history: int,
    segment: int,
    window: int,
    cue: int = 0,
    min_recall: float = 0.6,
    margin: float = 0.1,
) -> LongRangeSecond | None:
    """The window starting at ``start`` as a long-range second, or None when its target does not qualify
    (:func:`long_range_seconds`' test). ``unit``: the clip's per-frame features ``(T, F)``, L2-normalised; the
    window ``[start, start + history + segment)`` must lie inside it."""
    first = start + history
    target = F.normalize(unit[first : first + segment].mean(0), dim=0)  # (F,)
    sims = unit[start : first - cue] @ target  # (history − cue,) cosine of each history frame to the target
    older, recent = sims[: history - cue - window], sims[history - cue - window :]
    best = int(older.argmax())
    recall, near = float(older[best]), float(recent.max())
    cued = float((unit[first - cue : first] @ target).min()) if cue else None  # the cue's worst match
    shows_target = cued is None or (cued >= min_recall and cued - near >= margin)
    if recall >= min_recall and recall - near >= margin and shows_target:
        return LongRangeSecond(start, (first, first + segment), recall, near, start + best)
    return None


def clip_features(pixels: torch.Tensor, features, batch: int = 64) -> torch.Tensor:
    """MobileNetV2 features ``(T, F)`` of a ``(3, T, H, W)`` clip in [-1, 1], a batch of frames at a time."""
    from tinyhistory.data.windows import to_uint8

    parts = [features(to_uint8(pixels[:, i : i + batch])) for i in range(0, pixels.shape[1], batch)]
    return torch.cat(parts) if parts else torch.empty(0)


def listing(seconds: list[LongRangeSecond], fps: float) -> list[dict]:
    """The picked seconds as JSON rows (frames and seconds of the clip)."""
    return [
        {
            "window_start": s.start,
            "target_frames": list(s.target),
            "target_seconds": [round(s.target[0] / fps, 3), round(s.target[1] / fps, 3)],
            "recall": round(s.recall, 4),
            "recent": round(s.recent, 4),
            "matched_frame": s.matched_frame,
            "matched_second": round(s.matched_frame / fps, 3),
        }
        for s in seconds
    ]


def listing_table(rows: list[dict]) -> list[str]:
    """:func:`listing`'s rows as a markdown table (one line per second), for the results pages."""
    lines = [
        "| target (s into the held-out part) | matched history frame (s) | cos. to older history | cos. to window |",
        "|---|---|---|---|",
    ]
    return lines + [
        f"| {r['target_seconds'][0]:g}–{r['target_seconds'][1]:g} | {r['matched_second']:g} | {r['recall']:.3f} | "
        f"{r['recent']:.3f} |"
        for r in rows
    ]


def long_range_windows(
    pixels: torch.Tensor,
    codec,
    history: int,
    segment: int,
    window: int,
    features,
    fps: float,
    count: int,
    cue: int = 0,
) -> tuple[dict, NextSegmentSet] | None:
    """The next-segment windows of a ``(3, T, H, W)`` clip whose targets are long-range seconds
    (:func:`long_range_seconds` with the default thresholds: ``count`` at most, against a ``window``-frame sliding
    window, the history ending in ``cue`` frames of the returning shot), as a
    :class:`~tinyhistory.eval.next_segment.NextSegmentSet`, with the results section that says how they were picked
    and lists them (``models`` left for the caller to fill). None without such seconds."""
    from tinyhistory.eval.next_segment import next_segment_set

    picked = long_range_seconds(clip_features(pixels, features), history, segment, window, count, cue=cue)
    if not picked:
        return None
    eval_set = next_segment_set(pixels, codec, history, segment, len(picked), starts=[p.start for p in picked])
    cued = (
        f"whose history ends in {cue} frame(s) of the target's shot (the cue, held to the same test), " if cue else ""
    )
    section = {
        "protocol": (
            f"the {len(picked)} held-out seconds {cued}most like a frame of their {history / fps:g}-s history outside "
            f"its last {window} frames{' before the cue' if cue else ''} and least like those {window} frames "
            "(MobileNetV2 features: best cosine to the older history ≥ 0.6 and ≥ 0.1 above the best to the window), "
            "teacher-forced as above"
        ),
        "cue_frames": cue,
        "seconds": listing(picked, fps),
        "models": {},
    }
    return section, eval_set
