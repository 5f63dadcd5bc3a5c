"""``tinyhistory studio``: a local web page to write a storyboard and watch it stream into a video.

    tinyhistory studio                          # then open http://127.0.0.1:7860

``engine`` (the model and the generation thread), ``shots`` (the storyboard table), ``uploads`` (checks on uploaded
files) and ``mp4`` (the growing video) need no web framework; ``app`` is the Gradio page (the ``studio`` extra).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import sys
from pathlib import Path

from tinyhistory.studio.uploads import DEFAULT_MAX_UPLOAD_MB


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, or a name that resolves only there)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return False  # unresolvable: warned about as exposed (gradio says so if it cannot bind it)
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def exposure_warning(host: str, port: int | None) -> str | None:
    """The line printed before serving on a non-loopback ``--host``: the studio has no password, so whoever can
    reach that address can generate on this machine and download what it made."""
    if is_loopback(host):
        return None
    try:
        everywhere = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        everywhere = False
    where = (
        f"every network interface of this machine: anyone who can reach it on port {port}"
        if everywhere
        else f"{host}: anyone who can reach that address on port {port}"
    )
    return (
        f"[studio] warning: --host {host} listens on {where} (your local network, or the internet if the port is "
        "open) can use this studio, which has no password: run generations on this machine and download its videos "
        "and uploads. Use --host 127.0.0.1 (the default) to keep it to this machine."
    )


def check_address(host: str, port: int | None) -> None:
    """``--host`` / ``--port`` that can be served, checked by binding them once before the model loads (a busy port,
    a port out of range or a host that is not this machine's were tracebacks from deep in the web server)."""
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"--port {port}: expected a port from 1 to 65535 (default 7860)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ValueError(f"--host {host}: not an address this machine has ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            why = "in use (another studio or program listens there)" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise ValueError(
                f"--host {host} --port {port}: cannot listen there: {why}; choose another --port"
            ) from None


def serve(
    checkpoint: str | None = None,
    preset: str | None = None,
    model_path: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    out: str | Path = "studio_out",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    offload: bool = False,
    overrides: list[str] = (),
) -> int:
    """Load the model, then serve the page until interrupted (Ctrl-C)."""
    warning = exposure_warning(host, port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        from tinyhistory.studio.app import launch
    except ImportError as exc:  # gradio is an optional extra
        raise ValueError(f"the studio needs Gradio: pip install 'tinyhistory[studio]' ({exc})") from None
    from tinyhistory.locks import folder_lock
    from tinyhistory.studio.engine import Loaded, Studio

    if max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    check_address(host, port)
    out_lock = folder_lock(out, "studio").acquire()  # before the model loads: a taken or unwritable --out is named now
    try:
        print("[studio] loading the model…", flush=True)
        loaded = Loaded.load(checkpoint, preset, model_path, offload, overrides)
    except BaseException:
        out_lock.release()
        raise
    studio = Studio(loaded, out, int(max_upload_mb * 2**20), out_lock=out_lock)
    print(f"[studio] runs are written to {Path(out).resolve()}", flush=True)
    page, url = launch(studio, host, port)
    print(f"[studio] open {url} (Ctrl-C stops the studio)", flush=True)
    try:
        page.block_thread()  # returns on Ctrl-C, having closed the server
    finally:
        studio.close()
    return 0
