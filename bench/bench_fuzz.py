"""Benchmark: a long seeded fuzz run, the same hostile files and viewer paths as tests/viewer/test_fuzz.py.

Starts a temporary Orthanc and the viewer in its own process (as deployed), uploads every hostile file
through STOW-RS and opens each stored one through every viewer path, then prints a table: files, stored,
refused by status, 5xx answers, hangs (no answer within the timeout), Orthanc crashes, and the peak
resident memory of the platform's process and of Orthanc.
Usage: .venv/bin/python -m bench.bench_fuzz [--files 2000] [--seed 15] [--timeout 20]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import secrets
import tempfile
import time
from pathlib import Path

import httpx

from bench.viewer_process import viewer_process
from openaim.db import make_engine, session_factory, transaction
from openaim.settings import Settings
from orthanc import OrthancServer
from orthanc.launcher import free_port
from tests.viewer.hostile_files import Outcome, mutations, orthanc_is_up, sign_in, timed_run
from viewer.access.users import Role, add_user

USERNAME, ADMIN = "bench", "bench-admin"
PASSWORD = secrets.token_urlsafe(16)


def peak_rss_mb(pid: int | None) -> float:
    """The process's high-water resident set (VmHWM), in MB; 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return 0.0
    kilobytes = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), "0")
    return int(kilobytes) / 1024


def table(outcomes: list[Outcome], elapsed: float, viewer_mb: float, orthanc_mb: float) -> str:
    refused = collections.Counter(o.upload for o in outcomes if o.upload != 200)
    by_path = collections.Counter(
        f"{path} {code}" for o in outcomes for path, code in o.answers.items() if code >= 500
    )
    stored = [o for o in outcomes if o.upload == 200]
    slowest = max((o.milliseconds for o in outcomes), default=0)
    rows = [
        ("files", str(len(outcomes))),
        ("stored (then opened through 10 viewer paths)", str(len(stored))),
        *((f"refused at upload: {status}", str(count)) for status, count in sorted(refused.items())),
        ("viewer answers", str(sum(len(o.answers) for o in stored))),
        (
            "5xx answers (upload or viewer)",
            str(sum(refused[s] for s in refused if s >= 500) + sum(by_path.values())),
        ),
        (
            "hangs (no answer in time)",
            str(sum(len([h for h in o.hangs if h != "ORTHANC DIED"]) for o in outcomes)),
        ),
        ("Orthanc crashes", str(sum("ORTHANC DIED" in o.hangs for o in outcomes))),
        ("peak RSS, platform process (MB)", f"{viewer_mb:.0f}"),
        ("peak RSS, Orthanc (MB)", f"{orthanc_mb:.0f}"),
        ("elapsed (s); files/s", f"{elapsed:.0f}; {len(outcomes) / elapsed:.1f}"),
        ("slowest file, upload and every path (ms)", str(slowest)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"| {'':<{width}} | {'':>8} |", f"|{'-' * (width + 2)}|{'-' * 9}:|"]
    lines[0] = f"| {'measure':<{width}} | {'value':>8} |"
    lines += [f"| {name:<{width}} | {value:>8} |" for name, value in rows]
    lines += [f"| 5xx: {name:<{width - 5}} | {count:>8} |" for name, count in by_path.most_common()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a request counts as hung")
    args = parser.parse_args()
    shared = Settings().shared_data_dir
    with tempfile.TemporaryDirectory() as tmp:
        server = OrthancServer(Path(tmp) / "orthanc", http_port=free_port(), stable_age=60)
        with server as orthanc, viewer_process(Path(tmp) / "data", orthanc, USERNAME, PASSWORD) as base:
            database = Settings(data_dir=Path(tmp) / "data").resolved_database_url
            with transaction(session_factory(make_engine(database))) as db:
                add_user(db, ADMIN, PASSWORD, {Role.ADMIN, Role.RADIOLOGIST})
            (viewer,) = [p for p in multiprocessing.active_children() if p.name == "viewer"]
            with httpx.Client(base_url=base, timeout=args.timeout) as client:
                sign_in(client, ADMIN, PASSWORD)
                started = time.monotonic()
                outcomes = timed_run(
                    client,
                    mutations(shared, args.files, args.seed),
                    lambda: orthanc_is_up(orthanc.url, (orthanc.username, orthanc.password)),
                )
                elapsed = time.monotonic() - started
            orthanc_pid = server.process.pid if server.process else None
            print(f"\nseed {args.seed}, {args.files} hostile files, one at a time, loopback\n")
            print(table(outcomes, elapsed, peak_rss_mb(viewer.pid), peak_rss_mb(orthanc_pid)))


if __name__ == "__main__":
    main()
