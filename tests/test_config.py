import pytest

from tinyhistory.config import load_config, parse_override, preset_names


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
