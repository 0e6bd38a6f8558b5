"""The inference service's view of Orthanc: what it stores, and which errors are worth retrying."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.archive import ArchiveRefused, ArchiveUnavailable, InferenceArchive
from orthanc import OrthancConnection, OrthancServer
from orthanc.launcher import free_port
from tests.inference import studies


def test_objects_the_archive_refuses_are_refused_for_good_not_retryably(
    orthanc: OrthancConnection, shared_data: Path
) -> None:
    """Orthanc answers 400 to an object it cannot index: the same object would be refused on every retry."""
    broken = studies.renewed(studies.chest_xray(shared_data))
    del broken.StudyInstanceUID
    archive = InferenceArchive(orthanc)
    try:
        with pytest.raises(ArchiveRefused, match="STOW-RS answered 400"):
            archive.store([broken])
    finally:
        archive.close()


def test_an_archive_that_does_not_answer_is_worth_asking_again(tmp_path: Path, shared_data: Path) -> None:
    server = OrthancServer(tmp_path, http_port=free_port(), stable_age=60)
    connection = server.start()
    server.stop()
    archive = InferenceArchive(connection)
    try:
        with pytest.raises(ArchiveUnavailable) as unavailable:
            archive.store([studies.renewed(studies.chest_xray(shared_data))])
        assert not isinstance(unavailable.value, ArchiveRefused)
    finally:
        archive.close()
