"""``tinyhistory reproduce table1``: the paper's Table 1 (frame-query reconstruction, stage I) at small scale.

Every row of the paper's table is trained for the same number of steps on the same data with the same seed, then
scored with the frame-query protocol on the held-out part of the clip (``eval/frame_query.py``): one fixed set of
windows, queried frames, masks and noise for all rows. The LR latents of that set are built for every rate any row
uses, so each row reads exactly the inputs its own rates need.

Training runs as ``tinyhistory train`` subprocesses (``--jobs`` at a time), each resumable in ``OUT/runs/<row>``;
a finished row is not retrained, so running the command again only re-evaluates. A row whose training fails is
reported in the table and the others carry on.

Seeds (``--seeds K``): the rows named by ``seeded_rows`` (default: all) are trained K times with ``train.seed`` =
0 … K−1 (seed 0 in ``runs/<row>``, seed s in ``runs/<row>.seed<s>``), each scored on the same evaluation set; the
table gives the mean ± the sample standard deviation over seeds, and Kendall's tau orders the means. One seed says
nothing about how much of a gap between rows is the seed's.

Outputs: ``table1.json``, ``table1.md`` (our numbers beside the paper's, with context tokens), ``table1.png``
(PSNR against context tokens per second, ours and the paper's) and ``table1_grid.png`` (Fig. 5 layout).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tinyhistory.config import load_config
from tinyhistory.data.windows import clip_from_config, to_uint8
from tinyhistory.eval.figures import grid_image
from tinyhistory.eval.frame_query import (
    FrameQuerySet,
    context_size,
    eval_set_for_clip,
    evaluate_method,
    queried_pixels,
    reference_metrics,
)
from tinyhistory.text.cache import encode_prompts
from tinyhistory.train.checkpoint import load_model


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    method: str
    rates: tuple[str, ...]
    paper_psnr: float
    paper_ssim: float
    paper_lpips: float
    paper_ctx_per_s: int  # Wan 2.1 480p, 16 fps (SPEC §2)


# The paper's Table 1 (v5), in its order. CTX/s is the paper's Wan 2.1 accounting for the same rate.
ROWS: tuple[Row, ...] = (
    Row("large_patchifier_4x4x2", "Large Patchifier* 4x4x2", "large_patchifier", ("4x4x2",), 12.93, 0.412, 0.365, 195),
    Row("only_lr_4x4x2", "Only LR 4x4x2", "only_lr", ("4x4x2",), 15.21, 0.472, 0.212, 195),
    Row("without_lr_4x4x2", "Without LR 4x4x2", "without_lr", ("4x4x2",), 15.73, 0.423, 0.198, 195),
    Row("proposed_4x4x2", "Proposed 4x4x2", "proposed", ("4x4x2",), 17.41, 0.596, 0.171, 195),
    Row("proposed_2x2x2", "Proposed 2x2x2", "proposed", ("2x2x2",), 19.12, 0.683, 0.152, 780),
    Row("proposed_2x2x4", "Proposed 2x2x4", "proposed", ("2x2x4",), 18.63, 0.637, 0.153, 390),
    Row("proposed_2x2x1", "Proposed 2x2x1", "proposed", ("2x2x1",), 20.19, 0.705, 0.121, 1560),
)
EVAL_WINDOWS = 24
EVAL_QUERIES = 2


def select_rows(keys: list[str] | None) -> list[Row]:
    if not keys:
        return list(ROWS)
    known = {r.key: r for r in ROWS}
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown table-1 rows {unknown}; rows are: {', '.join(known)}")
    return [known[k] for k in keys]


@dataclass(frozen=True)
class Job:
    """One training run: a row with one seed."""

    row: Row
    seed: int

    @property
    def name(self) -> str:
        return self.row.key if self.seed == 0 else f"{self.row.key}.seed{self.seed}"


def _train_args(job: Job, preset: str, steps: int, out: Path, overrides: list[str]) -> list[str]:
    args = [sys.executable, "-m", "tinyhistory.cli", "train", "--stage", "frame-query", "--preset", preset]
    args += ["--method", job.row.method, "--steps", str(steps), "--no-progress", "--out", str(out)]
    for rate in job.row.rates:
        args += ["--rate", rate]
    for item in overrides:
        args += ["--set", item]
    if job.seed:
        args += ["--set", f"train.seed={job.seed}"]
    return args


def _finished(run: Path, steps: int) -> bool:
    summary = run / "summary.json"
    if not summary.is_file() or not (run / "final" / "config.json").is_file():
        return False
    return json.loads(summary.read_text()).get("steps") == steps


def train_jobs(todo: list[Job], preset: str, steps: int, out: Path, overrides: list[str], jobs: int) -> dict:
    """Train every unfinished job as a subprocess, ``jobs`` at a time; returns ``{job name: "ok" | error text}``."""
    status: dict[str, str] = {}
    pending = [j for j in todo if not _finished(out / "runs" / j.name, steps)]
    for j in todo:
        if j not in pending:
            status[j.name] = "ok"
            print(f"[table1] {j.name}: already trained for {steps} steps")
    threads = max(1, (os.cpu_count() or 1) // max(1, min(jobs, len(pending) or 1)))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    running: list[tuple[Job, subprocess.Popen, object]] = []
    while pending or running:
        while pending and len(running) < jobs:
            job = pending.pop(0)
            run = out / "runs" / job.name
            run.mkdir(parents=True, exist_ok=True)
            log = open(out / "runs" / f"{job.name}.log", "a")
            print(f"[table1] training {job.name} for {steps} steps (log: {log.name})")
            args = _train_args(job, preset, steps, run, overrides)
            running.append((job, subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env), log))
        time.sleep(1.0)
        for item in list(running):
            job, proc, log = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            ok = proc.returncode == 0 and _finished(out / "runs" / job.name, steps)
            status[job.name] = "ok" if ok else f"training failed (exit {proc.returncode}); see runs/{job.name}.log"
            print(f"[table1] {job.name}: {status[job.name]}")
    return status


def mean_and_spread(per_seed: list[dict]) -> tuple[dict, dict]:
    """The mean of every metric over seeds, and its sample standard deviation (0 for one seed)."""
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], (int, float))]
    values = {k: np.array([m[k] for m in per_seed], dtype=np.float64) for k in keys}
    mean = {k: float(v.mean()) for k, v in values.items()}
    spread = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
    return mean, spread


def restrict_to_rates(eval_set: FrameQuerySet, all_rates: list[str], rates: tuple[str, ...]) -> FrameQuerySet:
    """The same evaluation set with only the LR latents of ``rates`` (in that order)."""
    lr = [eval_set.batch.history_lr[all_rates.index(r)] for r in rates]
    return dataclasses.replace(eval_set, batch=dataclasses.replace(eval_set.batch, history_lr=lr))


def kendall_tau(ours: list[float], paper: list[float]) -> float | None:
    """Kendall's tau-b between our row values and the paper's (None with fewer than two rows)."""
    from scipy.stats import kendalltau

    if len(ours) < 2:
        return None
    return float(kendalltau(ours, paper).statistic)


def reproduce_table1(
    out: str | Path,
    preset: str = "tiny",
    steps: int | None = None,
    rows: list[str] | None = None,
    overrides: list[str] = (),
    jobs: int = 1,
    windows: int = EVAL_WINDOWS,
    queries: int = EVAL_QUERIES,
    seeds: int = 1,
    seeded_rows: list[str] | None = None,
) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    selected = select_rows(rows)
    seeded = {r.key for r in select_rows(seeded_rows)} if seeded_rows else {r.key for r in selected}
    if not seeded <= {r.key for r in selected}:
        raise ValueError(f"seeded rows {sorted(seeded - {r.key for r in selected})} are not among the selected rows")
    base_cfg = load_config(preset, overrides=list(overrides))
    steps = steps if steps is not None else base_cfg.train.steps
    todo = [Job(r, s) for r in selected for s in range(seeds if r.key in seeded else 1)]
    status = train_jobs(todo, preset, steps, out, list(overrides), jobs)

    print("[table1] evaluating on the held-out part of the clip")
    clip = clip_from_config(base_cfg.data)
    all_rates = sorted({r for row in selected for r in row.rates})
    eval_set, codec = eval_set_for_clip(
        clip.heldout, base_cfg.codec, all_rates, base_cfg.train, windows, queries, seed=0
    )
    text = encode_prompts(base_cfg.text, [base_cfg.text.caption])
    try:
        from tinyhistory.eval.lpips import LPIPS

        lpips = LPIPS("alex")
    except FileNotFoundError as exc:
        print(f"[table1] LPIPS left out: {exc}")
        lpips = None
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    results: dict = {
        "preset": preset,
        "steps": steps,
        "seeds": seeds,
        "overrides": list(overrides),
        "protocol": (
            f"{windows} evenly spaced held-out windows of {base_cfg.train.history_frames} frames from the last "
            f"{base_cfg.data.heldout_fraction:.0%} of {base_cfg.data.video}; {queries} fixed-seed query frames per "
            "window; history masked as in training; PSNR/SSIM/LPIPS(alex) of frames sampled with 20 Euler steps "
            "from fixed noise; the same windows, queries, masks and noise for every row."
        ),
        "rows": [],
    }
    samples: dict[str, torch.Tensor] = {}
    for row in selected:
        entry: dict = {
            "key": row.key,
            "label": row.label,
            "method": row.method,
            "rates": list(row.rates),
            "status": status[row.key],  # seed 0's
            "paper": {
                "psnr": row.paper_psnr,
                "ssim": row.paper_ssim,
                "lpips": row.paper_lpips,
                "ctx_per_s": row.paper_ctx_per_s,
            },
        }
        tokens, per_second = context_size(
            base_cfg.base, base_cfg.data, list(row.rates), row.method, base_cfg.train.history_frames
        )
        entry["context_tokens"], entry["context_tokens_per_s"] = tokens, per_second
        per_seed = []
        for job in (j for j in todo if j.row == row):
            if status[job.name] != "ok":
                entry.setdefault("failed_seeds", {})[job.seed] = status[job.name]
                continue
            model, _ = load_model(out / "runs" / job.name / "final")
            model.to(device)
            metrics, sampled = evaluate_method(
                model, restrict_to_rates(eval_set, all_rates, row.rates), text, codec, lpips=lpips
            )
            metrics.pop("per_window")
            per_seed.append({"seed": job.seed, **metrics})
            samples.setdefault(row.key, sampled)  # the grid shows the first trained seed
            print(
                f"[table1] {job.name}: PSNR {metrics['psnr']:.2f}, SSIM {metrics['ssim']:.3f}, "
                f"loss {metrics['heldout_loss']:.4f}"
            )
        if per_seed:
            scores = [{k: v for k, v in m.items() if k != "seed"} for m in per_seed]
            entry["ours"], entry["spread"] = mean_and_spread(scores)
            entry["per_seed"] = per_seed
            entry["train_log"] = f"runs/{row.key}/train_log.jsonl"
        results["rows"].append(entry)
    results["references"] = reference_metrics(eval_set, clip.train, codec, all_rates)

    scored = [r for r in results["rows"] if "ours" in r]
    results["kendall_tau"] = {
        "psnr": kendall_tau([r["ours"]["psnr"] for r in scored], [r["paper"]["psnr"] for r in scored]),
        "ssim": kendall_tau([r["ours"]["ssim"] for r in scored], [r["paper"]["ssim"] for r in scored]),
    }
    if lpips is not None:
        results["kendall_tau"]["lpips"] = kendall_tau(
            [r["ours"]["lpips"] for r in scored], [r["paper"]["lpips"] for r in scored]
        )
    results["seconds"] = round(time.time() - started, 1)
    results["machine"] = _machine()

    (out / "table1.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table1.md").write_text(markdown(results))
    if scored:
        plot(results, out / "table1.png")
        picks = list(range(0, windows, max(1, windows // 8)))[:8]
        truth = queried_pixels(eval_set)
        grid_rows = [("ground truth", np.stack([to_uint8(truth[i])[0] for i in picks]))]
        grid_rows += [(r["label"], np.stack([to_uint8(samples[r["key"]][i])[0] for i in picks])) for r in scored]
        grid_image(grid_rows, out / "table1_grid.png")
    print(markdown(results))
    return results


def _machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"CPU ({os.cpu_count()} cores), torch {torch.__version__}"


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _with_spread(r: dict, key: str, digits: int) -> str:
    """``mean ± sd (n)`` for a row scored over several seeds, else the value."""
    value = _fmt(r["ours"].get(key), digits)
    n = len(r.get("per_seed", ()))
    return f"{value} ± {r['spread'][key]:.{digits}f} ({n})" if n > 1 and key in r["spread"] else value


def markdown(results: dict) -> str:
    seeds = results.get("seeds", 1)
    lines = [
        f"# Table 1 at small scale ({results['preset']} preset, {results['steps']} steps per row)",
        "",
        results["protocol"],
        "",
        *(
            [f"Rows with several seeds: mean ± sample standard deviation (number of seeds); {seeds} seeds at most.", ""]
            if seeds > 1
            else []
        ),
        "| row | ctx tokens (32-frame history) | ctx/s ours | ctx/s paper | PSNR ↑ ours | paper | SSIM ↑ ours | "
        "paper | LPIPS ↓ ours | paper | held-out loss ↓ |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        o, p = r.get("ours"), r["paper"]
        if o is None:
            lines.append(
                f"| {r['label']} | {r['context_tokens']} | {r['context_tokens_per_s']:g} | "
                f"{p['ctx_per_s']} | {r['status']} | {p['psnr']} | | {p['ssim']} | | {p['lpips']} | |"
            )
            continue
        lines.append(
            f"| {r['label']} | {r['context_tokens']} | {r['context_tokens_per_s']:g} | {p['ctx_per_s']} | "
            f"{_with_spread(r, 'psnr', 2)} | {p['psnr']:.2f} | {_with_spread(r, 'ssim', 3)} | {p['ssim']:.3f} | "
            f"{_with_spread(r, 'lpips', 3)} | {p['lpips']:.3f} | {_with_spread(r, 'heldout_loss', 4)} |"
        )
    lines += ["", "| trivial reference (same frames) | PSNR | SSIM |", "|---|---|---|"]
    for name, ref in results["references"].items():
        lines.append(f"| {name} | {ref['psnr']:.2f} | {ref['ssim']:.3f} |")
    tau = results["kendall_tau"]
    lines += [
        "",
        "Agreement of the row ordering with the paper (Kendall's tau-b, 1 = same order, −1 = reversed): "
        + ", ".join(f"{k.upper()} {_fmt(v, 2)}" for k, v in tau.items())
        + ".",
        "",
        f"Machine: {results['machine']}; {results['seconds']:.0f} s in all.",
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """PSNR against context tokens per second: ours (left) and the paper's (right), one point per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if "ours" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, who in zip(axes, ("ours", "paper"), strict=True):
        points = []
        for r in rows:
            x = r["context_tokens_per_s"] if who == "ours" else r["paper"]["ctx_per_s"]
            y = r["ours"]["psnr"] if who == "ours" else r["paper"]["psnr"]
            ax.scatter([x], [y], marker="s" if r["method"] != "proposed" else "o", s=40)
            points.append((y, x, r["label"]))
        # Labels of rows that share a token budget are spread vertically so that they stay readable.
        for x in {p[1] for p in points}:
            column = sorted(p for p in points if p[1] == x)
            for i, (y, _, label) in enumerate(column):
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -8 + 9 * i), fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context tokens per second of history")
        ax.set_ylabel("PSNR of queried frames (dB)")
        ax.grid(alpha=0.3)
    ref = results["references"]["average_training_frame"]["psnr"]
    axes[0].axhline(ref, ls="--", color="gray", lw=1)
    axes[0].annotate(
        "average training frame",
        (axes[0].get_xlim()[0], ref),
        fontsize=7,
        color="gray",
        xytext=(4, 3),
        textcoords="offset points",
    )
    axes[0].set_title(f"ours: {results['preset']} preset, {results['steps']} steps per row")
    axes[1].set_title("paper (v5 Table 1, Wan 2.1 480p accounting)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
