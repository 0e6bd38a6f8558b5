"""The launcher starts a real Orthanc that is locked down, and says clearly when Orthanc is missing."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import httpx
import pytest

from orthanc import OrthancConnection, OrthancNotInstalledError, OrthancServer
from orthanc.launcher import free_port
from tests.inference.studies import chest_xray, store


def test_orthanc_refuses_requests_without_credentials(orthanc: OrthancConnection) -> None:
    response = httpx.get(f"{orthanc.url}/system")
    assert response.status_code == 401


def test_orthanc_answers_the_platform_with_dicomweb_and_gdcm(orthanc: OrthancConnection) -> None:
    with orthanc.client() as client:
        plugins = client.get("/plugins").json()
        assert {"dicom-web", "gdcm"} <= set(plugins)
        assert client.get("/dicom-web/studies").status_code == 200


def test_answers_are_not_gzipped_on_loopback(orthanc: OrthancConnection) -> None:
    """Compressing every frame cost Orthanc more CPU than loopback bandwidth ever would."""
    with orthanc.client() as client:
        response = client.get("/dicom-web/studies", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert "content-encoding" not in response.headers


def test_configuration_is_loopback_only_with_generated_credentials(
    orthanc_server: OrthancServer,
) -> None:
    config = json.loads(orthanc_server.layout.config_file.read_text())
    assert config["RemoteAccessAllowed"] is False
    assert config["AuthenticationEnabled"] is True
    assert config["DicomServerEnabled"] is False
    assert config["StableAge"] == 2
    assert config["StorageDirectory"].startswith(str(orthanc_server.layout.root))
    username = orthanc_server.connection.username
    assert config["RegisteredUsers"] == {username: orthanc_server.connection.password}
    assert len(orthanc_server.connection.password) >= 24
    assert orthanc_server.layout.credentials_file.stat().st_mode & 0o077 == 0


def test_credentials_are_kept_across_restarts(tmp_path: Path) -> None:
    first = OrthancServer(tmp_path, http_port=free_port(), stable_age=1)
    second = OrthancServer(tmp_path, http_port=free_port(), stable_age=1)
    assert first.connection.password == second.connection.password


def test_stop_leaves_no_orthanc_running(tmp_path: Path) -> None:
    server = OrthancServer(tmp_path, http_port=free_port(), stable_age=1)
    with server:
        assert server.process is not None and server.process.poll() is None
    assert server.process.poll() is not None


def test_missing_orthanc_says_how_to_install_it(tmp_path: Path) -> None:
    server = OrthancServer(tmp_path, http_port=free_port(), stable_age=1, executable="no-such-orthanc")
    with pytest.raises(OrthancNotInstalledError, match="apt-get install"):
        server.start()


def test_orthanc_keeps_its_images_index_and_log_owner_only(tmp_path: Path, shared_data: Path) -> None:
    """Orthanc writes its storage under the umask the launcher gives it, whatever the platform's own."""
    previous = os.umask(0o022)
    try:
        server = OrthancServer(tmp_path / "orthanc", http_port=free_port(), stable_age=1)
        with server as connection:
            store(connection, chest_xray(shared_data))
    finally:
        os.umask(previous)
    paths = [server.layout.root, *server.layout.root.rglob("*")]
    images = [path for path in paths if path.is_file() and path.parent != server.layout.storage_dir]
    assert images, "Orthanc stored no file under its storage folder"
    modes = {str(path.relative_to(tmp_path)): stat.S_IMODE(path.stat().st_mode) for path in paths}
    expected = {name: 0o700 if (tmp_path / name).is_dir() else 0o600 for name in modes}
    assert modes == expected


def _own_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.1", 9))  # TEST-NET-3
        except OSError:
            pytest.skip("this machine has no address but loopback: nothing remote to refuse")
        return str(probe.getsockname()[0])


def test_orthanc_refuses_the_right_credentials_from_another_address(orthanc_server: OrthancServer) -> None:
    """Orthanc 1.10 listens on every address (HttpBindAddresses, which newer ones read, it ignores):
    RemoteAccessAllowed false is what turns away a host other than this one, credentials or not."""
    config = json.loads(orthanc_server.layout.config_file.read_text())
    assert config["HttpBindAddresses"] == ["127.0.0.1"]
    connection = orthanc_server.connection
    url = f"http://{_own_address()}:{orthanc_server.http_port}/system"
    response = httpx.get(url, auth=(connection.username, connection.password))
    assert response.status_code == 401
    assert httpx.get(f"{connection.url}/system", auth=(connection.username, connection.password)).is_success
