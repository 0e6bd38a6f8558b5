"""An algorithm's name for people when its equipment attributes hold a source repository's address.

Some writers put their Git URL where DICOM asks for a model name or a software version (e.g.
ManufacturerModelName "https://github.com/QIICR/dcmqi.git"): the reader sees the repository's name, and a
version when the address pins one (pip style, ``...repo.git@1.4``), with the address as a link. Only an
http(s) address ever becomes a link: a ``javascript:`` or ``file:`` one in a hostile object stays text.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# "scheme://..." or scp-like "git@host:owner/repo.git", with no space anywhere
_ADDRESS = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)\S+$", re.IGNORECASE)
_LINK_SCHEMES = frozenset({"http", "https"})


def is_address(text: str) -> bool:
    return bool(_ADDRESS.match(text))


def _path(address: str) -> str:
    """The repository path of an address: after the host, or after the ':' of an scp-like one."""
    if "://" in address:
        return urlsplit(address).path
    return address.split(":", 1)[1]


def _path_and_ref(address: str) -> tuple[str, str]:
    path = _path(address).rstrip("/")
    base, at, ref = path.rpartition("@")
    # "@" in the last segment pins a version; elsewhere (a user in the path) it does not
    if at and "/" not in ref and ref:
        return base, ref
    return path, ""


def repository_name(address: str) -> str:
    """ "https://github.com/QIICR/dcmqi.git" -> "dcmqi"; the whole address when it names no path."""
    path, _ = _path_and_ref(address)
    name = path.rsplit("/", 1)[-1].removesuffix(".git")
    return name or address


def pinned_version(address: str) -> str:
    """The version an address pins ("...dcmqi.git@v1.2.5" -> "v1.2.5"), else ""."""
    return _path_and_ref(address)[1]


def link(address: str) -> str | None:
    """The address if a browser may follow it: http(s) with a host, no quotes or controls; else None."""
    if not is_address(address) or any(ch in address for ch in "\"'<>\\") or not address.isprintable():
        return None
    ref = pinned_version(address)
    if ref and address.endswith(f"@{ref}"):
        address = address.removesuffix(f"@{ref}")  # the pin is pip's syntax, not part of the web address
    parts = urlsplit(address)
    return address if parts.scheme.lower() in _LINK_SCHEMES and parts.hostname else None
