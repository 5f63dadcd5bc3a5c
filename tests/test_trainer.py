"""The training loop end to end on the demo clip: outputs, logs, held-out split and exact resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tinyhistory.data.windows import clip_from_config
from tinyhistory.train.checkpoint import load_model, trained_steps
from tinyhistory.train.trainer import lr_lambda, train


def _weights(folder):
    model, _ = load_model(folder)
    return model.state_dict()


def test_train_writes_checkpoint_log_and_config(small_config, tmp_path):
    cfg = small_config("train.steps=3", "train.checkpoint_every=2")
    summary = train(cfg, tmp_path / "run", progress=False, save_dtype=torch.float16)
    assert summary["steps"] == 3 and summary["heldout_loss"] > 0
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in records if "heldout_loss" in r] == [2, 3]
    final = tmp_path / "run" / "final"
    assert (final / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    enc = load_file(str(final / "history_encoder.safetensors"))
    assert all(v.dtype == torch.float16 for v in enc.values())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"] == 3
    model, cfg_back = load_model(final)  # fp16 on disk, fp32 in memory
    assert cfg_back.history.method == "proposed" and next(model.parameters()).dtype == torch.float32


def test_resume_is_exact(small_config, tmp_path):
    """4 steps in one go == 2 steps, stop, then the same command again (resumes from OUT/last)."""
    straight = small_config("train.steps=4", "train.checkpoint_every=2")
    train(straight, tmp_path / "a", progress=False)
    summary = train(straight, tmp_path / "b", progress=False, stop_after=2)
    assert summary["final"] is None
    assert json.loads((tmp_path / "b" / "last" / "state" / "trainer.json").read_text())["step"] == 2
    train(straight, tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "b" / "final")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)
    log_b = (tmp_path / "b" / "train_log.jsonl").read_text()
    assert '"step": 3' in log_b and '"step": 4' in log_b

    # killed between the two renames of the atomic checkpoint: only last.old is complete, and it is used
    train(straight, tmp_path / "c", progress=False, stop_after=2)
    (tmp_path / "c" / "last").rename(tmp_path / "c" / "last.old")
    train(straight, tmp_path / "c", progress=False)
    c = _weights(tmp_path / "c" / "final")
    for key in a:
        torch.testing.assert_close(a[key], c[key], atol=0, rtol=0, msg=key)


def test_snapshots_hold_the_weights_of_their_step_and_the_newest_are_kept(small_config, tmp_path):
    """train.snapshot_every = 1 with snapshots_kept = 2, over a stop and a resume: OUT/snapshots/step_N/ loads like
    final/, holds the weights after step N (those of a run stopped at N) and the log up to N; the older ones go."""
    cfg = small_config("train.steps=4", "train.checkpoint_every=2", "train.snapshot_every=1", "train.snapshots_kept=2")
    train(cfg, tmp_path / "a", progress=False, stop_after=2)
    snapshots = tmp_path / "a" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["step_000001", "step_000002"]
    train(cfg, tmp_path / "a", progress=False)
    assert sorted(p.name for p in snapshots.iterdir()) == ["step_000003", "step_000004"]
    assert trained_steps(snapshots / "step_000003") == 3 and trained_steps(tmp_path / "a" / "final") == 4

    plain = small_config("train.steps=4", "train.checkpoint_every=2")
    train(plain, tmp_path / "b", progress=False, stop_after=3)  # OUT/last holds step 3
    snapshot, stopped = _weights(snapshots / "step_000003"), _weights(tmp_path / "b" / "last")
    for key in stopped:
        torch.testing.assert_close(snapshot[key], stopped[key], atol=0, rtol=0, msg=key)
    final = _weights(tmp_path / "a" / "final")
    assert any(not torch.equal(final[key], snapshot[key]) for key in final)

    with pytest.raises(ValueError, match="train.snapshot_every must be >= 0"):
        small_config("train.snapshot_every=-1")


def test_heldout_part_is_the_last_fifth(small_config):
    cfg = small_config()
    clip = clip_from_config(cfg.data)
    total = clip.train.shape[1] + clip.heldout.shape[1]
    assert total == 1920 and clip.heldout.shape[1] == 384
    assert clip.train.shape[0] == 3 and clip.train.shape[2:] == (64, 64)


def test_lr_schedule_warms_up_then_decays(small_config):
    f = lr_lambda(small_config("train.steps=100", "train.warmup_steps=10", "train.min_lr_ratio=0.1").train)
    assert f(0) == 0.1 and f(9) == 1.0
    assert abs(f(100) - 0.1) < 1e-9 and f(50) < f(20)


def test_fp16_export_halves_the_transformer_file(small_config, tmp_path):
    from tinyhistory.assemble import HistoryDiT
    from tinyhistory.train.checkpoint import save_weights

    cfg = small_config()
    model = HistoryDiT.from_config(cfg)
    save_weights(model, cfg, tmp_path / "fp32")
    save_weights(model, cfg, tmp_path / "fp16", dtype=torch.float16)
    name = "transformer/diffusion_pytorch_model.safetensors"
    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "fp16" / name)).values())
    size32, size16 = ((tmp_path / d / name).stat().st_size for d in ("fp32", "fp16"))
    assert size16 < 0.55 * size32
    assert next(model.parameters()).dtype == torch.float32  # the live model is untouched
    back, _ = load_model(tmp_path / "fp16")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[key], value.half().float(), msg=key)


def test_window_sampler_never_crosses_clips_and_keeps_the_single_clip_stream():
    from tinyhistory.codecs import PixelUnshuffleCodec
    from tinyhistory.data.windows import WindowSampler

    codec = PixelUnshuffleCodec(4)
    a = torch.arange(10.0).view(1, 10, 1, 1).expand(3, 10, 4, 4)
    b = 100 + torch.arange(6.0).view(1, 6, 1, 1).expand(3, 6, 4, 4)
    tiny = torch.zeros(3, 2, 4, 4)  # shorter than a window: contributes no window
    sampler = WindowSampler([a, tiny, b], 4, codec, [], [])
    assert sampler.valid_starts.tolist() == list(range(7)) + list(range(12, 15))
    px, _, _ = sampler.sample(64, torch.Generator().manual_seed(0))
    firsts = px[:, 0, :, 0, 0]
    assert all(((w[0] < 10) and (w[-1] < 10)) or ((w[0] >= 100) and (w[-1] >= 100)) for w in firsts.tolist())
    # a single clip draws exactly the same windows as a plain randint over its starts (the committed runs' stream)
    single = WindowSampler(a, 4, codec, [], [])
    starts = torch.randint(0, 7, (5,), generator=torch.Generator().manual_seed(3))
    px1, _, _ = single.sample(5, torch.Generator().manual_seed(3))
    assert px1[:, 0, 0, 0, 0].tolist() == starts.float().tolist()


@pytest.mark.slow
def test_two_processes_draw_their_own_windows_and_resume(tmp_path, capsys):
    """`accelerate launch` with 2 CPU processes: each rank samples its own windows (its own RNG, saved per rank),
    one log line per step, an exact-count resume; a single process refuses to resume a 2-process run."""
    import os
    import subprocess

    from conftest import SMALL_OVERRIDES
    from launch import accelerate_launch

    from tinyhistory.cli import main

    out = tmp_path / "run"
    sets = [x for item in [*SMALL_OVERRIDES, "train.checkpoint_every=2"] for x in ("--set", item)]
    train_args = ["train", "--stage", "frame-query", "--steps", "4", "--out", str(out), "--no-progress", *sets]
    launch = accelerate_launch(2, 29518)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra: str) -> None:
        result = subprocess.run([*launch, *train_args, *extra], capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    run("--stop-after", "2")
    state = json.loads((out / "last" / "state" / "trainer.json").read_text())
    assert state["step"] == 2 and len(state["data_rng_per_process"]) == 2
    assert state["data_rng_per_process"][0] != state["data_rng_per_process"][1]
    assert main(train_args) == 2  # one process cannot take over two processes' sampling state
    assert "written by 2 training process(es)" in capsys.readouterr().err
    run()
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]  # the main process alone writes the log
    assert (out / "final" / "history_encoder.safetensors").is_file()
    # stage II from that checkpoint in 2 processes: a LoRA on the DiT, the encoder keeps training
    ar = ["train", "--stage", "ar", "--init-from", str(out / "final"), "--out", str(tmp_path / "ar"), "--no-progress"]
    ar += ["--steps", "2", *sets, "--set", "train.segment_frames=2", "--set", "train.lora_rank=4"]
    result = subprocess.run([*launch, *ar], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ar" / "final" / "lora.safetensors").is_file()


def test_ema_follows_its_recurrence_and_swaps_weights_in_and_out(tmp_path):
    """shadow ← r·shadow + (1 − r)·w with the warm-up r = min(d, (1 + n)/(10 + n)); frozen weights are not kept;
    ``applied`` puts the shadow in and the weights back bit for bit; save/load round-trips shadow and count."""
    from tinyhistory.train.ema import EMA

    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    ema = EMA(model, decay=0.5)
    assert set(ema.shadow) == {"weight"}
    start = model.weight.detach().clone()
    expected = start.clone()
    for n, value in enumerate((1.0, 2.0, 3.0)):
        with torch.no_grad():
            model.weight.fill_(value)
        r = min(0.5, (1 + n) / (10 + n))  # 0.1, 2/11, 0.25
        expected = r * expected + (1 - r) * value
        ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], expected)
    with ema.applied(model):
        torch.testing.assert_close(model.weight.detach(), expected)
    assert torch.equal(model.weight.detach(), torch.full((2, 3), 3.0))
    ema.save(tmp_path)
    again = EMA(model, decay=0.5)
    again.load(tmp_path)
    assert again.updates == 3 and torch.equal(again.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError, match="train.ema_decay must be in"):
        EMA(model, decay=1.0)


def test_an_ema_run_writes_final_ema_logs_its_loss_and_resumes_exactly(small_config, tmp_path):
    """``train.ema_decay``: OUT/final_ema/ is a loadable checkpoint holding the EMA (not the last weights), the log
    and summary carry the EMA's held-out loss, and 2 steps + resume give the same EMA as 4 in one go."""
    cfg = small_config("train.steps=4", "train.checkpoint_every=2", "train.ema_decay=0.5")
    summary = train(cfg, tmp_path / "a", progress=False)
    assert summary["heldout_loss_ema"] > 0 and summary["final_ema"].endswith("final_ema")
    records = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "heldout_loss_ema" in r] == [2, 4]
    weights, averaged = _weights(tmp_path / "a" / "final"), _weights(tmp_path / "a" / "final_ema")
    assert any(not torch.equal(weights[k], averaged[k]) for k in weights)

    train(cfg, tmp_path / "b", progress=False, stop_after=2)
    assert (tmp_path / "b" / "last" / "ema.safetensors").is_file()
    train(cfg, tmp_path / "b", progress=False)
    resumed = _weights(tmp_path / "b" / "final_ema")
    for key in averaged:
        torch.testing.assert_close(averaged[key], resumed[key], atol=0, rtol=0, msg=key)
    with pytest.raises(ValueError, match="train.ema_decay must be in"):
        small_config("train.ema_decay=1.5")


def test_a_resume_refuses_changed_settings_by_name_and_reads_missing_ones_as_defaults(small_config, tmp_path):
    """Steps may change on a resume, what trains may not (named in the error); a setting the checkpoint's config
    lacks — written before the setting existed — is its default, so such a run resumes unless asked otherwise."""
    from tinyhistory.train.trainer import check_resume_config

    last = tmp_path / "run" / "last"
    last.mkdir(parents=True)
    cfg = small_config()
    cfg.save(last / "config.json")
    check_resume_config(small_config("train.steps=99"), last)
    with pytest.raises(ValueError, match=r"run was trained with other settings \(train.learning_rate: 0.0003 -> 0.5\)"):
        check_resume_config(small_config("train.learning_rate=0.5"), last)

    older = json.loads((last / "config.json").read_text())
    del older["train"]["ema_decay"]  # a checkpoint from before train.ema_decay existed
    (last / "config.json").write_text(json.dumps(older))
    check_resume_config(small_config(), last)
    with pytest.raises(ValueError, match=r"train.ema_decay: None -> 0.5"):
        check_resume_config(small_config("train.ema_decay=0.5"), last)
