"""``votes.jsonl``: one JSON line per vote, appended and fsynced, never rewritten.

A vote is on disk before the rater sees the next pair (``append`` returns after ``os.fsync``), so a crash or a
restarted server loses nothing a rater was told was saved. Reading is tolerant: a line that does not parse (the
truncated last line a power cut leaves) is named and skipped, every other vote is kept; the next append starts on a
fresh line so the broken fragment never swallows a good vote.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

CHOICES = ("left", "right", "tie", "both_bad")
REASONS = ("identity", "scene", "motion", "prompt", "artefacts")
MAX_RATER_CHARS = 40


@dataclass(frozen=True)
class Vote:
    """One rater's answer on one pair. ``left``/``right`` are the systems as they were shown (the page never
    learns them); ``left_video``/``right_video`` their registered ids."""

    rater: str
    pair: str  # the pair's key (see schedule.Pair.key): storyboard, seed and the two systems
    storyboard: str
    seed: int
    left: str
    right: str
    left_video: str
    right_video: str
    choice: str  # one of CHOICES
    reasons: tuple[str, ...] = ()
    time: str = ""  # UTC, ISO 8601
    seconds: float | None = None  # how long the pair was on screen before the vote

    @property
    def winner(self) -> str | None:
        return {"left": self.left, "right": self.right}.get(self.choice)

    @property
    def loser(self) -> str | None:
        return {"left": self.right, "right": self.left}.get(self.choice)

    def score(self, system: str) -> float:
        """``system``'s score in this vote: 1 win, 0 loss, ½ for a tie or both bad (Bradley–Terry input)."""
        if self.choice in ("tie", "both_bad"):
            return 0.5
        return 1.0 if self.winner == system else 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data["reasons"] = list(self.reasons)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict) -> Vote:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        vote = cls(
            rater=str(data["rater"]),
            pair=str(data["pair"]),
            storyboard=str(data["storyboard"]),
            seed=int(data["seed"]),
            left=str(data["left"]),
            right=str(data["right"]),
            left_video=str(data["left_video"]),
            right_video=str(data["right_video"]),
            choice=str(data["choice"]),
            reasons=tuple(str(r) for r in data.get("reasons", ())),
            time=str(data.get("time", "")),
            seconds=None if data.get("seconds") is None else float(data["seconds"]),
        )
        if vote.choice not in CHOICES:
            raise ValueError(f"choice {vote.choice!r} is not one of {', '.join(CHOICES)}")
        if vote.left == vote.right:
            raise ValueError("a system compared with itself")
        return vote


def check_rater(name: object) -> str:
    """A rater's name as typed, stripped; 1-40 printable characters."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("give your name (it keeps your place: the same name continues where you were)")
    name = name.strip()
    if len(name) > MAX_RATER_CHARS or not name.isprintable():
        raise ValueError(f"a rater name is at most {MAX_RATER_CHARS} printable characters")
    return name


def read_votes(path: str | Path) -> tuple[list[Vote], list[str]]:
    """Every readable vote in ``path`` (none if it does not exist) and one message per line that is not a vote,
    naming the line (the votes around it are kept)."""
    path = Path(path)
    if not path.is_file():
        return [], []
    votes: list[Vote] = []
    problems: list[str] = []
    lines = path.read_bytes().split(b"\n")
    ends_clean = lines[-1] == b""  # every complete write ends its line
    last = len(lines) - (1 if ends_clean else 0)
    for number, raw in enumerate(lines[:last], 1):
        if not raw.strip():
            continue
        try:
            votes.append(Vote.from_dict(json.loads(raw.decode("utf-8"))))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            shown = raw[:60].decode("utf-8", errors="replace")
            truncated = " (a truncated last write?)" if number == last and not ends_clean else ""
            problems.append(
                f"{path} line {number} is not a vote{truncated}: {shown!r}{'…' if len(raw) > 60 else ''} "
                f"({type(exc).__name__}: {exc}); skipped, the other votes are kept"
            )
    return votes, problems


class VoteLog:
    """Appends votes to ``votes.jsonl`` from any thread; each is fsynced before ``append`` returns."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, vote: Vote) -> None:
        line = vote.to_json().encode("utf-8") + b"\n"
        with self._lock:
            with open(self.path, "ab") as f:
                if f.tell() > 0 and _last_byte(self.path) != b"\n":
                    f.write(b"\n")  # a truncated line before: start afresh so this vote is a line of its own
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if self.path.stat().st_size == len(line):  # a new file: make its directory entry durable too
                _fsync_dir(self.path.parent)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
