"""Where the inference service spends its time, stage by stage: cheap enough to leave on, and what the
benchmark prints to say which stage to make faster."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimings:
    """Seconds per stage, summed over the threads that ran it, and how many images each covered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.images: dict[str, int] = defaultdict(int)

    @contextmanager
    def measure(self, stage: str, count: int = 1) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start, count)

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        """Time measured elsewhere (in a worker process, say)."""
        with self._lock:
            self.seconds[stage] += seconds
            self.images[stage] += count

    def milliseconds_per_image(self) -> dict[str, float]:
        with self._lock:
            return {stage: 1000 * self.seconds[stage] / self.images[stage] for stage in self.seconds}

    def reset(self) -> None:
        with self._lock:
            self.seconds.clear()
            self.images.clear()
