"""``tinyhistory study serve``: the raters' page, a small standard-library HTTP server.

Plain HTML rather than Gradio: two ``<video>`` elements kept in sync by a few lines of script, keyboard shortcuts and
a vote that is on disk before the next pair shows are simpler to get exactly right without a component framework.

Routes (everything else is 404): ``/`` and ``/static/study.{js,css}`` (the page, from the package), ``GET
/api/next?rater=NAME`` (the rater's progress and pair), ``POST /api/vote`` (``{"rater", "token", "choice",
"reasons"}``; answers with the next pair after the vote is fsynced), ``GET /video/ID`` (a registered video by its
16-hex-digit content id, nothing else: a path in a request never reaches the file system). Bound to 127.0.0.1 by
default; on loopback the ``Host`` header must name loopback too (a web page elsewhere cannot reach the study
through DNS rebinding).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import re
import signal
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tinyhistory.study import StudyError
from tinyhistory.study.layout import ID_RE, VOTES_FILE, Study
from tinyhistory.study.schedule import Pair, Scheduler, all_pairs
from tinyhistory.study.votes import CHOICES, REASONS, Vote, VoteLog, check_rater, now, read_votes

STATIC = Path(__file__).with_name("static")
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/study.js": ("study.js", "text/javascript; charset=utf-8"),
    "/static/study.css": ("study.css", "text/css; charset=utf-8"),
}
MAX_BODY = 64 * 1024
VIDEO_PATH = re.compile(r"^/video/([0-9a-f]{16})$")
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class StudyApp:
    """The study's state behind the page: registered videos, the vote log and the scheduler (one lock)."""

    def __init__(self, root: str | Path):
        self.study = Study.load(root, verify=True)
        self.study.require_complete()
        self.log = VoteLog(self.study.root / VOTES_FILE)
        votes, problems = read_votes(self.log.path)
        for problem in problems:
            print(f"[study] warning: {problem}", flush=True)
        pairs = all_pairs(list(self.study.systems), list(self.study.storyboards), self.study.seeds)
        self.scheduler = Scheduler(pairs, self.study.salt, votes)
        self.lock = threading.Lock()
        self.shown_at: dict[tuple[str, str], float] = {}  # (rater, pair key) -> when it first showed
        self.stories = {name: self.study.storyboard_dict(name) for name in self.study.storyboards}
        self.durations = {name: entry["duration"] for name, entry in self.study.storyboards.items()}

    def video_file(self, video_id: str) -> Path | None:
        """The file of a registered video id, or None (never a path from the request)."""
        if not ID_RE.match(video_id) or video_id not in self.study.videos:
            return None
        return self.study.path_of(video_id)

    def _payload(self, rater: str, note: str | None = None) -> dict:
        pair = self.scheduler.next_for(rater)
        done, total = self.scheduler.progress(rater)
        out: dict = {"rater": rater, "done": done, "total": total, "pair": None}
        if note:
            out["note"] = note
        if pair is None:
            return out
        self.shown_at.setdefault((rater, pair.key), time.monotonic())
        left, right = self.scheduler.sides(rater, pair)
        videos = [self.study.video_for(system, pair.storyboard, pair.seed) for system in (left, right)]
        out["pair"] = {
            "token": self.scheduler.token(pair),
            "left": f"/video/{videos[0].id}",
            "right": f"/video/{videos[1].id}",
            "storyboard": self.stories[pair.storyboard],
            "duration": self.durations[pair.storyboard],
        }
        return out

    def next(self, rater: object) -> dict:
        rater = check_rater(rater)
        with self.lock:
            return self._payload(rater)

    def vote(self, body: dict) -> dict:
        """Append one vote (fsynced) and answer with the rater's next pair. A pair the rater has rated already is
        not appended again (a double click, two tabs): the answer says so and moves on."""
        rater = check_rater(body.get("rater"))
        choice, reasons = body.get("choice"), body.get("reasons", [])
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {', '.join(CHOICES)}")
        if not isinstance(reasons, list) or any(r not in REASONS for r in reasons):
            raise ValueError(f"reasons must be a list of {', '.join(REASONS)}")
        with self.lock:
            pair: Pair | None = self.scheduler.tokens.get(str(body.get("token")))
            if pair is None:
                raise ValueError("unknown pair (reload the page)")
            if self.scheduler.has_voted(rater, pair):
                return self._payload(rater, note="you had rated that pair already; it was not counted twice")
            left, right = self.scheduler.sides(rater, pair)
            shown = self.shown_at.pop((rater, pair.key), None)
            vote = Vote(
                rater=rater,
                pair=pair.key,
                storyboard=pair.storyboard,
                seed=pair.seed,
                left=left,
                right=right,
                left_video=self.study.video_for(left, pair.storyboard, pair.seed).id,
                right_video=self.study.video_for(right, pair.storyboard, pair.seed).id,
                choice=choice,
                reasons=tuple(r for r in REASONS if r in reasons),
                time=now(),
                seconds=None if shown is None else round(time.monotonic() - shown, 1),
            )
            self.log.append(vote)  # on disk (fsync) before the next pair is chosen and shown
            self.scheduler.record(vote)
            return self._payload(rater)


class _Handler(BaseHTTPRequestHandler):
    server_version = "tinyhistory-study"
    sys_version = ""
    app: StudyApp
    allowed_hosts: set[str] | None  # None: any Host header (bound to a non-loopback address on purpose)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # the page polls nothing; errors are answered to the page, not logged per request

    def _host_ok(self) -> bool:
        if self.allowed_hosts is None:
            return True
        return (self.headers.get("Host") or "").lower() in self.allowed_hosts

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if not self._host_ok():
            return self._send(HTTPStatus.FORBIDDEN, b"wrong Host\n", "text/plain; charset=utf-8")
        url = urlsplit(self.path)
        if url.path in PAGES:
            name, content_type = PAGES[url.path]
            return self._send(HTTPStatus.OK, (STATIC / name).read_bytes(), content_type)
        if url.path == "/api/next":
            try:
                return self._json(HTTPStatus.OK, self.app.next(parse_qs(url.query).get("rater", [""])[0]))
            except ValueError as exc:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        match = VIDEO_PATH.match(url.path)
        file = self.app.video_file(match.group(1)) if match and not url.query else None
        if file is None:
            return self._not_found()
        return self._send_video(file)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return self._send(HTTPStatus.FORBIDDEN, b"wrong Host\n", "text/plain; charset=utf-8")
        if urlsplit(self.path).path != "/api/vote":
            return self._not_found()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                raise ValueError("a vote is a small JSON object")
            body = json.loads(self.rfile.read(length))
            if not isinstance(body, dict):
                raise ValueError("a vote is a JSON object")
            return self._json(HTTPStatus.OK, self.app.vote(body))
        except (ValueError, json.JSONDecodeError) as exc:
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        except OSError as exc:  # the disk refused the vote: say so, the page keeps the pair for another try
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"the vote could not be saved ({exc})"})

    def _send_video(self, file: Path) -> None:
        """The mp4, whole or the byte range asked for (browsers seek and loop with ranges)."""
        size = file.stat().st_size
        start, end, status = 0, size - 1, HTTPStatus.OK
        asked = self.headers.get("Range")
        if asked:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", asked.strip())
            if match and (match.group(1) or match.group(2)):
                if match.group(1):
                    start = int(match.group(1))
                    end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                else:  # a suffix: the last N bytes
                    start = max(0, size - int(match.group(2)))
                status = HTTPStatus.PARTIAL_CONTENT
            if not match or start > end or start >= size:
                extra = {"Content-Range": f"bytes */{size}"}
                return self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", "text/plain", extra)
        self.send_response(status)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Cache-Control", "private, max-age=3600")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        for key, value in SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            with open(file, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    block = f.read(min(left, 1 << 16))
                    if not block:
                        break
                    self.wfile.write(block)
                    left -= len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser had enough (it often reads the start, then asks for a range)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # a restarted server takes its port back at once
    request_queue_size = 64  # several raters, each browser opening a few connections for the two videos


def _resolve(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.ip_address(socket.getaddrinfo(host, None)[0][4][0])
    except (OSError, IndexError) as exc:
        raise StudyError(f"--host {host}: not an address this machine can bind ({exc})") from None


def exposure_warning(host: str, port: int) -> str | None:
    """None on loopback; otherwise one line naming who can now reach the page."""
    address = _resolve(host)
    if address.is_loopback:
        return None
    if address.is_unspecified:
        mine = _machine_addresses()
        who = (
            "anyone who can reach this machine on any of its networks"
            + (f" ({', '.join(mine)})" if mine else "")
            + ": your LAN and Wi-Fi, any VPN, and the internet wherever no firewall stops it"
        )
    else:
        who = f"anyone on the network of {address} who can reach it"
    return (
        f"WARNING: serving the study on {host}:{port}, not 127.0.0.1: {who} can open the page, watch every video of "
        "the study and vote under any name (there is no password). Stop with Ctrl-C if you did not mean that."
    )


def _machine_addresses() -> list[str]:
    try:
        import psutil

        found = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET]
    except Exception:  # psutil is accelerate's dependency; without it the warning still says who in words
        return []
    return [a for a in found if not ipaddress.ip_address(a).is_loopback]


def make_server(root: str | Path, host: str = "127.0.0.1", port: int = 7870) -> tuple[_Server, StudyApp]:
    """The bound (not yet serving) server and its app. ``port=0`` picks a free port."""
    app = StudyApp(root)
    address = _resolve(host)
    server_class = _Server
    if address.version == 6:
        server_class = type("_Server6", (_Server,), {"address_family": socket.AF_INET6})
    try:
        server = server_class((host, port), _Handler)
    except OSError as exc:
        raise StudyError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    bound = server.server_address[1]
    allowed = None
    if address.is_loopback:
        allowed = {f"{name}:{bound}" for name in ("127.0.0.1", "localhost", "[::1]")}
    server.RequestHandlerClass = type("Handler", (_Handler,), {"app": app, "allowed_hosts": allowed})
    return server, app


def serve(root: str | Path, host: str = "127.0.0.1", port: int = 7870) -> int:
    """Serve the study until Ctrl-C or SIGTERM (votes are on disk as they come: stopping loses nothing)."""
    root = Path(root)
    lock = _lock(root)
    try:
        server, app = make_server(root, host, port)
        warning = exposure_warning(host, server.server_address[1])
        if warning:
            print(warning, flush=True)
        shown = f"[{host}]" if ":" in host else host
        pairs = app.scheduler.total
        print(
            f"[study] {root}: {len(app.study.systems)} systems, {pairs} pairs per rater; "
            f"serving http://{shown}:{server.server_address[1]}/ (Ctrl-C stops)",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    finally:
        os.close(lock)


def _lock(root: Path) -> int:
    """One server per study (two would each believe their own schedule); the lock dies with the process."""
    from tinyhistory.study.layout import STUDY_FILE

    if not (root / STUDY_FILE).is_file():
        Study.load(root)  # raises the "not a study folder" message
    fd = os.open(root / ".serve.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StudyError(f"{root} is being served already by another `tinyhistory study serve`") from None
    return fd
