"""``reproduce table1``: rows trained by the real training command, scored on one shared evaluation set."""

import json

import pytest
from conftest import SMALL_OVERRIDES

from tinyhistory.cli import main
from tinyhistory.reproduce.table1 import ROWS, kendall_tau, select_rows


def test_rows_are_the_papers_table_in_its_order():
    assert [r.label for r in ROWS][:4] == [
        "Large Patchifier* 4x4x2",
        "Only LR 4x4x2",
        "Without LR 4x4x2",
        "Proposed 4x4x2",
    ]
    assert [(r.rates, r.paper_psnr, r.paper_ctx_per_s) for r in ROWS[4:]] == [
        (("2x2x2",), 19.12, 780),
        (("2x2x4",), 18.63, 390),
        (("2x2x1",), 20.19, 1560),
    ]
    with pytest.raises(ValueError, match="unknown table-1 rows \\['proposed_8x8x8'\\]"):
        select_rows(["proposed_8x8x8"])


def test_kendall_tau_reference_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx(-1.0)
    assert kendall_tau([1, 3, 2, 4], [1, 2, 3, 4]) == pytest.approx(2 / 3)  # 5 concordant, 1 discordant pair
    assert kendall_tau([1.0], [2.0]) is None


@pytest.mark.slow
def test_small_step_run_writes_table_plot_grid_and_reuses_finished_rows(tmp_path):
    argv = [
        "reproduce",
        "table1",
        "--out",
        str(tmp_path),
        "--steps",
        "2",
        "--windows",
        "3",
        "--jobs",
        "2",
        "--rows",
        "large_patchifier_4x4x2,proposed_2x2x4",
    ]
    for item in SMALL_OVERRIDES + ["train.checkpoint_every=2"]:
        argv += ["--set", item]
    assert main(argv) == 0
    result = json.loads((tmp_path / "table1.json").read_text())
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == {"large_patchifier_4x4x2", "proposed_2x2x4"}
    for r in rows.values():
        assert r["status"] == "ok" and 0 < r["ours"]["psnr"] < 60 and 0 < r["ours"]["lpips"] < 1.5
    # 8-frame history of 64x64 frames: 4x4x2 → 4 blocks x 2 x 2 tokens; 2x2x4 → 2 blocks x 4 x 4 tokens
    assert rows["large_patchifier_4x4x2"]["context_tokens"] == 16 and rows["proposed_2x2x4"]["context_tokens"] == 32
    assert set(result["kendall_tau"]) == {"psnr", "ssim", "lpips"}
    md = (tmp_path / "table1.md").read_text()
    assert "| Proposed 2x2x4 | 32 | 32 | 390 |" in md and "average_training_frame" in md
    assert (tmp_path / "table1.png").stat().st_size > 10_000 and (tmp_path / "table1_grid.png").stat().st_size > 1000
    log = (tmp_path / "runs" / "proposed_2x2x4" / "train_log.jsonl").read_text()

    assert main(argv) == 0  # finished rows are not trained again
    assert (tmp_path / "runs" / "proposed_2x2x4" / "train_log.jsonl").read_text() == log
