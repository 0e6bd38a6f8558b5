"""The REST adapter against a real Orthanc: every call the platform makes, and errors in the three kinds
that callers map (a 404 is final; a refusal or no answer is worth asking again)."""

from __future__ import annotations

import io
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from orthanc.rest import OrthancNotFound, OrthancRefused, OrthancRest, OrthancUnreachable


@dataclass(frozen=True)
class StoredStudy:
    """One study of one series with two instances, stored for this module, and the feed before it."""

    study_uid: str
    series_uid: str
    files: dict[str, bytes]  # SOP Instance UID -> Part 10 bytes
    seq_before: int


def _instance(study_uid: str, series_uid: str, number: int) -> tuple[str, bytes]:
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.Modality, ds.InstanceNumber = "REST-TEST", "OT", number
    ds.Rows = ds.Columns = 2
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(4)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return uid, buffer.getvalue()


def _all_changes(rest: OrthancRest, since: int) -> tuple[list[tuple[str, str]], int]:
    seen: list[tuple[str, str]] = []
    while True:
        changes, since, done = rest.changes(since, 500)
        seen += [(change.change_type, change.resource_id) for change in changes]
        if done:
            return seen, since


@pytest.fixture(scope="module")
def rest(orthanc: OrthancConnection) -> Iterator[OrthancRest]:
    with OrthancRest(orthanc) as rest:
        yield rest


@pytest.fixture(scope="module")
def stored(rest: OrthancRest) -> StoredStudy:
    _, seq_before = _all_changes(rest, 0)
    study_uid, series_uid = generate_uid(), generate_uid()
    files = dict(_instance(study_uid, series_uid, number) for number in (2, 1))
    for data in files.values():
        upload = rest.upload(data)
        assert (upload.status_code, upload.json()["Status"]) == (200, "Success")
    return StoredStudy(study_uid, series_uid, files, seq_before)


def _instance_id(rest: OrthancRest, sop_instance_uid: str) -> str:
    [found] = rest.lookup(sop_instance_uid, "Instance")
    return found


def test_an_upload_again_is_already_stored(rest: OrthancRest, stored: StoredStudy) -> None:
    again = rest.upload(next(iter(stored.files.values())))
    assert (again.status_code, again.json()["Status"]) == (200, "AlreadyStored")


def test_a_refused_upload_is_an_answer_with_orthancs_reason(rest: OrthancRest) -> None:
    refused = rest.upload(b"not DICOM at all " * 20)
    assert refused.status_code == 400
    assert refused.json()["Message"]


def test_a_uid_is_looked_up_at_its_level_only(rest: OrthancRest, stored: StoredStudy) -> None:
    [study_id] = rest.lookup(stored.study_uid, "Study")
    assert rest.lookup(stored.study_uid, "Series") == []
    assert rest.lookup(generate_uid(), "Study") == []
    assert rest.study(study_id)["MainDicomTags"]["StudyInstanceUID"] == stored.study_uid


def test_the_listings_are_expanded_with_main_dicom_tags(rest: OrthancRest, stored: StoredStudy) -> None:
    [study_id] = rest.lookup(stored.study_uid, "Study")
    [series] = rest.study_series(study_id)
    assert series["MainDicomTags"]["SeriesInstanceUID"] == stored.series_uid

    in_series = rest.series_instances(series["ID"])
    in_study = rest.study_instances(study_id)
    assert {item["MainDicomTags"]["SOPInstanceUID"] for item in in_series} == set(stored.files)
    assert {item["ID"] for item in in_study} == {item["ID"] for item in in_series}
    assert {item["ParentSeries"] for item in in_study} == {series["ID"]}
    assert sorted(item["MainDicomTags"]["InstanceNumber"] for item in in_series) == ["1", "2"]


def test_an_instance_gives_its_tags_file_and_metadata(rest: OrthancRest, stored: StoredStudy) -> None:
    uid, data = next(iter(stored.files.items()))
    instance_id = _instance_id(rest, uid)
    tags = rest.simplified_tags(instance_id)
    assert (tags["SOPInstanceUID"], tags["Modality"]) == (uid, "OT")
    assert rest.instance_file(instance_id) == data
    assert rest.instance_metadata(instance_id, "TransferSyntax") == ExplicitVRLittleEndian
    assert rest.instance_metadata(instance_id, "ModifiedFrom") is None  # never modified


def test_find_matches_a_list_of_sop_instance_uids(rest: OrthancRest, stored: StoredStudy) -> None:
    wanted = [*stored.files, generate_uid()]
    found = rest.find_instances({"SOPInstanceUID": "\\".join(wanted)})
    assert {item["MainDicomTags"]["SOPInstanceUID"] for item in found} == set(stored.files)


def test_the_change_feed_announces_the_new_instances(rest: OrthancRest, stored: StoredStudy) -> None:
    ids = {_instance_id(rest, uid) for uid in stored.files}
    seen, last = _all_changes(rest, stored.seq_before)
    assert {resource for kind, resource in seen if kind == "NewInstance"} >= ids
    assert rest.changes(last, 10) == ([], last, True)

    first, seq, done = rest.changes(stored.seq_before, 1)
    assert (len(first), done) == (1, False)
    assert seq == first[0].sequence_id > stored.seq_before


def test_a_missing_resource_is_not_found(rest: OrthancRest) -> None:
    with pytest.raises(OrthancNotFound, match="404 to GET studies") as raised:
        rest.study("0" * 8)
    assert isinstance(raised.value, OrthancRefused)
    with pytest.raises(OrthancNotFound):
        rest.instance_file("0" * 8)


def test_wrong_credentials_are_a_refusal_not_a_missing_resource(orthanc: OrthancConnection) -> None:
    with OrthancRest(OrthancConnection(orthanc.url, orthanc.username, "wrong")) as rest:
        assert not rest.is_alive()
        with pytest.raises(OrthancRefused, match="401") as raised:
            rest.changes(0, 1)
    assert not isinstance(raised.value, OrthancNotFound)


def test_a_stopped_orthanc_is_unreachable_at_once(rest: OrthancRest) -> None:
    """No retries inside the adapter: the library's default held each call 1.2 s."""
    assert rest.is_alive()
    nobody = OrthancConnection(f"http://127.0.0.1:{free_port()}", "user", "password")
    with OrthancRest(nobody) as down:
        started = time.monotonic()
        assert not down.is_alive()
        with pytest.raises(OrthancUnreachable, match=r"Orthanc is unreachable \(ConnectionError\)"):
            down.changes(0, 1)
        assert time.monotonic() - started < 0.5


def test_an_orthanc_that_hangs_times_out(tmp_path: Path) -> None:
    server = OrthancServer(tmp_path, http_port=free_port(), stable_age=1)
    with server as connection, OrthancRest(connection, timeout=0.3) as rest:
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(OrthancUnreachable, match="ReadTimeout"):
                rest.study("0" * 8)
        finally:
            server.process.send_signal(signal.SIGCONT)
        with pytest.raises(OrthancNotFound):  # and answers again once it is back
            rest.study("0" * 8)


def test_an_answer_cut_off_midway_is_no_answer() -> None:
    """Not Orthanc: a peer that hangs up mid-body, which the library would hand back as None."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=_answer_half, args=(listener,), daemon=True).start()
        port = listener.getsockname()[1]
        peer = OrthancConnection(f"http://127.0.0.1:{port}", "user", "password")
        with OrthancRest(peer) as rest, pytest.raises(OrthancUnreachable, match="ChunkedEncodingError"):
            rest.study("0" * 8)


def _answer_half(listener: socket.socket) -> None:
    peer, _ = listener.accept()
    with peer:
        peer.recv(65536)
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
