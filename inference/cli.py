"""``openaim models ...``: install, list and switch model package versions from the command line.

Every change is recorded in the audit trail under the operating-system user (``cli:<user>``), since a
command line has no platform sign-in.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from inference import catalog
from inference.catalog import CatalogError, Mode, ModelVersion
from inference.manifest import PackageError
from openaim import audit_anchoring
from openaim.db import migrated
from openaim.settings import Settings

models_app = typer.Typer(
    help="AI model packages: install, trial (shadow), clinical use, retire.", no_args_is_help=True
)

ModelId = Annotated[str, typer.Argument(help="The model's id, as in its manifest (e.g. openaim.demo-cxr).")]
Version = Annotated[str, typer.Argument(help="The version to change (e.g. 1.0.0).")]
COLUMNS = ("id", "version", "name", "vendor", "mode", "regulatory status", "installed at", "device UID")


def cli_username() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except OSError:  # no user name in the environment or the password database (some containers)
        return f"cli:uid-{os.getuid()}"


@contextmanager
def _catalog(settings: Settings) -> Iterator[Session]:
    """A catalog transaction on the platform's (migrated) database; refusals end the command with exit 1."""
    factory = migrated(settings.resolved_database_url, settings.resolved_audit_key)
    try:
        with catalog.catalog_transaction(factory) as db:
            yield db
    except PackageError as error:
        typer.echo("error: model package refused:", err=True)
        for problem in error.problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(1) from error
    except CatalogError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    audit_anchoring.anchor_now(settings, factory)  # the command ends: its events are anchored


@models_app.command("install")
def install(
    path: Annotated[Path, typer.Argument(help="A package folder, or a .zip / .tar.gz of one.")],
) -> None:
    """Verify a package (manifest, weights hash, the model builds) and install it, switched off."""
    settings = Settings()
    with _catalog(settings) as db:
        version = catalog.install(
            db, path, catalog.packages_dir(settings), cli_username(), tuple(settings.model_modules)
        )
        typer.echo(
            f"Installed {version.model_id} {version.version} "
            f"({_printable(version.name)}, {_printable(version.vendor)}), mode off.\n"
            f"  device UID {version.device_uid}, weights sha256 {version.weights_sha256}\n"
            f"  Start a silent trial with: openaim models enable {version.model_id} {version.version}"
        )


@models_app.command("list")
def list_models() -> None:
    """Every installed version, retired ones included."""
    settings = Settings()
    with _catalog(settings) as db:
        versions = catalog.list_versions(db)
        rows = [_row(version) for version in versions]
    if not rows:
        typer.echo("No model installed. Install one with: openaim models install PATH")
        return
    for line in _table([COLUMNS, *rows]):
        typer.echo(line)


def _row(version: ModelVersion) -> tuple[str, ...]:
    regulatory = catalog.manifest_of(version).regulatory
    status = " ".join(
        part for part in (regulatory.status.value, regulatory.authority, regulatory.reference) if part
    )
    mode = f"{version.mode} (retired {version.retired_at:%Y-%m-%d})" if version.retired_at else version.mode
    cells = (
        version.model_id,
        version.version,
        version.name,
        version.vendor,
        mode,
        status,
        f"{version.installed_at:%Y-%m-%d %H:%M} UTC",
        version.device_uid,
    )
    return tuple(_printable(cell) for cell in cells)


def _printable(text: str) -> str:
    # Vendor text reaches a terminal: control characters (escape sequences) are shown, never obeyed.
    return "".join(char if char.isprintable() else "\ufffd" for char in text)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _change(action: Callable[[Session], object]) -> None:
    with _catalog(Settings()) as db:
        action(db)
        changes = [change.describe() for change in catalog.pending_changes(db)]
    for line in changes or ["Nothing to change: it is already so."]:
        typer.echo(line)


@models_app.command("enable")
def enable(model_id: ModelId, version: Version) -> None:
    """Switch a version on: off becomes shadow (a silent trial); a running version keeps its mode."""
    _change(lambda db: catalog.enable(db, model_id, version, cli_username()))


@models_app.command("disable")
def disable(model_id: ModelId, version: Version) -> None:
    """Switch a version off; it stays installed."""
    _change(lambda db: catalog.disable(db, model_id, version, cli_username()))


@models_app.command("mode")
def mode(
    model_id: ModelId,
    version: Version,
    new_mode: Annotated[Mode, typer.Argument(metavar="MODE", help="off, shadow or clinical.")],
) -> None:
    """Set a version's mode; making one clinical moves the model's clinical version to shadow."""
    _change(lambda db: catalog.set_mode(db, model_id, version, new_mode, cli_username()))


@models_app.command("retire")
def retire(model_id: ModelId, version: Version) -> None:
    """Switch a version off for good; it stays in the catalog, since results refer to it."""
    _change(lambda db: catalog.retire(db, model_id, version, cli_username()))
