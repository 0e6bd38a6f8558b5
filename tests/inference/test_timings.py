"""Stage timings add up per stage and per image, across threads."""

from __future__ import annotations

import threading
import time

import pytest

from inference.timings import StageTimings


def test_time_is_summed_per_stage_and_divided_by_the_images_it_covered() -> None:
    timings = StageTimings()
    with timings.measure("model", count=4):
        time.sleep(0.04)
    threads = [threading.Thread(target=lambda: _sleep_in(timings, "fetch")) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    per_image = timings.milliseconds_per_image()
    assert per_image["model"] == pytest.approx(10, abs=5)
    assert per_image["fetch"] == pytest.approx(20, abs=8)
    timings.reset()
    assert timings.milliseconds_per_image() == {}


def _sleep_in(timings: StageTimings, stage: str) -> None:
    with timings.measure(stage):
        time.sleep(0.02)
