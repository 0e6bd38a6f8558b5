"""``openaim models ...``: the catalog from the command line, audited under the operating-system user."""

from __future__ import annotations

import getpass
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from openaim.audit import AuditEvent, EventType
from openaim.cli import app as cli
from openaim.db import make_engine, session_factory
from tests.inference.tiny_model import MODULE, write_tiny_package

MODEL = "openaim.tiny-cxr"

Run = Callable[..., Result]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OPENAIM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OPENAIM_MODEL_MODULES", json.dumps([MODULE]))
    monkeypatch.delenv("OPENAIM_DATABASE_URL", raising=False)
    return tmp_path / "data"


@pytest.fixture
def openaim(data_dir: Path) -> Run:
    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["models", *args])

    return run


def _audit_rows(data_dir: Path) -> list[tuple[str | None, dict[str, object]]]:
    engine = make_engine(f"sqlite:///{data_dir / 'openaim.db'}")
    try:
        with session_factory(engine)() as db:
            events = db.scalars(
                select(AuditEvent).where(AuditEvent.event_type == EventType.AI_MODEL_CHANGED.value)
            ).all()
            return [(event.username, json.loads(event.detail)) for event in events]
    finally:
        engine.dispose()


def test_install_then_list_shows_a_table_of_versions(openaim: Run, data_dir: Path, tmp_path: Path) -> None:
    assert "No model installed" in openaim("list").output
    package = write_tiny_package(tmp_path / "package")
    installed = openaim("install", str(package))
    assert installed.exit_code == 0, installed.output
    assert (
        f"Installed {MODEL} 1.0.0 (Tiny chest X-ray classifier, openaim tests), mode off." in installed.output
    )
    assert (data_dir / "models" / MODEL / "1.0.0" / "weights.pt").is_file()

    listed = openaim("list")
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split() == [
        "id", "version", "name", "vendor", "mode", "regulatory", "status", "installed", "at", "device", "UID"
    ]  # fmt: skip
    assert row.startswith(f"{MODEL}  1.0.0    Tiny chest X-ray classifier  openaim tests  off ")
    assert row.endswith("1.2.826.0.1.3680043.10.1234.1.0") and "research_use_only" in row
    assert header.index("device UID") == row.index("1.2.826.0.1.3680043.10.1234.1.0")  # columns line up
    assert _audit_rows(data_dir) == [
        (
            f"cli:{getpass.getuser()}",
            {
                "change": "install",
                "model_id": MODEL,
                "version": "1.0.0",
                "from_mode": None,
                "to_mode": "off",
                "weights_sha256": hashlib.sha256((package / "weights.pt").read_bytes()).hexdigest(),
            },
        )
    ]


def test_a_bad_package_exits_1_listing_every_problem(openaim: Run, data_dir: Path, tmp_path: Path) -> None:
    bad_manifest = write_tiny_package(tmp_path / "bad-manifest", vendor="x" * 201, training_data="")
    result = openaim("install", str(bad_manifest))
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: model package refused:",
        "  - vendor: String should have at most 200 characters",
        "  - training_data: String should have at least 1 character",
    ]

    assert openaim("install", str(write_tiny_package(tmp_path / "good"))).exit_code == 0
    tampered = write_tiny_package(tmp_path / "tampered")  # the same id, version and device UID
    (tampered / "weights.pt").write_bytes(b"not the weights the manifest names")
    result = openaim("install", str(tampered))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "error: model package refused:" and len(lines) == 4
    assert lines[1] == f"  - {MODEL} 1.0.0: this version is already installed"
    assert lines[2].startswith("  - device_uid: 1.2.826.0.1.3680043.10.1234.1.0 is already used by")
    assert lines[3].startswith("  - weights_sha256: 'weights.pt' has sha256 ")
    assert len(_audit_rows(data_dir)) == 1  # the good install only


def test_modes_from_the_command_line(openaim: Run, data_dir: Path, tmp_path: Path) -> None:
    for seed, version in enumerate(("1.0.0", "1.1.0"), start=1):
        package = write_tiny_package(
            tmp_path / version, seed=seed, version=version, device_uid=f"1.2.826.0.1.3680043.10.1234.{seed}.7"
        )
        assert openaim("install", str(package)).exit_code == 0

    assert openaim("enable", MODEL, "1.0.0").output == f"{MODEL} 1.0.0: off -> shadow\n"
    assert openaim("enable", MODEL, "1.0.0").output == "Nothing to change: it is already so.\n"
    assert openaim("mode", MODEL, "1.0.0", "clinical").output == f"{MODEL} 1.0.0: shadow -> clinical\n"
    promoted = openaim("mode", MODEL, "1.1.0", "clinical")
    assert promoted.output.splitlines() == [
        f"Demoted {MODEL} 1.0.0 from clinical to shadow: another version became clinical",
        f"{MODEL} 1.1.0: off -> clinical",
    ]
    assert openaim("disable", MODEL, "1.0.0").output == f"{MODEL} 1.0.0: shadow -> off\n"
    assert openaim("retire", MODEL, "1.1.0").output == f"Retired {MODEL} 1.1.0 (was clinical)\n"

    refused = openaim("enable", MODEL, "1.1.0")
    assert refused.exit_code == 1 and f"error: {MODEL} 1.1.0 is retired" in refused.output
    unknown = openaim("disable", MODEL, "9.0.0")
    assert unknown.exit_code == 1 and f"error: {MODEL} 9.0.0 is not installed" in unknown.output
    assert openaim("mode", MODEL, "1.0.0", "on").exit_code == 2

    listed = openaim("list").output
    assert " off (retired " in listed.splitlines()[2]
    changes = [
        (detail["change"], detail["version"], detail["to_mode"]) for _, detail in _audit_rows(data_dir)
    ]
    assert changes[2:] == [
        ("mode", "1.0.0", "shadow"),
        ("mode", "1.0.0", "clinical"),
        ("demote", "1.0.0", "shadow"),
        ("mode", "1.1.0", "clinical"),
        ("mode", "1.0.0", "off"),
        ("retire", "1.1.0", "off"),
    ]
