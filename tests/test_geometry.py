"""The paper's context-length figures (SPEC §2), pinned."""

import json

import pytest

from tinyhistory.cli import main
from tinyhistory.geometry import Rate, context_report, get_base


def report(base, fps, seconds, *rates, height=480, width=832):
    return context_report(get_base(base), height, width, fps, seconds, [Rate.parse(r) for r in rates])


def test_hunyuan_60s_full_context():
    assert report("hunyuanvideo", 24, 60, "4x4x2").full_tokens == 561_600


def test_hunyuan_20s_full_and_history():
    r = report("hunyuanvideo", 24, 20, "4x4x2")
    assert r.full_tokens == 187_200
    assert r.history_tokens == 5_460 == 7 * 13 * 60  # floor on odd grids (15 latent rows → 7 token rows)
    assert r.token_grid == (120, 30, 52)


@pytest.mark.parametrize(
    ("rates", "per_second"),
    [(["4x4x2"], 195), (["2x2x2"], 780), (["2x2x4"], 390), (["2x2x1"], 1560), (["4x4x2", "2x2x8"], 390)],
)
def test_wan21_per_second(rates, per_second):
    r = report("wan2.1-14b", 16, 1, *rates)
    assert r.full_tokens_per_second == 6240
    assert r.full_tokens == 6240
    assert r.history_tokens_per_second == per_second


def test_rate_parsing_and_errors():
    assert Rate.parse("4×4×2") == Rate(4, 4, 2)
    with pytest.raises(ValueError, match="HxWxT"):
        Rate.parse("4x4")
    with pytest.raises(ValueError, match=r"t=3 is not supported"):
        Rate.parse("4x4x3")
    with pytest.raises(ValueError, match="unknown base 'wan3'"):
        get_base("wan3")


def test_cli_context_json(capsys):
    argv = [
        "context",
        "--base",
        "wan2.1-14b",
        "--height",
        "480",
        "--width",
        "832",
        "--fps",
        "16",
        "--seconds",
        "20",
        "--rate",
        "4x4x2",
        "--rate",
        "2x2x8",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["full_tokens"] == 124_800
    assert out["full_tokens_per_second"] == 6240
    assert out["history_tokens_per_second"] == 390
    assert out["history_tokens"] == 7 * 13 * 40 + 15 * 26 * 10  # 4x4x2 grid + 2x2x8 grid (80 latent frames)


def test_cli_context_bad_rate_is_a_clear_error(capsys):
    assert main(["context", "--rate", "3x3x3"]) == 2
    assert "rate factor" in capsys.readouterr().err
