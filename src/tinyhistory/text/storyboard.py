"""Storyboards: timestamped prompts, validated, and the paper's nearest-timestamp rule.

Format (JSON)::

    {"shots": [{"start": 0.0, "end": 4.0, "prompt": "A rabbit wakes up in a meadow."},
               {"start": 4.0, "end": 9.5, "prompt": "Three rodents watch from a tree."}],
     "caption": "optional caption for the whole video"}

Times are seconds from the start of the video (finite, at most a day); shots must not overlap (touching is fine)
and need a non-empty prompt of at most ``MAX_PROMPT_CHARS`` characters. The paper gives the model "only the prompt
with the nearest timestamp" to the generated segment: here the shot whose time span is closest to the segment's
midpoint (distance 0 inside a shot; ties go to the earlier shot).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

MAX_SECONDS = 24 * 3600.0  # a storyboard longer than a day is a typo, not a video
MAX_PROMPT_CHARS = 4000  # far beyond what UMT5 (512 tokens) or Llama (256) reads; guards session files and caches
MAX_FILE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Shot:
    start: float
    end: float
    prompt: str

    def distance(self, time: float) -> float:
        """0 inside the shot, else the gap to its nearest edge."""
        return max(self.start - time, 0.0, time - self.end)


@dataclass(frozen=True)
class Storyboard:
    shots: tuple[Shot, ...]
    caption: str = ""

    @classmethod
    def from_dict(cls, data: dict, source: str = "storyboard") -> Storyboard:
        if not isinstance(data, dict) or not isinstance(data.get("shots"), list) or not data["shots"]:
            raise ValueError(
                f'{source}: expected {{"shots": [{{"start", "end", "prompt"}}, ...]}} with at least one shot'
            )
        # An unknown key is an error, not ignored: a misspelt "caption" or a shot's "promt" would otherwise vanish.
        _no_unknown_keys(data, STORYBOARD_KEYS, source)
        shots = []
        for i, raw in enumerate(data["shots"]):
            where = f"{source}: shot {i}"
            if not isinstance(raw, dict):
                raise ValueError(f"{where}: expected an object with start, end and prompt")
            _no_unknown_keys(raw, SHOT_KEYS, where)
            for key in ("start", "end", "prompt"):
                if key not in raw:
                    raise ValueError(f"{where}: missing field {key!r}")
            start, end, prompt = raw["start"], raw["end"], raw["prompt"]
            for key, value in (("start", start), ("end", end)):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{where}: field {key!r} must be a number of seconds, got {value!r}")
                if not math.isfinite(value) or value > MAX_SECONDS:
                    raise ValueError(f"{where}: field {key!r} must be a finite time of at most {MAX_SECONDS:g} s")
                if value < 0:
                    raise ValueError(f"{where}: field {key!r} is negative ({value})")
            if end <= start:
                raise ValueError(f"{where}: end ({end}) must be after start ({start})")
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{where}: field 'prompt' must be a non-empty string")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(f"{where}: field 'prompt' has {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
            shots.append(Shot(float(start), float(end), prompt.strip()))
        shots.sort(key=lambda s: s.start)
        for a, b in zip(shots, shots[1:], strict=False):
            if b.start < a.end:
                raise ValueError(
                    f"{source}: shots overlap: [{a.start}, {a.end}] {a.prompt!r} and [{b.start}, {b.end}] {b.prompt!r}"
                )
        caption = data.get("caption", "")
        if not isinstance(caption, str) or len(caption) > MAX_PROMPT_CHARS:
            raise ValueError(f"{source}: field 'caption' must be a string of at most {MAX_PROMPT_CHARS} characters")
        return cls(tuple(shots), caption)

    @classmethod
    def load(cls, path: str | Path) -> Storyboard:
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"storyboard {path} is a folder, not a JSON file")
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"{path}: a storyboard of {path.stat().st_size} bytes is too large")
            data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors save one) is skipped
        except FileNotFoundError:
            raise FileNotFoundError(f"storyboard not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_caption(cls, caption: str, duration: float) -> Storyboard:
        """A single shot spanning the whole video."""
        return cls((Shot(0.0, float(duration), caption),), caption)

    @property
    def duration(self) -> float:
        return self.shots[-1].end

    def prompt_for(self, start: float, end: float) -> str:
        """The prompt of the shot nearest to the segment ``[start, end)`` (by its midpoint)."""
        return self.shots[self.shot_index_for(start, end)].prompt

    def shot_index_for(self, start: float, end: float) -> int:
        """The index of the shot nearest to the segment ``[start, end)`` (cached text embeddings are per shot)."""
        if end < start:
            raise ValueError(f"segment end ({end}) is before its start ({start})")
        middle = (start + end) / 2
        return min(range(len(self.shots)), key=lambda i: (self.shots[i].distance(middle), self.shots[i].start))

    def to_dict(self) -> dict:
        data: dict = {"shots": [{"start": s.start, "end": s.end, "prompt": s.prompt} for s in self.shots]}
        if self.caption:
            data["caption"] = self.caption
        return data


STORYBOARD_KEYS = ("shots", "caption")
SHOT_KEYS = ("start", "end", "prompt")


def _no_unknown_keys(data: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(known)}")
