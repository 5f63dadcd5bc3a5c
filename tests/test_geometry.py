"""The paper's context-length figures (SPEC §2), pinned."""

import json
import os
import subprocess
import sys

import pytest

from tinyhistory.cli import main
from tinyhistory.config import load_config
from tinyhistory.geometry import BaseGeometry, Rate, bases, context_report, get_base, preset_geometry


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


# Every base as it was when geometry.py held the table itself. Base names are in checkpoints' config.json and cache
# keys, so a preset edit that changes one of these must fail here: a new shape is a new base name.
GOLDEN_BASES = {
    "wan2.1-1.3b": BaseGeometry("wan2.1-1.3b", 8, 4, (1, 2, 2), 16, 1536),
    "wan2.1-14b": BaseGeometry("wan2.1-14b", 8, 4, (1, 2, 2), 16, 5120),
    "wan2.2-ti2v-5b": BaseGeometry("wan2.2-ti2v-5b", 16, 4, (1, 2, 2), 48, 3072),
    "wan2.2-a14b-high": BaseGeometry("wan2.2-a14b-high", 8, 4, (1, 2, 2), 16, 5120),
    "hunyuanvideo": BaseGeometry("hunyuanvideo", 8, 4, (1, 2, 2), 16, 3072),
    "ltx-video": BaseGeometry("ltx-video", 32, 8, (1, 1, 1), 128, 2048),
    "tiny": BaseGeometry("tiny", 4, 1, (1, 2, 2), 48, 256),
    "miniature": BaseGeometry("miniature", 8, 1, (1, 2, 2), 16, 256),
}


def test_every_base_keeps_its_geometry():
    assert bases() == GOLDEN_BASES
    for name, geometry in GOLDEN_BASES.items():
        assert get_base(name) == geometry and isinstance(get_base(name).patch, tuple)
    # The pixel codec's factor is the tiny base's VAE factor, said twice (the codec needs it, the geometry names it).
    assert load_config("tiny").codec.factor == get_base("tiny").vae_spatial


def test_an_unknown_base_names_the_known_ones_and_how_to_declare_one():
    with pytest.raises(ValueError) as info:
        get_base("wan3")
    message = str(info.value)
    assert message.startswith(f"unknown base 'wan3'; known bases: {', '.join(sorted(GOLDEN_BASES))}")
    assert "[geometry]" in message and "vae_spatial" in message


def test_a_user_config_cannot_declare_a_base(tmp_path):
    """A run's geometry is looked up by its base's name wherever its config.json goes, so a user TOML that names a
    new base, or redeclares a geometry, gets an error that says a base is a preset's (not a silent default)."""
    new_base = tmp_path / "new.toml"
    new_base.write_text('base = "my-dit"\n[backbone]\nin_channels = 16\n')
    with pytest.raises(ValueError, match=r"unknown base 'my-dit'; known bases: .*a base is declared by a preset"):
        load_config("tiny", new_base)
    redeclared = tmp_path / "geometry.toml"
    redeclared.write_text("[geometry]\nvae_spatial = 16\n")
    with pytest.raises(ValueError, match=r"\[geometry\] belongs in a preset, not in a run's config"):
        load_config("tiny", redeclared)
    with pytest.raises(ValueError, match=r"\[geometry\] belongs in a preset"):
        load_config("wan2.1-t2v-14b", overrides=["geometry.hidden_dim=1536"])


WAN_TABLES = {"base": "new-dit", "backbone": {"family": "wan"}}
DIT_TABLE = {"in_channels": 16, "patch_size": [1, 2, 2], "num_attention_heads": 8, "attention_head_dim": 128}
SHAPE = {"vae_spatial": 8, "vae_temporal": 4, "patch": [1, 2, 2], "latent_channels": 16, "hidden_dim": 1024}


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({**WAN_TABLES, "geometry": SHAPE}, None),
        ({"base": "new-dit", "geometry": {"vae_spatial": 8, "vae_temporal": 1}, "backbone": DIT_TABLE}, None),
        ({**WAN_TABLES, "geometry": {**SHAPE, "hidden_dim": None}}, "hidden_dim must be a positive integer"),
        ({**WAN_TABLES, "geometry": {k: v for k, v in SHAPE.items() if k != "vae_temporal"}}, "geometry.vae_temporal"),
        (
            {"base": "new-dit", "geometry": SHAPE, "backbone": {"in_channels": 16}},
            "geometry.latent_channels and backbone.in_channels both describe the model",
        ),
        (
            {"base": "new-dit", "geometry": {**SHAPE, "hidden_dim": 1}, "backbone": {"num_attention_heads": 8}},
            "geometry.hidden_dim and backbone.num_attention_heads both describe",
        ),
        ({**WAN_TABLES, "geometry": {**SHAPE, "patch": [2, 2]}}, r"patch must be 3 positive integers"),
        ({**WAN_TABLES, "geometry": {**SHAPE, "channels": 16}}, "unknown key 'geometry.channels'"),
        ({"geometry": SHAPE}, "base = None must name"),
    ],
)
def test_a_preset_declares_each_value_of_its_geometry_once(tables, message):
    """A new family is one preset: its [geometry] gives what its [backbone] does not (a missing value is not
    defaulted, one given twice is refused), and the errors name the preset and the keys."""
    if message is None:
        geometry = preset_geometry(tables, "presets/new.toml")
        assert geometry == BaseGeometry("new-dit", 8, geometry.vae_temporal, (1, 2, 2), 16, 1024)
        return
    with pytest.raises(ValueError, match=f"presets/new.toml: .*{message}"):
        preset_geometry(tables, "presets/new.toml")


def test_geometry_and_config_validation_import_no_torch():
    """Every base resolves, and the tiny preset validates, from the preset files alone (no torch, no diffusers)."""
    code = (
        "import sys\n"
        "from tinyhistory.config import load_config\n"
        "from tinyhistory.geometry import bases\n"
        "load_config('tiny'); assert len(bases()) == 8\n"
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'imported torch'\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
