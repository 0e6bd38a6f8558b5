"""Anchors of the audit trail's head, kept outside the database.

A chain proves that no row was changed or removed from its middle; deleting its newest rows leaves a
shorter chain that still holds. So the head (the last row's id and hash) is written now and then to an
append-only file, one line per anchor: ``time row-id row-hash mac``. ``openaim audit verify`` then finds
a trail that ends before an anchored row, or whose anchored row differs. Each line carries an HMAC
(the chain's key), so a line edited to name an earlier row is found too; a line removed from the end is
not, which is why the file belongs on storage the database's owners cannot rewrite.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class Anchor:
    line: int  # in the file, from 1
    at: datetime
    row_id: int
    hash: str


@dataclass(frozen=True)
class AnchorLog:
    """The anchors read from a file, and its lines that are not anchors (altered, or not ours)."""

    path: Path
    anchors: list[Anchor]
    problems: list[str]


class AnchorFile:
    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self._key = key

    def append(self, row_id: int, row_hash: str, at: datetime | None = None) -> None:
        """One line, appended and flushed to disk before returning; the file is created owner-only."""
        stamp = (at or datetime.now(UTC)).isoformat(timespec="microseconds")
        line = f"{stamp} {row_id} {row_hash} {self._mac(stamp, row_id, row_hash)}\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, line.encode())  # one write of a short line: whole, even beside others
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def read(self) -> AnchorLog:
        """Every anchor of the file (none when there is no file yet)."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return AnchorLog(self.path, [], [])
        anchors: list[Anchor] = []
        problems: list[str] = []
        for number, line in enumerate(lines, start=1):
            anchor = self._parse(number, line)
            if anchor is None:
                problems.append(
                    f"anchor file {self.path} line {number}: altered, or not an anchor of this trail "
                    "(its MAC does not match)"
                )
            else:
                anchors.append(anchor)
        return AnchorLog(self.path, anchors, problems)

    def _parse(self, number: int, line: str) -> Anchor | None:
        parts = line.split(" ")
        if len(parts) != 4 or not parts[1].isdigit():
            return None
        stamp, row_id, row_hash, mac = parts
        if not hmac.compare_digest(self._mac(stamp, int(row_id), row_hash), mac):
            return None
        try:
            at = datetime.fromisoformat(stamp)
        except ValueError:
            return None
        return Anchor(number, at, int(row_id), row_hash)

    def _mac(self, stamp: str, row_id: int, row_hash: str) -> str:
        message = f"openaim audit anchor {stamp} {row_id} {row_hash}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()
