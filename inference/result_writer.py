"""A result's portable DICOM record, its SEG and SR built and stored by STOW-RS, written in worker processes.

Building an SR or a SEG is pure Python (highdicom on pydicom): 0.14-0.16 s of CPU to build a 14-finding SR
and 0.035-0.045 s to encode it, all of it holding the GIL. Done in threads of the service's own process,
it starved the model, whose forward pass takes the GIL back between operations: on 2 cores DenseNet-121
took 590-608 ms an image in the pipeline against 102-110 ms alone. Worker processes have their own GIL;
the model shares only the cores with them (and leaves one to each busy writer: see
``service.model_threads``), and writers use whatever cores there are.

Workers import neither torch nor a model: what they get is the source's attributes (no pixels), the
findings already mapped onto the source's grid, and the UIDs to write.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.tag import Tag

from inference.archive import ArchiveUnavailable, InferenceArchive
from inference.dicom_results.algorithm import Algorithm
from inference.dicom_results.finding import FindingResult
from inference.dicom_results.seg import build_seg
from inference.dicom_results.sr import build_sr
from inference.dicom_results.uids import ResultUids
from orthanc import OrthancConnection

PIXEL_DATA = Tag("PixelData")
ORPHAN_CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class ResultToWrite:
    source: Dataset  # the image the model read, without its pixel data (not needed, and megabytes)
    findings: list[FindingResult]  # boxes and heatmaps on the source's pixel grid
    triage: str | None
    algorithm: Algorithm
    uids: ResultUids
    frame: int | None  # the DICOM Frame Number (from 1) read in a multi-frame source; None for one frame


@dataclass(frozen=True)
class Written:
    seg_stored: bool  # False when no finding had a heatmap, or a SEG cannot be placed on the source
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for the service's timings


class ResultNotBuildable(Exception):
    """The SR or SEG cannot be made from this result. Building is deterministic (same source, same findings,
    same UIDs), so a retry fails the same way: the job ends failed at once, with this reason, instead of
    spending its attempts and the reader's wait on it. Transient trouble (the archive, a writer process that
    died) stays ``ArchiveUnavailable``."""


def without_pixels(source: Dataset) -> Dataset:
    attributes = Dataset({element.tag: element for element in source if element.tag != PIXEL_DATA})
    attributes.file_meta = source.file_meta
    return attributes


class ResultWriters:
    """A pool of writer processes. ``write`` blocks until the result is stored; when a worker process dies,
    the pool is replaced and the call raises ``ArchiveUnavailable``, so the caller retries that job."""

    def __init__(self, connection: OrthancConnection, processes: int) -> None:
        self._connection = connection
        self._processes = processes
        self._lock = threading.Lock()
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the service's process runs threads (torch's, httpx's), which fork does not copy
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._connection, os.getpid()),
        )

    def wait_ready(self) -> None:
        """Block until the worker processes have started (a second or two: they import highdicom)."""
        for future in [self._pool.submit(_ready) for _ in range(self._processes)]:
            future.result()

    def write(self, result: ResultToWrite) -> Written:
        pool = self._pool
        try:
            return pool.submit(write, result).result()
        except BrokenProcessPool as error:
            with self._lock:
                if self._pool is pool:
                    self._pool = self._start()
            raise ArchiveUnavailable(f"a result writer process stopped ({error})") from error

    def close(self) -> None:
        self._pool.shutdown()


# ---- in a worker process --------------------------------------------------------------------------------

_worker: dict[str, InferenceArchive] = {}  # the process's own connection to Orthanc, made once


def _start_worker(connection: OrthancConnection, service_pid: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the service stops its writers itself, after
    # they have stored what they hold.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker["archive"] = InferenceArchive(connection)
    threading.Thread(target=_stop_when_orphaned, args=(service_pid,), daemon=True).start()


def _stop_when_orphaned(service_pid: int) -> None:
    """A service killed outright (SIGKILL, the OOM killer) cannot stop its writers, and a writer waiting for
    work never notices: it holds both ends of its own queue. So each one watches for its service to go."""
    while os.getppid() == service_pid:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os._exit(0)


def _ready() -> bool:
    return "archive" in _worker


def write(result: ResultToWrite) -> Written:
    """Build the SEG (when a finding has a heatmap) and the SR that references it, and store both."""
    seconds: dict[str, float] = {}
    seg, sr = _build(result, seconds)
    with _timed(seconds, "STOW-RS"):
        _worker["archive"].store([sr] if seg is None else [sr, seg])
    return Written(seg_stored=seg is not None, seconds=seconds)


def _build(result: ResultToWrite, seconds: dict[str, float]) -> tuple[Dataset | None, Dataset]:
    """The SEG (None when no finding has a heatmap) and the SR; any failure here will repeat."""
    stage = "SEG"
    try:
        with _timed(seconds, stage):
            seg = build_seg(
                result.source,
                result.findings,
                result.algorithm,
                sop_instance_uid=result.uids.seg,
                series_instance_uid=result.uids.seg_series,
                frame=result.frame,
            )
        stage = "SR"
        with _timed(seconds, stage):
            sr = build_sr(
                result.source,
                result.findings,
                result.triage,
                result.algorithm,
                sop_instance_uid=result.uids.sr,
                series_instance_uid=result.uids.sr_series,
                frame=result.frame,
                seg=seg,
            )
    except Exception as error:
        # the message only: the exception crosses back to the service pickled, and must stay picklable
        raise ResultNotBuildable(
            f"the {stage} could not be built: {error.__class__.__name__}: {error}"
        ) from error
    return seg, sr


@contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = time.perf_counter() - start
