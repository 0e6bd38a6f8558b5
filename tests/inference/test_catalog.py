"""The model catalog: verified installs, one clinical version per model, retirement, and an audit row for
every change, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from inference import catalog
from inference.catalog import CatalogError, Mode, ModelVersion, catalog_transaction
from inference.manifest import PackageError
from openaim import audit
from openaim.audit import AuditEvent, EventType
from tests.inference.tiny_model import MODULE, write_tiny_package

ADMIN = "cli:tester"
MODEL = "openaim.tiny-cxr"


@pytest.fixture
def packages(tmp_path: Path) -> Path:
    return tmp_path / "data" / "models"


def _install(factory: sessionmaker[Session], source: Path, packages: Path) -> ModelVersion:
    with catalog_transaction(factory) as db:
        return catalog.install(db, source, packages, ADMIN, allowed_modules=(MODULE,))


def _version(tmp_path: Path, version: str, seed: int = 0) -> Path:
    return write_tiny_package(
        tmp_path / f"src-{version}",
        seed=seed,
        version=version,
        device_uid=f"1.2.826.0.1.3680043.10.1234.{seed}.9",
    )


def _model_events(factory: sessionmaker[Session]) -> list[dict[str, object]]:
    with factory() as db:
        events = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.event_type == EventType.AI_MODEL_CHANGED.value)
            .order_by(AuditEvent.id)
        ).all()
        return [
            json.loads(event.detail) | {"username": event.username, "uid": event.object_uid}
            for event in events
        ]


def _leftovers(packages: Path) -> list[str]:
    return (
        sorted(str(path.relative_to(packages)) for path in packages.rglob("*")) if packages.exists() else []
    )


def test_install_copies_the_verified_package_and_starts_it_off(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    source = write_tiny_package(tmp_path / "source")
    installed = _install(factory, source, packages)

    target = packages / MODEL / "1.0.0"
    assert installed.mode == Mode.OFF and installed.retired_at is None
    assert Path(installed.package_path) == target
    assert (target / "manifest.json").read_bytes() == (source / "manifest.json").read_bytes()
    assert (target / "weights.pt").read_bytes() == (source / "weights.pt").read_bytes()
    assert _leftovers(packages) == [
        MODEL,
        f"{MODEL}/1.0.0",
        f"{MODEL}/1.0.0/manifest.json",
        f"{MODEL}/1.0.0/weights.pt",
    ]
    with factory() as db:
        row = catalog.get_version(db, MODEL, "1.0.0")
        assert row is not None and row.installed_by == ADMIN and row.vendor == "openaim tests"
        manifest = catalog.manifest_of(row)
        assert manifest.device_uid == row.device_uid and manifest.weights_sha256 == row.weights_sha256
        assert [output.label for output in manifest.outputs] == ["Effusion", "Pneumothorax"]
        assert catalog.enabled_versions(db) == []
    assert _model_events(factory) == [
        {
            "change": "install",
            "model_id": MODEL,
            "version": "1.0.0",
            "from_mode": None,
            "to_mode": "off",
            "weights_sha256": installed.weights_sha256,
            "username": ADMIN,
            "uid": installed.device_uid,
        }
    ]


def test_install_from_a_zip_with_a_top_folder(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    source = write_tiny_package(tmp_path / "tiny")
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zip_file:
        for file in source.iterdir():
            zip_file.write(file, f"tiny/{file.name}")
    installed = _install(factory, archive, packages)
    assert (Path(installed.package_path) / "weights.pt").is_file()
    assert _leftovers(packages)[:2] == [MODEL, f"{MODEL}/1.0.0"]


def test_a_second_install_of_the_same_version_is_refused_and_changes_nothing(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    _install(factory, write_tiny_package(tmp_path / "first"), packages)
    before = _leftovers(packages)
    again = write_tiny_package(tmp_path / "again", seed=1, device_uid="1.2.826.0.1.3680043.10.1234.2.0")
    with pytest.raises(PackageError) as refused:
        _install(factory, again, packages)
    assert refused.value.problems == [f"{MODEL} 1.0.0: this version is already installed"]
    assert _leftovers(packages) == before
    with factory() as db:
        assert len(catalog.list_versions(db)) == 1
    assert len(_model_events(factory)) == 1


def test_a_new_version_must_bring_its_own_device_uid(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    _install(factory, write_tiny_package(tmp_path / "first"), packages)
    retrained = write_tiny_package(tmp_path / "retrained", seed=1, version="1.1.0")  # same device UID
    with pytest.raises(PackageError) as refused:
        _install(factory, retrained, packages)
    assert len(refused.value.problems) == 1
    assert "device_uid: 1.2.826.0.1.3680043.10.1234.1.0 is already used by openaim.tiny-cxr 1.0.0" in str(
        refused.value
    )
    assert not (packages / MODEL / "1.1.0").exists()


def test_a_refusal_lists_every_problem_and_leaves_nothing(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    _install(factory, write_tiny_package(tmp_path / "first"), packages)
    tampered = write_tiny_package(tmp_path / "tampered", seed=1)  # same id, version and device UID
    (tampered / "weights.pt").write_bytes((tampered / "weights.pt").read_bytes() + b"\0")
    before = _leftovers(packages)

    with pytest.raises(PackageError) as refused:
        _install(factory, tampered, packages)

    problems = refused.value.problems
    assert len(problems) == 3, problems
    assert "this version is already installed" in problems[0]
    assert problems[1].startswith("device_uid: ")
    assert (
        problems[2].startswith("weights_sha256: 'weights.pt' has sha256 ")
        and "refusing to load it" in problems[2]
    )
    assert _leftovers(packages) == before  # no staging folder, no second copy
    with factory() as db:
        assert len(catalog.list_versions(db)) == 1


def test_a_module_outside_the_allowed_ones_is_not_imported(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    with pytest.raises(PackageError) as refused, catalog_transaction(factory) as db:
        catalog.install(
            db, write_tiny_package(tmp_path / "source"), packages, ADMIN
        )  # default: inference.models
    assert refused.value.problems == [
        f"runtime.module: {MODULE!r} is not under an allowed prefix (inference.models)"
    ]
    assert _leftovers(packages) == []


def test_a_model_whose_outputs_do_not_match_the_manifest_is_refused(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    source = write_tiny_package(tmp_path / "source")
    manifest = json.loads((source / "manifest.json").read_text())
    manifest["outputs"].append({"label": "Mass", "display_name": "Mass", "threshold": 0.5})
    (source / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=r"returns \(1, 2\), the manifest lists 3 outputs"):
        _install(factory, source, packages)
    assert _leftovers(packages) == []


def test_a_package_folder_with_a_symbolic_link_is_refused(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    source = write_tiny_package(tmp_path / "source")
    (tmp_path / "outside.txt").write_text("not part of the package")
    (source / "notes.txt").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(PackageError, match=r"'notes\.txt': not a plain file"):
        _install(factory, source, packages)
    assert _leftovers(packages) == []


def test_an_install_whose_transaction_fails_leaves_no_folder_no_row_and_no_audit(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="later step"), catalog_transaction(factory) as db:
        catalog.install(
            db, write_tiny_package(tmp_path / "source"), packages, ADMIN, allowed_modules=(MODULE,)
        )
        assert (packages / MODEL / "1.0.0").is_dir()
        raise RuntimeError("a later step of the same transaction failed")
    assert _leftovers(packages) == []
    with factory() as db:
        assert catalog.list_versions(db) == []
    assert _model_events(factory) == []


def test_promoting_a_version_to_clinical_demotes_the_clinical_one_to_shadow(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    for index, version in enumerate(("1.0.0", "1.1.0")):
        _install(factory, _version(tmp_path, version, seed=index + 1), packages)
    with catalog_transaction(factory) as db:
        catalog.set_mode(db, MODEL, "1.0.0", Mode.CLINICAL, ADMIN)
    with catalog_transaction(factory) as db:
        catalog.set_mode(db, MODEL, "1.1.0", Mode.CLINICAL, ADMIN)
    with catalog_transaction(factory) as db:  # and back: the older row (lower id) is promoted this time
        catalog.set_mode(db, MODEL, "1.0.0", Mode.CLINICAL, ADMIN)
    with catalog_transaction(factory) as db:
        catalog.set_mode(db, MODEL, "1.1.0", Mode.CLINICAL, ADMIN)

    with factory() as db:
        modes = {row.version: row.mode for row in catalog.list_versions(db)}
        assert modes == {"1.0.0": "shadow", "1.1.0": "clinical"}
        assert [(row.version, row.mode) for row in catalog.enabled_versions(db)] == [
            ("1.0.0", "shadow"),
            ("1.1.0", "clinical"),
        ]
    changes = [
        (event["change"], event["version"], event["from_mode"], event["to_mode"])
        for event in _model_events(factory)
    ]
    assert changes[2:] == [
        ("mode", "1.0.0", "off", "clinical"),
        ("demote", "1.0.0", "clinical", "shadow"),
        ("mode", "1.1.0", "off", "clinical"),
        ("demote", "1.1.0", "clinical", "shadow"),
        ("mode", "1.0.0", "shadow", "clinical"),
        ("demote", "1.0.0", "clinical", "shadow"),
        ("mode", "1.1.0", "shadow", "clinical"),
    ]


def test_the_database_itself_refuses_two_clinical_versions_of_a_model(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    for index, version in enumerate(("1.0.0", "1.1.0")):
        _install(factory, _version(tmp_path, version, seed=index + 1), packages)
    with pytest.raises(IntegrityError), factory() as db, db.begin():
        db.execute(update(ModelVersion).values(mode=Mode.CLINICAL.value))
    with factory() as db, db.begin():  # other models may each have their own clinical version
        db.execute(update(ModelVersion).where(ModelVersion.version == "1.0.0").values(mode="clinical"))
        db.execute(text("SELECT 1"))


def test_enable_starts_a_shadow_trial_and_keeps_a_running_mode(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    _install(factory, write_tiny_package(tmp_path / "source"), packages)
    with catalog_transaction(factory) as db:
        assert catalog.enable(db, MODEL, "1.0.0", ADMIN).mode == Mode.SHADOW
    with catalog_transaction(factory) as db:
        catalog.set_mode(db, MODEL, "1.0.0", Mode.CLINICAL, ADMIN)
        assert catalog.enable(db, MODEL, "1.0.0", ADMIN).mode == Mode.CLINICAL
    with catalog_transaction(factory) as db:
        assert catalog.disable(db, MODEL, "1.0.0", ADMIN).mode == Mode.OFF
    transitions = [(event["from_mode"], event["to_mode"]) for event in _model_events(factory)[1:]]
    assert transitions == [("off", "shadow"), ("shadow", "clinical"), ("clinical", "off")]  # no-ops: no rows


def test_retire_keeps_the_row_switched_off_for_good(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    _install(factory, write_tiny_package(tmp_path / "source"), packages)
    with catalog_transaction(factory) as db:
        catalog.set_mode(db, MODEL, "1.0.0", Mode.CLINICAL, ADMIN)
    with catalog_transaction(factory) as db:
        retired = catalog.retire(db, MODEL, "1.0.0", ADMIN)
        assert retired.mode == Mode.OFF and retired.retired_at is not None

    for change in (catalog.enable, catalog.retire):
        with pytest.raises(CatalogError, match="retired"), catalog_transaction(factory) as db:
            change(db, MODEL, "1.0.0", ADMIN)
    with pytest.raises(CatalogError, match="retired"), catalog_transaction(factory) as db:
        catalog.set_mode(db, MODEL, "1.0.0", Mode.SHADOW, ADMIN)
    with factory() as db:
        row = catalog.get_version(db, MODEL, "1.0.0")
        assert row is not None and row.mode == "off" and row.retired_at is not None
        assert catalog.enabled_versions(db) == []
    assert (packages / MODEL / "1.0.0" / "weights.pt").is_file()  # results still refer to it
    last = _model_events(factory)[-1]
    assert (last["change"], last["from_mode"], last["to_mode"]) == ("retire", "clinical", "off")
    assert len(_model_events(factory)) == 3  # refused requests changed nothing


def test_an_unknown_version_is_named_in_the_error(factory: sessionmaker[Session]) -> None:
    with (
        pytest.raises(CatalogError, match=r"openaim.nothing 9.9.9 is not installed"),
        catalog_transaction(factory) as db,
    ):
        catalog.set_mode(db, "openaim.nothing", "9.9.9", Mode.SHADOW, ADMIN)


def test_the_audit_chain_holds_after_catalog_changes(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path
) -> None:
    _install(factory, write_tiny_package(tmp_path / "source"), packages)
    with catalog_transaction(factory) as db:
        catalog.enable(db, MODEL, "1.0.0", ADMIN)
    with factory() as db:
        result = audit.verify(db)
    assert result.ok and result.rows == 2


def test_an_install_whose_audit_event_fails_leaves_no_folder_and_no_row(
    factory: sessionmaker[Session], packages: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 item 7: the event used to be appended after the install's commit, so a failure (or a
    kill -9) between the two left an installed model that the trail never heard of."""

    def unavailable(*_args: object, **_kwargs: object) -> str:
        raise RuntimeError("the audit trail failed")

    monkeypatch.setattr(AuditEvent, "content_hash", unavailable)
    with pytest.raises(RuntimeError, match="the audit trail failed"):
        _install(factory, write_tiny_package(tmp_path / "source"), packages)
    monkeypatch.undo()
    with factory() as db:
        assert catalog.list_versions(db) == []
    assert _leftovers(packages) == []
    assert _model_events(factory) == []
