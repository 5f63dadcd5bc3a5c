"""The prepared GPU benchmark (``benchmarks/gpu_history_cost.py``) runs end to end in its ``--dry-run`` form.

Why: the script is meant for a GPU this project has not been lent yet; a script that is never run rots (an import
moves, a signature changes) and would fail only when the scarce GPU minutes are spent. The dry run is the same code
at tiny sizes on the CPU, so this test keeps it working.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_history_cost.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_history_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_measures_everything_and_writes_json(script, tmp_path, capsys):
    out = tmp_path / "result.json"
    assert script.main(["--dry-run", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["dry_run"] and saved["generation"] == printed["generation"]
    rows = {(r["history_s"], r["kv_cache"], r["offload"]) for r in printed["generation"]}
    histories = printed["settings"]["histories"]
    assert {(h, False, False) for h in histories} <= rows
    assert {(h, True, False) for h in histories if h > 0} <= rows
    for row in printed["generation"]:
        assert row["segment_s"] > 0 and row["predicted_working_gib"] is not None
        assert row["steps"] == printed["settings"]["steps"]
    assert printed["vae_decode"]["segment_s"] > 0
    train = printed["train"]
    assert train["step_s"] > 0 and train["lora_rank"] == 128 and train["gradient_checkpointing"]
    assert train["model_tflops_per_step"] >= 0 and train["predicted_peak_gib"] is not None
    assert printed["peak_flops"] == 989e12
    assert set(printed["stand_ins"]) == {"text_encoder", "history", "vae"}
    for entry in printed["skipped"]:
        assert set(entry) == {"what", "why"}


def test_time_box_skips_and_says_so(script, tmp_path, capsys):
    assert script.main(["--dry-run", "--budget-s", "0.001", "--skip-offload"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["generation"] == [] and printed["train"] is None and printed["vae_decode"] is None
    whys = [s["why"] for s in printed["skipped"]]
    assert any(w.startswith("time:") for w in whys) and "--skip-offload" in whys


def test_refuses_a_real_run_without_cuda(script, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the real run would start")
    assert script.main([]) == 2
    assert "--dry-run" in capsys.readouterr().err
