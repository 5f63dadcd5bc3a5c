"""Sharded training (``train.parallel = "fsdp"``, FSDP2) in real processes on this CPU-only machine (gloo), on tiny
random-weight model folders in the Hub layout, through the CLI and the launch lines of the README:

    accelerate launch --multi_gpu --num_processes 2 -m tinyhistory.cli train --set 'train.parallel="fsdp"' ...

Checked against the same run under DDP: the losses, the saved LoRA and encoder (equal: on this CPU the two runs
were bit-identical, so the tolerance below is only rounding headroom), the frozen base's bytes per rank (half), the
files a user takes away (the same set, loadable by the stock pipeline); a SIGKILLed run resumes bit for bit; a
2-rank checkpoint resumes on 1 process; two "machines" (two launchers on 127.0.0.1) train and checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import LORA_RUN_FLAGS
from launch import accelerate_launch
from safetensors.torch import load_file
from tiny_model_folders import hunyuan_folder, wan21_t2v_folder
from video_files import captioned_videos

from tinyhistory.cli import main
from tinyhistory.train import parallel
from tinyhistory.train.checkpoint import load_model, read_config
from tinyhistory.train.trainer import StageLoss, lr_lambda, make_optimizer, prepare_model

PROMPT = "a cat walks on the grass"
SIZES = [
    "--set", "data.height=64", "--set", "data.width=64", "--set", "data.fps=8",
    "--set", "data.window_frames=17", "--set", "train.history_frames=17",
]  # fmt: skip
STEPS = 6
# The largest difference allowed between the DDP and the FSDP run (losses, LoRA, encoder); measured: 0.
TOLERANCE = 1e-6
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
USER_FILES = ("lora.safetensors", "history_encoder.safetensors", "config.json")


def prepared(root: Path, family: str) -> tuple[Path, Path, str]:
    """A tiny model folder of ``family`` and a ``data prepare`` cache of two captioned clips."""
    make, preset = (wan21_t2v_folder, "wan2.1-t2v-1.3b") if family == "wan" else (hunyuan_folder, "hunyuanvideo")
    model = make(root / "model")
    videos = captioned_videos(root / "videos", 64, PROMPT)
    cache = root / "cache"
    args = ["data", "prepare", "--preset", preset, "--model", str(model), "--input", str(videos), "--out", str(cache)]
    assert main([*args, *SIZES]) == 0
    return model, cache, preset


def train_args(model: Path, cache: Path, preset: str, parallel: str) -> list[str]:
    """A stage-I run of the tiny folder from its cache, logging every step and checkpointing every 2."""
    sets = ["--set", f'data.cache="{cache}"', "--set", f'train.parallel="{parallel}"', *SIZES, *LORA_RUN_FLAGS]
    sets += ["--set", "train.log_every=1", "--set", "train.checkpoint_every=2"]
    return ["train", "--stage", "frame-query", "--preset", preset, "--model", str(model), *sets]


def fsdp_launch(port: int) -> list[str]:
    """``configs/accelerate/fsdp.yaml`` (the README's one-machine launch) with 2 processes."""
    config = ["--config_file", str(CONFIGS / "fsdp.yaml"), "--num_processes", "2", "--main_process_port", str(port)]
    return [sys.executable, "-m", "accelerate.commands.launch", *config, "-m", "tinyhistory.cli"]


def launch(args: list[str], out: Path, steps: int, port: int) -> None:
    """A 2-process run: under ``fsdp`` through the shipped config, under ``ddp`` as the README's DDP line."""
    starter = fsdp_launch(port) if 'train.parallel="fsdp"' in args else accelerate_launch(2, port)
    command = [*starter, *args, "--steps", str(steps), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def assert_single_process_schedule(run: Path) -> None:
    """The logged learning rate follows ``lr_lambda`` step by step (its ratio to the schedule's factor is constant)."""
    train = json.loads((run / "config.json").read_text())["train"]
    factor = lr_lambda(SimpleNamespace(**train))
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    ratios = [r["lr"] / factor(r["step"]) for r in records if "lr" in r]
    assert len(ratios) == STEPS and max(ratios) - min(ratios) <= 1e-9 * max(ratios), ratios


def assert_same_weights(a: Path, b: Path, atol: float) -> float:
    """The trained files of two checkpoint folders hold the same tensors (to ``atol``); returns the largest gap."""
    worst = 0.0
    for name in (p.name for p in a.glob("*.safetensors")):
        left, right = load_file(str(a / name)), load_file(str(b / name))
        assert left.keys() == right.keys(), name
        for key in left:
            assert left[key].dtype == right[key].dtype == torch.float32, key
            worst = max(worst, (left[key] - right[key]).abs().max().item())
    assert worst <= atol, worst
    return worst


def assert_half_the_base(ddp: Path, fsdp: Path) -> None:
    """Each FSDP rank holds about half of the frozen base a DDP rank holds whole (dim-0 shards: an uneven row count
    leaves one rank a row more), and a share of what trains."""
    whole = json.loads((ddp / "parallel.json").read_text())["frozen_bytes_per_rank"]
    shards = json.loads((fsdp / "parallel.json").read_text())["frozen_bytes_per_rank"]
    assert len(whole) == len(shards) == 2 and whole[0] == whole[1] > 0
    assert sum(shards) == whole[0]  # every byte of the base lives on exactly one rank
    assert all(abs(s - whole[0] / 2) <= 0.05 * whole[0] for s in shards), (shards, whole)
    trained = [json.loads((run / "parallel.json").read_text())["trained_bytes_per_rank"] for run in (ddp, fsdp)]
    assert sum(trained[1]) == trained[0][0] and max(trained[1]) < trained[0][0]  # LoRA + encoder: sharded as well


@pytest.mark.slow
def test_fsdp_trains_wan_like_ddp_on_half_the_memory_resumes_after_sigkill_and_on_one_process(tmp_path):
    """Stage I of a tiny Wan 2.1 folder on 2 ranks, DDP against FSDP; then a SIGKILLed FSDP run resumed on 2 ranks
    (bit for bit) and on 1 (it continues)."""
    model, cache, preset = prepared(tmp_path, "wan")
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    launch(train_args(model, cache, preset, "ddp"), ddp, STEPS, 29531)
    launch(train_args(model, cache, preset, "fsdp"), fsdp, STEPS, 29532)

    # the same training: losses and the trained weights, file by file
    assert sorted(losses(fsdp)) == list(range(1, STEPS + 1))
    for step, loss in losses(ddp).items():
        assert abs(losses(fsdp)[step] - loss) <= TOLERANCE, step
    assert_same_weights(ddp / "final", fsdp / "final", TOLERANCE)
    assert_half_the_base(ddp, fsdp)
    # the schedule runs once per step whatever the number of ranks (accelerate's wrapper stepped it once per rank)
    assert_single_process_schedule(ddp)
    assert_single_process_schedule(fsdp)
    # the user's files: the same set as a DDP (or single-process) run, written once, never the frozen base
    for folder in ("final", "last"):
        names = {p.name for p in (fsdp / folder).iterdir()}
        assert names - {"state"} == {p.name for p in (ddp / folder).iterdir()} - {"state"}
        assert {*USER_FILES, "lora_wan_comfyui.safetensors"} <= names and "transformer" not in names
    assert (fsdp / "last" / "state" / "optimizer" / ".metadata").is_file()  # the sharded optimizer state (DCP)
    assert len(list((fsdp / "last" / "state" / "optimizer").glob("*.distcp"))) == 2  # one part per rank

    # the portable LoRA loads in the stock pipeline and moves its output
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.load_lora_weights(str(fsdp / "final" / "lora_wan_comfyui.safetensors"))
    loaded = {n: p for n, p in pipe.transformer.named_parameters() if "lora_B" in n}
    assert loaded and any(p.abs().sum() > 0 for p in loaded.values())  # six steps moved the LoRA; it arrived

    # the 2 ranks' sharded optimizer state, resharded into one process, is DDP's whole one exactly
    cfg = read_config(fsdp / "last")
    whole, cfg = prepare_model(cfg, None)
    optimizer = make_optimizer(whole, cfg.train)
    parallel.load_optimizer(fsdp / "last", StageLoss(cfg.train, cfg.model.dtype, whole), optimizer)
    expected = torch.load(ddp / "last" / "state" / "optimizer.pt", weights_only=True)["optimizer"]["state"]
    state = optimizer.state_dict()["state"]
    assert state.keys() == expected.keys() and len(state) > 0
    for index, moments in expected.items():
        assert moments.keys() == state[index].keys()
        assert all(torch.equal(state[index][k], moments[k]) for k in moments), index

    ours, _ = load_model(fsdp / "final")  # what generate, eval and the studio load
    assert ours.backbone.transformer.patch_embedding.weight.dtype == torch.bfloat16 and len(ours.producers)

    # SIGKILL both ranks (and their launcher) after a checkpoint, then run the same command again
    killed = tmp_path / "killed"
    command = [*fsdp_launch(29533), *train_args(model, cache, preset, "fsdp")]
    command += ["--steps", str(STEPS), "--out", str(killed)]
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    trainer_json = killed / "last" / "state" / "trainer.json"
    deadline = time.time() + 300
    while not trainer_json.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "final").exists()  # killed mid-run
    saved = json.loads(trainer_json.read_text())["step"]
    assert 2 <= saved < STEPS
    one = tmp_path / "one"
    shutil.copytree(killed, one)
    launch(train_args(model, cache, preset, "fsdp"), killed, STEPS, 29534)
    assert losses(killed) == losses(fsdp)  # every step, bit for bit as logged
    assert_same_weights(fsdp / "final", killed / "final", 0.0)  # and the weights exactly

    # the same 2-rank checkpoint on one process: DCP reshards the optimizer's state, the run continues
    assert main([*train_args(model, cache, preset, "fsdp"), "--steps", str(STEPS), "--out", str(one)]) == 0
    assert sorted(losses(one)) == list(range(1, STEPS + 1))
    assert {s: losses(one)[s] for s in range(1, saved + 1)} == {s: losses(fsdp)[s] for s in range(1, saved + 1)}
    assert json.loads((one / "parallel.json").read_text())["processes"] == 1
    assert (one / "final" / "lora.safetensors").is_file()


@pytest.mark.slow
def test_fsdp_trains_hunyuanvideo_both_stages_like_ddp(tmp_path):
    """Stage I, then stage II from it (with gradient checkpointing), under DDP and FSDP: the same losses and LoRA."""
    model, cache, preset = prepared(tmp_path, "hunyuan")
    runs = {}
    for kind, port in (("ddp", 29535), ("fsdp", 29536)):
        run = runs[kind] = tmp_path / kind
        launch(train_args(model, cache, preset, kind), run, 4, port)
        # stage II from it (an empty history on some ranks at some steps: the ranks still reduce alike)
        ar = ["train", "--stage", "ar", "--preset", preset, "--init-from", str(run / "final"), "--set"]
        ar += [f'data.cache="{cache}"', "--set", f'train.parallel="{kind}"', *SIZES, *LORA_RUN_FLAGS]
        ar += ["--set", "train.segment_frames=1", "--set", "train.log_every=1"]
        ar += ["--set", "train.gradient_checkpointing=true"]  # composes with the sharded blocks
        launch(ar, tmp_path / f"{kind}_ar", 3, port)
    for stage in ("", "_ar"):
        ddp, fsdp = tmp_path / f"ddp{stage}", tmp_path / f"fsdp{stage}"
        assert losses(ddp).keys() == losses(fsdp).keys()
        for step, loss in losses(ddp).items():
            assert abs(losses(fsdp)[step] - loss) <= TOLERANCE, (stage, step)
        assert_same_weights(ddp / "final", fsdp / "final", TOLERANCE)
        assert {*USER_FILES, "lora_hunyuan_diffusers.safetensors"} <= {p.name for p in (fsdp / "final").iterdir()}
    assert_half_the_base(runs["ddp"], runs["fsdp"])

    from diffusers import HunyuanVideoPipeline

    pipe = HunyuanVideoPipeline.from_pretrained(model, torch_dtype=torch.float32)
    pipe.load_lora_weights(str(tmp_path / "fsdp_ar" / "final" / "lora_hunyuan_diffusers.safetensors"))
    assert any("lora" in n for n, _ in pipe.transformer.named_parameters())


@pytest.mark.slow
def test_two_machines_on_one_host_train_sharded_and_checkpoint(tmp_path):
    """Two launchers, one per "machine" (``--num_machines 2 --machine_rank i``), meet at 127.0.0.1 as two hosts
    would at the main node's address; both write into one run folder (the shared filesystem of a cluster)."""
    model, cache, preset = prepared(tmp_path, "wan")
    out = tmp_path / "run"
    args = [*train_args(model, cache, preset, "fsdp"), "--steps", "2", "--out", str(out)]
    machines = [
        subprocess.Popen(
            [*two_machine_launch(rank, 29537), *args],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for machine in machines:
        _, err = machine.communicate(timeout=600)
        assert machine.returncode == 0, err[-4000:]
    report = json.loads((out / "parallel.json").read_text())
    assert report["parallel"] == "fsdp" and report["processes"] == 2
    assert sorted(losses(out)) == [1, 2]
    assert json.loads((out / "last" / "state" / "trainer.json").read_text())["step"] == 2
    assert len(list((out / "last" / "state" / "optimizer").glob("*.distcp"))) == 2
    assert {*USER_FILES} <= {p.name for p in (out / "final").iterdir()}


def two_machine_launch(machine_rank: int, port: int) -> list[str]:
    """The README's per-node launch line (``configs/accelerate/fsdp_2nodes.yaml``) with one process per "machine"
    (``--num_processes`` counts all machines' processes: 2 here, 16 for two nodes of 8 GPUs)."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "fsdp_2nodes.yaml"),
        "--num_processes", "2", "--machine_rank", str(machine_rank),
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "-m", "tinyhistory.cli",
    ]  # fmt: skip


def test_fsdp_refuses_what_it_does_not_carry_by_name(small_config):
    """An Accelerate FSDP config (a second wrapping), a whole trained DiT and an EMA are refused up front."""
    from accelerate.utils import DistributedType

    from tinyhistory.train.trainer import check_parallel

    with pytest.raises(ValueError, match="shards the model itself"):
        check_parallel(small_config().train, DistributedType.FSDP)
    with pytest.raises(ValueError, match="train.dit = 'lora'"):
        check_parallel(small_config('train.parallel="fsdp"').train, DistributedType.MULTI_CPU)
    lora = ('train.parallel="fsdp"', 'train.dit="lora"', "train.lora_rank=2", "train.ema_decay=0.9")
    with pytest.raises(ValueError, match="ema_decay"):
        check_parallel(small_config(*lora).train, DistributedType.MULTI_CPU)
    with pytest.raises(ValueError, match="train.parallel"):
        small_config('train.parallel="zero3"')
