"""Results are written by worker processes: the SR and SEG reach Orthanc as built from the findings, and a
worker that dies costs that one write (a retryable error), never the writers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset

from inference.archive import ArchiveUnavailable
from inference.dicom_results import Algorithm
from inference.dicom_results.uids import ResultUids
from inference.manifest import Manifest
from inference.result_writer import (
    ORPHAN_CHECK_SECONDS,
    ResultNotBuildable,
    ResultToWrite,
    ResultWriters,
    without_pixels,
)
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from tests.inference import studies
from tests.inference.conftest import example_manifest
from tests.inference.dicom_results.conftest import example_findings


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancConnection]:
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), http_port=free_port(), stable_age=60)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def writers(orthanc: OrthancConnection) -> Iterator[ResultWriters]:
    pool = ResultWriters(orthanc, processes=1)
    pool.wait_ready()
    try:
        yield pool
    finally:
        pool.close()


def result_for(source: Dataset) -> ResultToWrite:
    uids = ResultUids.of(str(source.SeriesInstanceUID), "1.2.826.0.1.3680043.10.1234.9")
    algorithm = Algorithm.of(Manifest.model_validate(example_manifest()))
    return ResultToWrite(without_pixels(source), example_findings(source), "urgent", algorithm, uids, None)


def stored(orthanc: OrthancConnection, sop_instance_uid: str) -> Dataset:
    with orthanc.client() as client:
        [match] = client.post("/tools/lookup", content=sop_instance_uid).json()
        response = client.get(f"/instances/{match['ID']}/file")
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(response.content))


def test_the_source_travels_without_its_pixels(shared_data: Path) -> None:
    source = studies.chest_xray(shared_data)
    attributes = without_pixels(source)
    assert "PixelData" in source and "PixelData" not in attributes
    assert attributes.SOPInstanceUID == source.SOPInstanceUID
    assert attributes.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID


def test_a_worker_stores_the_sr_and_the_seg_of_a_result(
    writers: ResultWriters, orthanc: OrthancConnection, shared_data: Path
) -> None:
    source = studies.renewed(studies.chest_xray(shared_data))
    result = result_for(source)

    written = writers.write(result)

    assert written.seg_stored
    assert set(written.seconds) == {"SEG", "SR", "STOW-RS"}
    seg = hd.seg.Segmentation.from_dataset(stored(orthanc, result.uids.seg))
    assert [segment.TrackingID for segment in seg.SegmentSequence] == ["Effusion", "Pneumothorax"]
    sr = hd.sr.Comprehensive3DSR.from_dataset(stored(orthanc, result.uids.sr))
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID == result.uids.sr_series


# A well-formed UID that names no SOP class highdicom knows: building its SR fails the same way every time
UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.10.1234.99.1"


def test_a_result_that_cannot_be_built_is_refused_for_good_not_retryably(
    writers: ResultWriters, shared_data: Path
) -> None:
    source = studies.renewed(studies.chest_xray(shared_data))
    source.SOPClassUID = source.file_meta.MediaStorageSOPClassUID = UNKNOWN_SOP_CLASS

    with pytest.raises(ResultNotBuildable, match=r"could not be built: KeyError") as refused:
        writers.write(result_for(source))
    assert not isinstance(refused.value, ArchiveUnavailable)  # the service must not retry it


@contextmanager
def one_writer(orthanc: OrthancConnection) -> Iterator[tuple[ResultWriters, multiprocessing.Process]]:
    """A pool of one started writer process, and that process."""
    others = set(multiprocessing.active_children())
    writers = ResultWriters(orthanc, processes=1)
    try:
        writers.wait_ready()
        [worker] = set(multiprocessing.active_children()) - others
        yield writers, worker
    finally:
        writers.close()


def signal_worker(worker: multiprocessing.Process, number: int) -> None:
    os.kill(worker.pid, number)  # type: ignore[arg-type]  # a started process has a pid


def test_a_worker_that_dies_fails_one_write_retryably_and_is_replaced(
    orthanc: OrthancConnection, shared_data: Path
) -> None:
    source = studies.renewed(studies.chest_xray(shared_data))
    with one_writer(orthanc) as (writers, worker):
        signal_worker(worker, signal.SIGKILL)
        worker.join(timeout=10)
        with pytest.raises(ArchiveUnavailable, match="writer process stopped"):
            writers.write(result_for(source))
        written = writers.write(result_for(source))  # the job's retry

    assert written.seg_stored
    assert stored(orthanc, result_for(source).uids.sr).StudyInstanceUID == source.StudyInstanceUID


def test_ctrl_c_in_the_terminal_leaves_the_writers_to_their_service(
    orthanc: OrthancConnection, shared_data: Path
) -> None:
    with one_writer(orthanc) as (writers, worker):
        signal_worker(worker, signal.SIGINT)
        written = writers.write(result_for(studies.renewed(studies.chest_xray(shared_data))))
    assert written.seg_stored


OWNER = """
import multiprocessing, pathlib, sys, time
from orthanc import OrthancConnection
from inference.result_writer import ResultWriters
if __name__ == "__main__":
    writers = ResultWriters(OrthancConnection(*sys.argv[2:5]), processes=2)
    writers.wait_ready()
    pids = " ".join(str(child.pid) for child in multiprocessing.active_children())
    pathlib.Path(sys.argv[1]).write_text(pids)
    time.sleep(120)
"""


def test_writers_stop_by_themselves_when_their_service_is_killed(
    orthanc: OrthancConnection, tmp_path: Path
) -> None:
    script, pids, log = tmp_path / "owner.py", tmp_path / "pids", tmp_path / "owner.log"
    script.write_text(OWNER)
    owner = subprocess.Popen(
        [sys.executable, str(script), str(pids), orthanc.url, orthanc.username, orthanc.password],
        cwd=Path(__file__).parents[2],
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parents[2])},
        stdin=subprocess.DEVNULL,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        started = _within(60, lambda: pids.exists() and bool(pids.read_text()))
        assert started, f"the writers did not start:\n{log.read_text()}"
        workers = [int(pid) for pid in pids.read_text().split()]
        assert len(workers) == 2 and all(_running(pid) for pid in workers)
    finally:
        owner.kill()  # SIGKILL: no atexit, no pool shutdown
        owner.wait()

    assert _within(10 * ORPHAN_CHECK_SECONDS, lambda: not any(_running(pid) for pid in workers))


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _running(pid: int) -> bool:
    """Neither gone nor a zombie (this machine's init may be slow to reap an orphan's exit)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
