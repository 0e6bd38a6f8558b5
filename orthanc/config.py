"""Orthanc's configuration: loopback only, authentication on, DICOMweb and GDCM, storage in the data dir."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openaim.private_files import private_file, private_folder

PLUGINS = ("libOrthancDicomWeb.so", "libOrthancGdcm.so")
ORTHANC_USER = "openaim"


@dataclass(frozen=True)
class OrthancLayout:
    """Where one Orthanc instance keeps its files under the platform's data directory."""

    root: Path

    @property
    def config_file(self) -> Path:
        return self.root / "orthanc.json"

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    @property
    def storage_dir(self) -> Path:
        return self.root / "storage"

    @property
    def log_file(self) -> Path:
        return self.root / "orthanc.log"


def load_or_create_credentials(layout: OrthancLayout) -> tuple[str, str]:
    """The platform's Orthanc account, generated once and kept (mode 0600) beside the storage."""
    path = layout.credentials_file
    if path.exists():
        stored = json.loads(private_file(path).read_text())
        return stored["username"], stored["password"]
    private_folder(path.parent)
    username, password = ORTHANC_USER, secrets.token_urlsafe(24)
    private_file(path).write_text(json.dumps({"username": username, "password": password}))
    return username, password


# JPEG 2000 (lossless, lossy, Part 2 multi-component lossless and lossy) and HTJ2K
GDCM_TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
)


def orthanc_config(
    layout: OrthancLayout,
    *,
    http_port: int,
    credentials: tuple[str, str],
    stable_age: int,
    plugins_dir: Path,
    extra_plugins: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``extra_plugins`` are loaded beside ``PLUGINS`` (a benchmark's peer viewer); the platform adds none."""
    username, password = credentials
    return {
        "Name": "openaim",
        "StorageDirectory": str(layout.storage_dir),
        "IndexDirectory": str(layout.storage_dir),
        "HttpPort": http_port,
        # Orthanc 1.10 listens on every address and has no bind setting: it refuses remote hosts, which
        # still reach its port (README: a firewall line). Orthanc from September 2025 on (mainline
        # changeset 6307) reads HttpBindAddresses and listens on loopback only; older ones ignore it.
        "RemoteAccessAllowed": False,
        "HttpBindAddresses": ["127.0.0.1"],
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        # Studies arrive through the platform (STOW-RS); no DICOM listener on every interface.
        "DicomServerEnabled": False,
        "StableAge": stable_age,
        "HttpDescribeErrors": True,
        # Orthanc is reached over loopback only: gzip there costs ~25 ms of CPU per 512 KB frame for no
        # gain (bench/bench_viewer.py measured direct WADO-RS frames at 36/s with it, 250+/s without).
        "HttpCompressionEnabled": False,
        "SaveJobs": False,
        "Plugins": [str(plugins_dir / name) for name in (*PLUGINS, *extra_plugins)],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "Ssl": False,
            # Written into BulkDataURIs: the address the platform (Orthanc's only client) uses.
            "Host": f"127.0.0.1:{http_port}",
            "StudiesMetadata": "MainDicomTags",
            "SeriesMetadata": "Full",
        },
        # GDCM only for JPEG 2000 (which DCMTK, Orthanc's own codec library, cannot read): transcoding a
        # big-endian MR through GDCM crashed Orthanc in a full test run (viewer/reading/frames.py never asks
        # it to).
        "Gdcm": {"Enable": True, "RestrictTransferSyntaxes": list(GDCM_TRANSFER_SYNTAXES)},
    }


def write_config(layout: OrthancLayout, config: dict[str, Any]) -> Path:
    private_folder(layout.root)
    private_folder(layout.storage_dir)  # what Orthanc writes inside follows its umask (launcher.py)
    private_file(layout.config_file).write_text(json.dumps(config, indent=2))
    return layout.config_file
