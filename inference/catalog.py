"""The model catalog: which package versions are installed, and in which mode each one runs.

Modes: ``off`` (installed, never run), ``shadow`` (runs silently for a trial; readers never see it) and
``clinical`` (shown to readers). Several versions of a model may be installed; at most one is clinical at
a time, and the database itself enforces that (a partial unique index), not only this module.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Index, String, Text, UniqueConstraint, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from inference.manifest import Manifest, PackageError
from inference.package import ModelPackage, open_package
from openaim.audit import Action, EventType, append
from openaim.db import Base, UTCDateTime, utcnow
from openaim.settings import Settings


class Mode(StrEnum):
    OFF = "off"
    SHADOW = "shadow"
    CLINICAL = "clinical"


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        Index(
            "uq_model_versions_one_clinical",
            "model_id",
            unique=True,
            sqlite_where=text("mode = 'clinical'"),
            postgresql_where=text("mode = 'clinical'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    vendor: Mapped[str] = mapped_column(String(200))
    device_uid: Mapped[str] = mapped_column(String(64), unique=True)  # new for every version (IHE AIR)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    manifest_json: Mapped[str] = mapped_column(Text)  # the validated manifest, as installed
    package_path: Mapped[str] = mapped_column(String(1024))  # the unpacked package in the data dir
    mode: Mapped[str] = mapped_column(String(16), default=Mode.OFF.value)
    installed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    installed_by: Mapped[str] = mapped_column(String(64))
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # retired: kept for the record


class CatalogError(Exception):
    """A catalog request that cannot be done (an unknown version, enabling a retired one...)."""


class UnknownVersionError(CatalogError, LookupError):
    """The model id and version name nothing installed."""


@dataclass(frozen=True)
class ModelChange:
    """One change to the catalog, audited only once the transaction that made it has committed."""

    change: str  # install, mode, demote, retire
    model_id: str
    version: str
    device_uid: str
    weights_sha256: str
    from_mode: str | None
    to_mode: str
    username: str

    def audit_fields(self) -> dict[str, Any]:
        """The keyword arguments of ``openaim.audit.append`` (and of the viewer's request trail)."""
        return {
            "action": Action.CREATE if self.change == "install" else Action.UPDATE,
            "username": self.username,
            "object_uid": self.device_uid,
            "detail": {
                "change": self.change,
                "model_id": self.model_id,
                "version": self.version,
                "from_mode": self.from_mode,
                "to_mode": self.to_mode,
                "weights_sha256": self.weights_sha256,
            },
        }

    def describe(self) -> str:
        label = f"{self.model_id} {self.version}"
        if self.change == "install":
            return f"Installed {label} (mode {self.to_mode})"
        if self.change == "retire":
            return f"Retired {label} (was {self.from_mode})"
        if self.change == "demote":
            return f"Demoted {label} from {self.from_mode} to {self.to_mode}: another version became clinical"
        return f"{label}: {self.from_mode} -> {self.to_mode}"


_PENDING = "openaim.catalog.changes"  # key in Session.info: changes made in the open transaction
_INSTALLED = "openaim.catalog.installed"  # package folders created in the open transaction


def pending_changes(db: Session) -> list[ModelChange]:
    """The catalog changes made through ``db`` in its open transaction (to say what happened)."""
    return list(db.info.get(_PENDING, []))


def take_changes(db: Session) -> list[ModelChange]:
    """The catalog changes made through ``db`` since the last call; audit them before the commit."""
    db.info.pop(_INSTALLED, None)
    return db.info.pop(_PENDING, [])


def audit_changes(db: Session, changes: list[ModelChange]) -> None:
    """Append the changes' events in ``db``'s transaction, the one that made them: they commit together."""
    for change in changes:
        append(db, EventType.AI_MODEL_CHANGED, **change.audit_fields())


@contextmanager
def catalog_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction for catalog work, its changes audited in it; if it fails, nothing stays (no row, no
    audit event, and no package folder that an install in it had already copied)."""
    with factory() as db:
        try:
            with db.begin():
                yield db
                audit_changes(db, pending_changes(db))
        except BaseException:
            db.info.pop(_PENDING, None)
            for folder in db.info.pop(_INSTALLED, []):
                _remove_install_folder(folder)
            raise
        take_changes(db)  # committed, events and all


def _note(db: Session, version: ModelVersion, change: str, from_mode: str | None, username: str) -> None:
    db.info.setdefault(_PENDING, []).append(
        ModelChange(
            change=change,
            model_id=version.model_id,
            version=version.version,
            device_uid=version.device_uid,
            weights_sha256=version.weights_sha256,
            from_mode=from_mode,
            to_mode=version.mode,
            username=username,
        )
    )


def packages_dir(settings: Settings) -> Path:
    """Where installed packages live: ``<data dir>/models/<id>/<version>/``."""
    return settings.resolved_data_dir / "models"


def install(
    db: Session,
    source: Path,
    packages_dir: Path,
    username: str,
    allowed_modules: tuple[str, ...] | None = None,
) -> ModelVersion:
    """Verify a package (folder or archive), copy it into ``packages_dir`` and catalogue it, mode off.

    The copy is what gets verified and built, so the bytes checked are the bytes kept. Every reason for a
    refusal is listed in one ``PackageError``; a refused package leaves no folder and no row.
    ``allowed_modules``: the module prefixes a state-dict package may import (``Settings.model_modules``).
    """
    from inference.runtime import loader  # here, not at module level: torch costs seconds at start-up

    packages_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=packages_dir))
    try:
        package = _staged_package(source, staging)
        manifest = package.manifest
        problems = _conflicts(db, manifest)
        modules = allowed_modules or loader.DEFAULT_ALLOWED_MODULES
        try:  # built once: the hash is checked before unpickling, the outputs against the manifest
            loader.load_model(package, modules)
        except PackageError as error:
            problems += error.problems
        if problems:
            raise PackageError(problems)
        target = _move_into_place(package.root, packages_dir, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    version = ModelVersion(
        model_id=manifest.id,
        version=manifest.version,
        name=manifest.name,
        vendor=manifest.vendor,
        device_uid=manifest.device_uid,
        weights_sha256=manifest.weights_sha256,
        manifest_json=manifest.model_dump_json(),
        package_path=str(target),
        mode=Mode.OFF.value,
        installed_at=utcnow(),
        installed_by=username,
    )
    db.add(version)
    try:
        db.flush()
    except IntegrityError:  # a concurrent install of the same version committed first
        _remove_install_folder(target)
        raise PackageError(
            f"{manifest.id} {manifest.version}: installed by someone else at the same time"
        ) from None
    except BaseException:
        _remove_install_folder(target)
        raise
    db.info.setdefault(_INSTALLED, []).append(target)
    _note(db, version, "install", None, username)
    return version


def _staged_package(source: Path, staging: Path) -> ModelPackage:
    if source.is_dir():
        copy = staging / "package"
        shutil.copytree(source, copy, symlinks=True)  # links stay links, to be refused below
        links = [str(path.relative_to(copy)) for path in sorted(copy.rglob("*")) if not _plain(path)]
        if links:
            raise PackageError(
                [f"{name!r}: not a plain file; packages hold plain files only" for name in links]
            )
        return open_package(copy)
    return open_package(source, extract_to=staging / "package")


def _plain(path: Path) -> bool:
    return not path.is_symlink() and (path.is_file() or path.is_dir())


def _conflicts(db: Session, manifest: Manifest) -> list[str]:
    problems = []
    if get_version(db, manifest.id, manifest.version) is not None:
        problems.append(f"{manifest.id} {manifest.version}: this version is already installed")
    owner = db.scalar(select(ModelVersion).where(ModelVersion.device_uid == manifest.device_uid))
    if owner is not None:
        problems.append(
            f"device_uid: {manifest.device_uid} is already used by {owner.model_id} {owner.version}; "
            "every version needs its own (IHE AIR)"
        )
    return problems


def _move_into_place(root: Path, packages_dir: Path, manifest: Manifest) -> Path:
    target = packages_dir / manifest.id / manifest.version
    if target.exists():  # no row names it (checked above): left by an install that was interrupted
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    root.rename(target)  # same file system as the staging folder: atomic
    return target


def _remove_install_folder(target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    with suppress(OSError):
        target.parent.rmdir()  # only when no other version of the model is left in it


def list_versions(db: Session) -> list[ModelVersion]:
    return list(db.scalars(select(ModelVersion).order_by(ModelVersion.model_id, ModelVersion.installed_at)))


def get_version(db: Session, model_id: str, version: str) -> ModelVersion | None:
    return db.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.version == version)
    )


def require_version(db: Session, model_id: str, version: str) -> ModelVersion:
    found = get_version(db, model_id, version)
    if found is None:
        raise UnknownVersionError(f"{model_id} {version} is not installed")
    return found


def enabled_versions(db: Session) -> list[ModelVersion]:
    """The versions the router sends series to: shadow (silent trial) and clinical."""
    return list(
        db.scalars(
            select(ModelVersion)
            .where(
                ModelVersion.mode.in_([Mode.SHADOW.value, Mode.CLINICAL.value]),
                ModelVersion.retired_at.is_(None),
            )
            .order_by(ModelVersion.model_id, ModelVersion.installed_at)
        )
    )


def manifest_of(version: ModelVersion) -> Manifest:
    return Manifest.model_validate_json(version.manifest_json)


def set_mode(db: Session, model_id: str, version: str, mode: Mode, username: str) -> ModelVersion:
    """Put a version in ``mode``. Making one clinical demotes the model's clinical version to shadow."""
    target = require_version(db, model_id, version)
    if target.retired_at is not None and mode is not Mode.OFF:
        raise CatalogError(f"{model_id} {version} is retired; install a new version instead")
    if target.mode == mode.value:
        return target
    if mode is Mode.CLINICAL:
        current = db.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id,
                ModelVersion.mode == Mode.CLINICAL.value,
                ModelVersion.id != target.id,
            )
        )
        if current is not None:
            current.mode = Mode.SHADOW.value
            db.flush()  # the demotion reaches the database first, or the one-clinical index refuses
            _note(db, current, "demote", Mode.CLINICAL.value, username)
    from_mode = target.mode
    target.mode = mode.value
    db.flush()
    _note(db, target, "mode", from_mode, username)
    return target


def enable(db: Session, model_id: str, version: str, username: str) -> ModelVersion:
    """Off becomes shadow, the safe trial; a version already running keeps its mode."""
    target = require_version(db, model_id, version)
    if target.mode != Mode.OFF.value:
        return target
    return set_mode(db, model_id, version, Mode.SHADOW, username)


def disable(db: Session, model_id: str, version: str, username: str) -> ModelVersion:
    return set_mode(db, model_id, version, Mode.OFF, username)


def retire(db: Session, model_id: str, version: str, username: str) -> ModelVersion:
    """Switch a version off for good; its row stays, since results and audit events refer to it."""
    target = require_version(db, model_id, version)
    if target.retired_at is not None:
        raise CatalogError(f"{model_id} {version} is already retired")
    from_mode = target.mode
    target.mode = Mode.OFF.value
    target.retired_at = utcnow()
    db.flush()
    _note(db, target, "retire", from_mode, username)
    return target
