"""Anchoring the audit trail's head while the platform runs: when a process starts, every
``audit_anchor_seconds`` (or ``audit_anchor_rows`` rows) while the head moves, and when it stops.

Each process that appends anchors what it sees: the viewer (with the inference it runs), ``openaim
inference`` alone, and the commands that change something. The head is also logged, so that a log shipped
elsewhere holds it too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from openaim import audit
from openaim.audit_anchors import AnchorFile
from openaim.settings import Settings

log = logging.getLogger("openaim.audit")


def anchor_file(settings: Settings) -> AnchorFile:
    return AnchorFile(settings.resolved_audit_anchor_file, settings.resolved_audit_key)


class Anchorer:
    """Anchors the head when it has moved enough since this anchorer's last anchor."""

    def __init__(
        self, factory: sessionmaker[Session], file: AnchorFile, every_seconds: float, every_rows: int
    ) -> None:
        self._factory = factory
        self._file = file
        self._every_seconds = every_seconds
        self._every_rows = every_rows
        self._last: tuple[int, str] | None = None
        self._last_at = time.monotonic()
        self._lock = threading.Lock()

    def anchor(self) -> tuple[int, str] | None:
        """Anchor the head now if it moved since the last anchor; returns what was anchored."""
        return self._anchor_if(lambda _head: True)

    def tick(self) -> tuple[int, str] | None:
        """Anchor the head if it moved by ``every_rows`` rows, or at all ``every_seconds`` after the
        last anchor; the first head seen at once (a new trail is not left unanchored for a while)."""

        def due(head: tuple[int, str]) -> bool:
            if self._last is None:
                return True
            behind = head[0] - self._last[0]
            return behind >= self._every_rows or time.monotonic() - self._last_at >= self._every_seconds

        return self._anchor_if(due)

    def _anchor_if(self, due: Callable[[tuple[int, str]], bool]) -> tuple[int, str] | None:
        with self._lock, self._factory() as db:
            head = audit.head(db)
            if head is None or head == self._last or not due(head):
                return None
            self._file.append(*head)
            self._last, self._last_at = head, time.monotonic()
        log.info("audit trail anchored at row %d, hash %s", *head)
        return head

    def run(self, stop: threading.Event) -> None:
        """Anchor at once, then whenever due until ``stop``, then once more."""
        poll = min(1.0, self._every_seconds)
        self._safely(self.anchor)
        while not stop.wait(poll):
            self._safely(self.tick)
        self._safely(self.anchor)

    @staticmethod
    def _safely(step: Callable[[], object]) -> None:
        try:
            step()
        except Exception:  # the database away for a moment: the next tick tries again
            log.exception("could not anchor the audit trail's head")


def anchorer(settings: Settings, factory: sessionmaker[Session]) -> Anchorer:
    return Anchorer(factory, anchor_file(settings), settings.audit_anchor_seconds, settings.audit_anchor_rows)


@contextmanager
def in_background(settings: Settings, factory: sessionmaker[Session]) -> Iterator[Anchorer]:
    """An anchorer in a background thread for as long as the block runs; the head is anchored on exit."""
    worker = anchorer(settings, factory)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="audit-anchors", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=30)


def anchor_now(settings: Settings, factory: sessionmaker[Session]) -> None:
    """For a command that appended and ends: anchor the head before it does."""
    anchorer(settings, factory).anchor()
