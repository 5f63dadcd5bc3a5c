import json

import pytest

from tinyhistory.text.storyboard import Storyboard

BOARD = {
    "shots": [
        {"start": 4.0, "end": 9.5, "prompt": "Three rodents watch from a tree."},
        {"start": 0, "end": 4, "prompt": "A rabbit wakes up in a meadow."},
        {"start": 12.0, "end": 15.0, "prompt": "The rabbit chases a butterfly."},
    ],
    "caption": "Big Buck Bunny",
}


def test_nearest_timestamp_rule():
    board = Storyboard.from_dict(BOARD)
    assert [s.start for s in board.shots] == [0.0, 4.0, 12.0] and board.duration == 15.0
    assert board.prompt_for(0, 1) == "A rabbit wakes up in a meadow."
    assert board.prompt_for(3.5, 5.5) == "Three rodents watch from a tree."  # midpoint 4.5
    assert board.prompt_for(10.0, 11.0) == "Three rodents watch from a tree."  # gap: 1.0 to 9.5 vs 1.5 to 12
    assert board.prompt_for(11.0, 12.0) == "The rabbit chases a butterfly."
    assert board.prompt_for(30, 31) == "The rabbit chases a butterfly."  # after the end: the last shot


def test_round_trip_through_a_file(tmp_path):
    path = tmp_path / "story.json"
    path.write_text(json.dumps(BOARD))
    board = Storyboard.load(path)
    assert Storyboard.from_dict(board.to_dict()) == board
    assert Storyboard.from_caption("a cat", 5.0).prompt_for(1, 2) == "a cat"


@pytest.mark.parametrize(
    ("shots", "message"),
    [
        ([{"start": 0, "end": 5, "prompt": "a"}, {"start": 4, "end": 6, "prompt": "b"}], "shots overlap"),
        ([{"start": -1, "end": 5, "prompt": "a"}], "shot 0: field 'start' is negative"),
        ([{"start": 0, "end": 5}], "shot 0: missing field 'prompt'"),
        ([{"start": 0, "end": 5, "prompt": "a"}, {"start": 5, "end": 6, "prompt": "  "}], "shot 1: field 'prompt'"),
        ([{"start": 3, "end": 2, "prompt": "a"}], r"end \(2\) must be after start \(3\)"),
        ([{"start": "0", "end": 2, "prompt": "a"}], "field 'start' must be a number"),
        ([], "at least one shot"),
    ],
)
def test_malformed_storyboards_name_the_shot_and_field(shots, message):
    with pytest.raises(ValueError, match=message):
        Storyboard.from_dict({"shots": shots}, "story.json")


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Storyboard.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json: invalid JSON"):
        Storyboard.load(bad)
