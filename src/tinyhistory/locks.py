"""One writer per output: an exclusive lock file beside what a command writes.

Two commands writing the same outputs mix them silently (two ``generate`` into one mp4, two ``train`` into one run
folder, two ``data prepare`` rebuilding one manifest), and advice such as "continue it with --resume" is wrong while
the other run is still going. Every writing command therefore holds :class:`OutputLock` for as long as it writes:
a second one refuses with one line that names the holder (PID, host, command).

How: the lock is ``fcntl.flock`` on an open file descriptor, not a file created with ``O_CREAT | O_EXCL``. The kernel
drops a ``flock`` the moment its holder dies, however it dies (``kill -9``, out of memory, power cut on a local
disk), so a lock is never held by a dead process and never needs a PID heuristic to be broken — a PID may be reused
by an unrelated process, and a PID says nothing on another host of a shared file system (Linux's NFS client maps
``flock`` onto the server's byte-range locks). The file also holds the holder's PID, host and command, written after
the lock is taken, so the refusal can name it; a file left behind by a killed holder is taken over with a one-line
notice that names the dead PID. Where a file system cannot lock (``ENOLCK``, ``EOPNOTSUPP``), the lock falls back to
the PID in the file: a live PID on this host holds it, a dead one is stale.

The file is removed on release; the descriptor is re-checked against the path after locking, so a process that
opened the file just before its holder removed it never believes it holds a lock on the removed file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from tinyhistory.files import writing

LOCK_NAME = ".tinyhistory.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class LockHeld(ValueError):
    """Another process writes these outputs (a ``ValueError``: the CLI prints it as one line, exit 2)."""


def folder_lock(folder: str | Path, command: str) -> OutputLock:
    """The lock of a run folder (``train --out``, ``data prepare --out``): ``FOLDER/.tinyhistory.lock``."""
    return OutputLock(Path(folder) / LOCK_NAME, command)


def file_lock(out: str | Path, command: str) -> OutputLock:
    """The lock of one output file and its companions (``generate --out story.mp4``): ``story.mp4.lock`` beside it,
    so two runs into different files of one folder do not exclude each other."""
    out = Path(out)
    return OutputLock(out.with_name(out.name + ".lock"), command)


def is_main_rank() -> bool:
    """Whether this is the main process of an ``accelerate launch`` / ``torchrun`` group (or a plain process): only it
    takes a run's lock, the other ranks write under it."""
    return os.environ.get("RANK", "0") == "0"


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID runs on this host (a zombie counts as alive until reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    return True


class OutputLock:
    """An exclusive lock on ``path``, held from :meth:`acquire` (or ``with``) to :meth:`release` or process exit.

    ``command`` names what holds it (e.g. ``"generate"``); the file records the full command line.
    """

    def __init__(self, path: str | Path, command: str):
        self.path = Path(path)
        self.command = command
        self.fd: int | None = None

    # -- taking and giving back -------------------------------------------------------------------------------------
    def acquire(self) -> OutputLock:
        """Take the lock or raise :class:`LockHeld` naming the holder; print a notice when taking over a stale one."""
        if self.fd is not None:
            return self
        with writing(self.path.parent, "output folder"):
            _make_parent(self.path)
        with writing(self.path, "lock file"):
            return self._acquire()

    def _acquire(self) -> OutputLock:
        for _ in range(50):  # retried only when the holder removed the file between our open and our lock
            fd = _open(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd, wait=True)
                os.close(fd)
                raise LockHeld(self._held_message(holder)) from None
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    os.close(fd)
                    raise
                self._acquire_without_flock(fd)
                return self
            if not _same_file(fd, self.path):  # the holder removed it after we opened it: lock the new one
                os.close(fd)
                continue
            self._take(fd, _read_holder(fd, wait=False))
            return self
        raise LockHeld(f"{self.path}: could not take the lock (it keeps being replaced by other processes)")

    def release(self) -> None:
        """Remove the file and drop the lock (also done by the kernel if this process dies first)."""
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink(missing_ok=True)  # while still locked: nobody can be between lock and check
        except OSError:
            pass  # a read-only or vanished folder: the kernel still drops the lock with the descriptor
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    # -- details ----------------------------------------------------------------------------------------------------
    def _take(self, fd: int, previous: dict | None) -> None:
        """Record this process as the holder; name the previous holder if it left the file behind (killed)."""
        if previous and previous.get("pid") != os.getpid():
            here = previous.get("host") == socket.gethostname()
            alive = here and pid_alive(_pid(previous))
            print(
                f"tinyhistory: taking over the stale lock {self.path} of PID {previous.get('pid')}"
                f"{'' if here else ' on ' + str(previous.get('host'))} ({previous.get('command', '?')}), which "
                f"{'no longer holds it' if alive else 'is no longer running'}",
                file=sys.stderr,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command_line(self.command),
            "kind": self.command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError:  # (a full disk): leave no empty lock file behind
            if _same_file(fd, self.path):
                self.path.unlink(missing_ok=True)
            os.close(fd)
            raise
        self.fd = fd

    def _acquire_without_flock(self, fd: int) -> None:
        """A file system without locks: a live PID on this host in the file holds it; anything else is stale."""
        holder = _read_holder(fd, wait=False)
        if holder and holder.get("pid") != os.getpid():
            here = holder.get("host") == socket.gethostname()
            if not here or pid_alive(_pid(holder)):
                os.close(fd)
                raise LockHeld(self._held_message(holder))
        self._take(fd, holder)

    def _held_message(self, holder: dict | None) -> str:
        if not holder:
            who = "another process (still starting: it has not written its PID yet)"
        else:
            host = "" if holder.get("host") == socket.gethostname() else f" on {holder.get('host')}"
            who = f"PID {holder.get('pid')}{host} ({holder.get('command', '?')}, since {holder.get('started', '?')})"
        kind = (holder or {}).get("kind") or self.command  # what holds it (a studio may hold a generate's --out)
        return (
            f"{self.path.parent}: another {kind} is writing here: {who} holds {self.path.name}; wait for it "
            "to finish or stop it, or choose another --out"
        )


def _pid(holder: dict) -> int:
    """The holder's PID (0 when the record has none that reads as a number)."""
    try:
        return int(holder.get("pid") or 0)
    except (TypeError, ValueError):
        return 0


def _command_line(command: str) -> str:
    """The holder's command line as a user would recognise it (``tinyhistory generate --out …``); inside another
    program (a test, a notebook) the command's name and that program."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    program = started.name
    # the console script, or ``python -m tinyhistory.cli`` (argv[0] is then the cli package's __main__.py)
    if program.startswith("tinyhistory") or started.parts[-2:] == ("cli", "__main__.py"):
        return " ".join(["tinyhistory", *sys.argv[1:]])[:500]
    return f"{command} in {program or 'python'}"


def _make_parent(path: Path) -> None:
    """The output folder, with an error naming the path when part of it is a file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [path.parent, *path.parent.parents] if p.exists() and not p.is_dir()), path.parent)
        if blocker == path.parent:
            raise ValueError(f"{path.parent} is a file, not a folder for the outputs; choose another --out") from None
        raise ValueError(f"{path.parent}: cannot make this output folder, {blocker} is a file") from None


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk, held = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)


def _read_holder(fd: int, wait: bool) -> dict | None:
    """The holder's record; ``wait``: give a holder that has just taken the lock a moment to write it."""
    for _ in range(20 if wait else 1):
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            record = json.loads(text) if text else None
        except (OSError, json.JSONDecodeError):
            record = None
        if isinstance(record, dict):
            return record
        if wait:
            time.sleep(0.05)
    return None
