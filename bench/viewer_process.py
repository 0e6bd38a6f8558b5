"""The viewer for a benchmark: its own process under uvicorn, as it is deployed, on loopback.

A viewer in a thread of the benchmark's process shares one GIL with the client that times it, so every
frame the client reads slows the server down; Orthanc, the peer, never paid that. Here each has its own.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.settings import Settings
from orthanc import OrthancConnection
from orthanc.launcher import free_port
from viewer.access.users import Role, add_user


def _settings(data_dir: Path) -> Settings:
    # Plain HTTP on loopback: cookies without the Secure-only prefix, for httpx as for Chromium. The
    # study follower stays off: it would index the benchmark's studies while they are timed.
    return Settings(data_dir=data_dir, cookie_secure=False, study_index_follow=False)


def _serve(data_dir: Path, orthanc: OrthancConnection, port: int) -> None:
    from viewer.app import create_app

    app = create_app(_settings(data_dir), orthanc)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", server_header=False)


@contextmanager
def viewer_process(data_dir: Path, orthanc: OrthancConnection, username: str, password: str) -> Iterator[str]:
    """A migrated database with one radiologist, and the viewer serving it; yields its base URL."""
    settings = _settings(data_dir)
    upgrade(settings.resolved_database_url)
    with transaction(session_factory(make_engine(settings.resolved_database_url))) as db:
        add_user(db, username, password, {Role.RADIOLOGIST})
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_serve, args=(data_dir, orthanc, port), name="viewer", daemon=True
    )
    process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, process)
        yield base
    finally:
        process.terminate()
        process.join(10)


def viewer_pid() -> int:
    """The process id of the viewer this process started (for reading its CPU time)."""
    return next(p.pid for p in multiprocessing.active_children() if p.name == "viewer" and p.pid)


def _wait_until_up(base: str, process: multiprocessing.process.BaseProcess, within_s: float = 60) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError(f"the viewer process exited with {process.exitcode}")
        try:
            if httpx.get(f"{base}/signin", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the viewer did not answer within {within_s:.0f} s")
