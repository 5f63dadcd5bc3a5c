"""LPIPS reproduces the official v0.1 values on the five reference pairs shipped in the pyiqa wheel (ASSETS.md)."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tinyhistory.cli import main
from tinyhistory.eval.lpips import LPIPS, load_numpy_pickle, uint8_to_lpips_input

ASSETS = Path(os.environ.get("TINYHISTORY_TEST_ASSETS", Path(__file__).resolve().parents[1] / ".venv" / "test-assets"))
PAIRS = ASSETS / "ResultsCalibra"
OFFICIAL = {
    "alex": {"I03": 0.7237, "I04": 0.2572, "I06": 0.0508, "I08": 0.0521, "I19": 0.4253},
    "vgg": {"I03": 0.7614, "I04": 0.2090, "I06": 0.0544, "I08": 0.0475, "I19": 0.5971},
}

if not PAIRS.is_dir():
    if os.environ.get("CI"):
        raise RuntimeError(f"LPIPS reference pairs missing at {PAIRS}: `make venv` downloads them")
    pytest.skip(f"LPIPS reference pairs not installed at {PAIRS} (run `make venv`)", allow_module_level=True)


def _image(kind, name):
    return np.asarray(Image.open(PAIRS / kind / f"{name}.bmp").convert("RGB"))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_official_reference_values(net):
    model = LPIPS(net)
    for name, expected in OFFICIAL[net].items():
        value = model(uint8_to_lpips_input(_image("ref_dir", name)), uint8_to_lpips_input(_image("dist_dir", name)))
        assert value.item() == pytest.approx(expected, abs=1e-3), name


def test_identical_images_have_zero_distance():
    a = uint8_to_lpips_input(_image("ref_dir", "I06"))
    assert LPIPS("alex")(a, a).item() == pytest.approx(0.0, abs=1e-7)


def test_cli_prints_the_value(capsys):
    assert main(["eval", "lpips", str(PAIRS / "ref_dir" / "I04.bmp"), str(PAIRS / "dist_dir" / "I04.bmp")]) == 0
    assert float(capsys.readouterr().out) == pytest.approx(0.2572, abs=1e-3)
    assert main(["eval", "lpips", str(PAIRS / "ref_dir" / "I04.bmp"), "missing.png"]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_restricted_unpickler_refuses_anything_but_arrays(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": os.system}))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays are allowed"):
        load_numpy_pickle(evil)
    ok = tmp_path / "ok.ckpt"
    ok.write_bytes(pickle.dumps({"a": {"kernel": np.ones((1, 1, 2, 1), np.float32)}}))
    assert load_numpy_pickle(ok)["a"]["kernel"].shape == (1, 1, 2, 1)


def test_bad_net_name():
    with pytest.raises(ValueError, match="LPIPS net 'squeeze'"):
        LPIPS("squeeze")
