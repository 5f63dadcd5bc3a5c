"""The storyboard editor's table: rows of ``start, end, prompt`` ↔ :class:`~tinyhistory.text.storyboard.Storyboard`.

Validation is the CLI's own (``Storyboard.from_dict``), so the page says exactly what ``tinyhistory generate`` says
about the same storyboard file. The whole-board message names only the first problem, so each row is also checked on
its own, which lets the editor put every bad shot's message beside that shot; overlaps (a problem of two shots)
are put beside both.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from tinyhistory.text.storyboard import Storyboard

COLUMNS = ("start", "end", "prompt")
SOURCE = "storyboard"  # the name the messages give the storyboard (the CLI gives the file's path)
OK = "✓"


@dataclass(frozen=True)
class Checked:
    """A table's verdict: the storyboard (None if invalid), the CLI's message, one note per row."""

    story: Storyboard | None
    message: str
    notes: list[str]

    @property
    def ok(self) -> bool:
        return self.story is not None


def is_blank(value) -> bool:
    """An empty cell (gradio gives None, NaN or text)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _cell(key: str, value):
    """A cell as the JSON value a storyboard file would hold: times as numbers when they read as numbers (else
    the text, so the CLI's "must be a number" message names it), prompts as text."""
    if key == "prompt":
        return value if isinstance(value, str) else str(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return value
    return value


def rows_to_data(rows: list[list]) -> tuple[dict, list[int]]:
    """The storyboard JSON object of the table's rows and, per shot, its row. Empty rows are left out; an empty
    cell is a missing field."""
    shots, where = [], []
    for index, row in enumerate(rows or []):
        cells = (list(row) + [None] * len(COLUMNS))[: len(COLUMNS)]
        if all(is_blank(c) for c in cells):
            continue
        shots.append({k: _cell(k, v) for k, v in zip(COLUMNS, cells, strict=True) if not is_blank(v)})
        where.append(index)
    return {"shots": shots}, where


def _single(shot: dict) -> str | None:
    """What the CLI says about one shot alone (its field problems), without the "storyboard: shot 0: " part."""
    try:
        Storyboard.from_dict({"shots": [shot]}, SOURCE)
    except ValueError as exc:
        return re.sub(rf"^{SOURCE}: shot 0: ", "", str(exc))
    return None


def check_rows(rows: list[list]) -> Checked:
    """Validate the table as the CLI validates a storyboard file; ``notes[i]`` is row i's verdict."""
    data, where = rows_to_data(rows)
    notes = ["" for _ in rows or []]
    try:
        story = Storyboard.from_dict(data, SOURCE)
    except ValueError as exc:
        message = str(exc)
        for shot, row in zip(data["shots"], where, strict=True):
            notes[row] = _single(shot) or OK
        _overlaps(data["shots"], where, notes)
        return Checked(None, message, notes)
    for row in where:
        notes[row] = OK
    return Checked(story, "", notes)


def _overlaps(shots: list[dict], where: list[int], notes: list[str]) -> None:
    """Put "overlaps …" beside both shots of every overlapping pair of otherwise valid shots (the CLI's rule:
    sorted by start, a shot may not start before the one before it ends)."""
    valid = sorted((s["start"], s["end"], row) for s, row in zip(shots, where, strict=True) if notes[row] == OK)
    for (_, a_end, a_row), (b_start, _, b_row) in zip(valid, valid[1:], strict=False):
        if b_start < a_end:
            notes[a_row] = f"overlaps the shot in row {b_row + 1}"
            notes[b_row] = f"overlaps the shot in row {a_row + 1}"


def story_to_rows(story: Storyboard) -> list[list]:
    return [[s.start, s.end, s.prompt] for s in story.shots]


def import_json(path: str | Path) -> tuple[list[list], str]:
    """The rows of a storyboard JSON file, and the CLI's message about it ("" when valid)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors save one) is skipped
    except UnicodeDecodeError:
        return [], f"{path.name}: not a text file (a storyboard is JSON)"
    return import_text(text, path.name)


def import_text(text: str, source: str = SOURCE) -> tuple[list[list], str]:
    """The rows of a storyboard's JSON text and the CLI's message about it ("" when valid). Malformed shots still
    fill the table as far as they go, so the editor can show and fix them."""
    try:
        data = json.loads(text.removeprefix("\ufeff"))  # a byte-order mark (Windows editors save one) is not JSON
    except json.JSONDecodeError as exc:
        return [], f"{source}: invalid JSON ({exc})"
    try:
        story = Storyboard.from_dict(data, source)
    except ValueError as exc:
        shots = data.get("shots") if isinstance(data, dict) else None
        rows = [[s.get(k) for k in COLUMNS] for s in shots if isinstance(s, dict)] if isinstance(shots, list) else []
        return rows, str(exc)
    return story_to_rows(story), ""


def export_json(story: Storyboard, path: str | Path) -> Path:
    """Write ``story`` as a storyboard file ``tinyhistory generate --storyboard`` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(story.to_dict(), indent=2) + "\n")
    return path
