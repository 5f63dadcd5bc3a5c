"""``reproduce table1``: rows trained by the real training command, scored on one shared evaluation set."""

import json

import pytest
from conftest import SMALL_OVERRIDES

from tinyhistory.cli import main
from tinyhistory.reproduce.table1 import ROWS, kendall_tau, mean_and_spread, select_rows


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


def test_mean_and_spread_over_seeds():
    scores = [{"psnr": 20.0, "ssim": 0.5}, {"psnr": 22.0, "ssim": 0.7}, {"psnr": 24.0, "ssim": 0.6}]
    mean, spread = mean_and_spread(scores)
    assert mean == pytest.approx({"psnr": 22.0, "ssim": 0.6})
    assert spread == pytest.approx({"psnr": 2.0, "ssim": 0.1})  # sample standard deviation (n - 1)
    assert mean_and_spread([{"psnr": 20.0}]) == ({"psnr": 20.0}, {"psnr": 0.0})


@pytest.mark.slow
def test_small_step_run_writes_table_plot_grid_and_reuses_finished_rows(tmp_path, capsys):
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
        "--seeds",
        "2",
        "--seeded-rows",
        "proposed_2x2x4",
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
    # two seeds for the seeded row, scored alike: the table gives their mean ± standard deviation
    seeded = rows["proposed_2x2x4"]
    assert [m["seed"] for m in seeded["per_seed"]] == [0, 1] and len(rows["large_patchifier_4x4x2"]["per_seed"]) == 1
    assert seeded["ours"]["psnr"] == pytest.approx(sum(m["psnr"] for m in seeded["per_seed"]) / 2)
    assert seeded["per_seed"][0]["psnr"] != seeded["per_seed"][1]["psnr"]  # another seed, another model
    assert f"{seeded['ours']['psnr']:.2f} ± {seeded['spread']['psnr']:.2f} (2)" in md
    assert json.loads((tmp_path / "runs" / "proposed_2x2x4.seed1" / "config.json").read_text())["train"]["seed"] == 1
    log = (tmp_path / "runs" / "proposed_2x2x4" / "train_log.jsonl").read_text()

    assert main(argv + ["--seeded-rows", "proposed_2x2x1"]) == 2
    assert "seeded rows ['proposed_2x2x1'] are not among the selected rows" in capsys.readouterr().err
    assert main(argv) == 0  # finished rows are not trained again
    assert (tmp_path / "runs" / "proposed_2x2x4" / "train_log.jsonl").read_text() == log
