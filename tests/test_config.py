import json
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from tinyhistory.config import INHERITS, RunConfig, load_config, parse_override, preset_names, read_preset


def test_tiny_preset_loads_with_its_documented_values():
    cfg = load_config("tiny")
    assert "tiny" in preset_names()
    assert cfg.backbone.hidden_dim == 256 and cfg.codec.factor == 4 and cfg.history.rates == ["4x4x2"]
    assert cfg.data.heldout_fraction == 0.2


def test_overrides_and_files(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[train]\nsteps = 12\n[history]\nmethod = "large_patchifier"\n')
    cfg = load_config("tiny", f, ["train.batch_size=3"])
    assert (cfg.train.steps, cfg.train.batch_size, cfg.history.method) == (12, 3, "large_patchifier")
    assert parse_override("history.rates=['2x2x1']") == {"history": {"rates": ["2x2x1"]}}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.stepz=3", "unknown key 'train.stepz'; allowed keys: stage, steps"),
        ('history.method="best"', "history.method = 'best' is not allowed"),
        ('train.steps="many"', "train.steps must be an integer"),
        ("backbone.attention_head_dim=32", "narrower than one patch"),
        ('history.rates=["3x3x3"]', "history.rates: rate factor h=3"),
        ("train.history_frames=7", "not a multiple of the temporal rate"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config("tiny", overrides=[override])


def test_missing_file_and_unknown_preset(tmp_path):
    with pytest.raises(ValueError, match="config file not found"):
        load_config("tiny", tmp_path / "nope.toml")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        load_config("huge")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config("tiny", bad)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def test_every_preset_resolves_to_its_snapshot():
    """Every preset, stage I and stage II, resolves to the config it resolved to before presets could inherit
    (tests/data/resolved_presets.json, written by the loader of that time). A setting added since is absent from the
    snapshot and must hold its default there: a preset that sets it gets a new snapshot line on purpose."""
    snapshot = json.loads((Path(__file__).parent / "data" / "resolved_presets.json").read_text())
    assert sorted(snapshot) == preset_names()
    defaults = _flat(json.loads(json.dumps(RunConfig().to_dict())))
    for name in preset_names():
        for stage in ("frame-query", "ar"):
            resolved = _flat(json.loads(json.dumps(load_config(name, overrides=[f'train.stage="{stage}"']).to_dict())))
            expected = _flat(snapshot[name][stage])
            for key, value in resolved.items():
                assert value == expected.get(key, defaults[key]), f"{name} ({stage}): {key}"
            assert set(expected) <= set(resolved), f"{name} ({stage}): lost {set(expected) - set(resolved)}"


def test_the_wan_variants_are_a_few_lines_over_one_preset():
    folder = resources.files("tinyhistory.presets")
    for name in ("wan2.1-t2v-1.3b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b"):
        raw = tomllib.loads(folder.joinpath(f"{name}.toml").read_text())
        assert raw[INHERITS] == "wan2.1-t2v-14b" and raw["preset"] == name
        assert len(_flat(raw)) <= 12  # what differs (the model's shape in [geometry] too), nothing repeated
    assert INHERITS not in tomllib.loads(folder.joinpath("wan2.1-t2v-14b.toml").read_text())


def test_a_preset_inherits_table_by_table(tmp_path):
    """Tables merge key by key through a chain (stage II tables too), a list is replaced whole, and ``inherits``
    is not part of the result."""
    (tmp_path / "root.toml").write_text(
        'preset = "root"\nbase = "tiny"\n[train]\nsteps = 5\nbatch_size = 2\n[history]\nrates = ["4x4x2", "8x8x4"]\n'
        "[stage2.train]\nsteps = 7\nsegment_frames = 4\n"
    )
    (tmp_path / "mid.toml").write_text('inherits = "root"\npreset = "mid"\n[train]\nsteps = 6\n')
    (tmp_path / "leaf.toml").write_text(
        'inherits = "mid"\npreset = "leaf"\n[history]\nrates = ["2x2x1"]\n[stage2.train]\nsegment_frames = 2\n'
    )
    assert read_preset("leaf", tmp_path) == {
        "preset": "leaf",
        "base": "tiny",
        "train": {"steps": 6, "batch_size": 2},
        "history": {"rates": ["2x2x1"]},
        "stage2": {"train": {"steps": 7, "segment_frames": 2}},
    }


A_OVER_B, B_OVER_A = 'inherits = "b"\npreset = "a"', 'inherits = "a"\npreset = "b"'


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a": A_OVER_B, "b": B_OVER_A}, r"b\.toml: inherits form a cycle: a -> b -> a"),
        ({"a": 'inherits = "a"\npreset = "a"'}, r"a\.toml: inherits form a cycle: a -> a"),
        ({"a": 'inherits = "nowhere"\npreset = "a"'}, r"a\.toml: inherits = 'nowhere' is not a preset; available.*: a"),
        ({"a": A_OVER_B + "\ntrain = 3", "b": 'preset = "b"\n[train]'}, r"a\.toml \(over preset 'b'\): train must be"),
        ({"a": 'inherits = "b"', "b": 'preset = "b"'}, r"a\.toml: preset = 'b' must be the file's own name 'a'"),
    ],
)
def test_inheritance_errors_name_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / f"{name}.toml").write_text(text + "\n")
    with pytest.raises(ValueError, match=message):
        read_preset("a", tmp_path)
