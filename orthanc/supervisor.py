"""Keep the child Orthanc running: when it dies, start it again (same port, same storage) after a back-off
that doubles with each death in a row, up to a cap, and say so in the log and on ``/healthz``.

Without this, an Orthanc that crashed (or was killed, or ran out of memory) left every page answering 502
until a person restarted the platform. Only what the process says about itself is logged (its exit code or
signal, and where its own log is): never its output, which may name a study.

One thread watches the child for the supervisor's whole life, and starts every new child itself: Linux's
"stop with parent" signal (launcher._stop_with_parent) follows the *thread* that started the process, so a
child started from a short-lived thread would be stopped as soon as that thread ended.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from openaim.db import utcnow
from orthanc.config import OrthancLayout
from orthanc.connection import OrthancConnection

log = logging.getLogger("openaim.orthanc")

FIRST_BACKOFF_SECONDS = 1.0
# A child that has answered for this long is healthy again: the next death waits the first back-off anew.
HEALTHY_AFTER_SECONDS = 60.0
WATCH_SECONDS = 0.2  # how often the child is looked at: a death costs at most this much before it is seen


class ChildServer(Protocol):
    """What is supervised: launcher.OrthancServer."""

    layout: OrthancLayout
    process: subprocess.Popen[bytes] | None

    def start(self, timeout: float = ...) -> OrthancConnection: ...

    def stop(self, timeout: float = ...) -> None: ...


class ArchiveState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ArchiveHealth:
    """What ``/healthz`` says about the child Orthanc."""

    state: ArchiveState
    since: datetime  # when it entered this state
    restarts: int  # successful restarts since the platform started
    last_exit: str | None  # why the last child ended, e.g. "killed by SIGKILL"; None while none has

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "since": self.since.isoformat(),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


def exit_reason(returncode: int) -> str:
    """An exit status as a person reads it (Popen gives -N for a process killed by signal N)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def backoff(deaths_in_a_row: int, cap: float, first: float = FIRST_BACKOFF_SECONDS) -> float:
    """Seconds to wait before the next start: ``first`` after one death, doubling, never above ``cap``."""
    return min(cap, first * 2 ** max(deaths_in_a_row - 1, 0))


class OrthancSupervisor:
    """Starts ``server`` and restarts it whenever it ends, until ``stop``."""

    def __init__(
        self,
        server: ChildServer,
        *,
        max_backoff: float,
        first_backoff: float = FIRST_BACKOFF_SECONDS,
        healthy_after: float = HEALTHY_AFTER_SECONDS,
        start_timeout: float = 30.0,
    ) -> None:
        self.server = server
        self.max_backoff = max_backoff
        self.first_backoff = first_backoff
        self.healthy_after = healthy_after
        self.start_timeout = start_timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._health = ArchiveHealth(ArchiveState.STOPPED, utcnow(), 0, None)
        self._thread: threading.Thread | None = None

    def health(self) -> ArchiveHealth:
        with self._lock:
            return self._health

    def start(self) -> OrthancConnection:
        """The first start, in the caller's thread: a platform whose Orthanc cannot start at all says so
        and stops, as before; only a child that was running is brought back."""
        connection = self.server.start(self.start_timeout)
        self._set(ArchiveState.RUNNING)
        self._thread = threading.Thread(target=self._watch, name="orthanc-supervisor", daemon=True)
        self._thread.start()
        return connection

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.start_timeout + 5)
        self.server.stop()
        self._set(ArchiveState.STOPPED)

    def __enter__(self) -> OrthancConnection:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _watch(self) -> None:
        deaths_in_a_row = 0
        up_since = time.monotonic()
        while not self._stop.wait(WATCH_SECONDS):
            process = self.server.process
            returncode = None if process is None else process.poll()
            if returncode is None:
                if time.monotonic() - up_since >= self.healthy_after:
                    deaths_in_a_row = 0
                continue
            deaths_in_a_row += 1
            delay = backoff(deaths_in_a_row, self.max_backoff, self.first_backoff)
            reason = exit_reason(returncode)
            log.error(
                "Orthanc %s; starting it again in %.1f s (death %d in a row; its log: %s)",
                reason,
                delay,
                deaths_in_a_row,
                self.server.layout.log_file,
            )
            self._set(ArchiveState.RESTARTING, last_exit=reason)
            if self._stop.wait(delay):
                return
            if self._restart():
                up_since = time.monotonic()

    def _restart(self) -> bool:
        try:
            self.server.start(self.start_timeout)
        except Exception as error:  # any failure to start is one more death, retried later
            # the class only: the launcher's message carries the tail of Orthanc's log
            log.error("Orthanc did not start again (%s)", error.__class__.__name__)
            return False
        with self._lock:
            restarts = self._health.restarts + 1
        self._set(ArchiveState.RUNNING, restarts=restarts)
        log.warning("Orthanc is running again (restart %d)", restarts)
        return True

    def _set(self, state: ArchiveState, *, restarts: int | None = None, last_exit: str | None = None) -> None:
        with self._lock:
            now = self._health
            self._health = ArchiveHealth(
                state,
                utcnow() if state != now.state else now.since,
                now.restarts if restarts is None else restarts,
                last_exit if last_exit is not None else now.last_exit,
            )
