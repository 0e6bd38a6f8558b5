"""An LRU of byte strings bounded by their total size: decoded frames and drawn thumbnails, which never
change for a given instance UID, are kept in memory within a budget instead of fetched and drawn again."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class BytesLRU(Generic[Key]):
    """The most recently used values whose sizes add up to at most ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._values: OrderedDict[Key, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Key) -> bool:
        return key in self._values

    def get(self, key: Key) -> bytes | None:
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
        return value

    def put(self, key: Key, value: bytes) -> None:
        """Keep the value, evicting the least recently used until the total fits; a value larger than the
        whole budget is not kept (and evicts nothing)."""
        if len(value) > self.max_bytes:
            return
        previous = self._values.pop(key, None)
        if previous is not None:
            self.nbytes -= len(previous)
        self._values[key] = value
        self.nbytes += len(value)
        while self.nbytes > self.max_bytes:
            _, evicted = self._values.popitem(last=False)
            self.nbytes -= len(evicted)
