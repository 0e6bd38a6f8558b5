"""The ``openaim`` command: run the platform, seed the demo, manage users, check the audit trail."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from inference.cli import models_app
from openaim.db import migrated, transaction, upgrade
from openaim.settings import Settings, generated_secret

if TYPE_CHECKING:
    from openaim.seed import SeedReport
    from orthanc import OrthancConnection
    from viewer.access.accounts import AccountChange

app = typer.Typer(help="openaim: open AI medical imaging platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users and roles.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(user_app, name="user")
app.add_typer(audit_app, name="audit")
app.add_typer(models_app, name="models")

DEMO_USER = "demo"
DEMO_SYSTEM_USER = "system:demo"  # who installs the demo model, in the audit trail


def _settings() -> Settings:
    return Settings()


def _database(settings: Settings) -> sessionmaker[Session]:
    return migrated(settings.resolved_database_url, settings.resolved_audit_key)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
) -> None:
    """Start the archive (unless an external one is configured) and the viewer."""
    from inference.service import in_background
    from orthanc.launcher import archive_with_health
    from viewer.app import serve as run_viewer

    settings = _settings()
    settings = settings.model_copy(update={"host": host or settings.host, "port": port or settings.port})
    upgrade(settings.resolved_database_url)
    with archive_with_health(settings) as (connection, health), in_background(settings, connection):
        run_viewer(settings, connection, health)


@app.command("inference")
def run_inference() -> None:
    """Run the inference service alone (watcher, router, jobs), e.g. on a GPU node, until Ctrl-C/SIGTERM."""
    import logging.config
    import signal
    import threading

    from inference.service import InferenceService
    from openaim import audit_anchoring
    from openaim.logs import uvicorn_log_config
    from orthanc.launcher import archive

    settings = _settings()
    logging.config.dictConfig(uvicorn_log_config())
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    factory = _database(settings)
    with archive(settings) as connection, audit_anchoring.in_background(settings, factory):
        service = InferenceService(settings, connection, factory)
        try:
            service.run(stop)
        finally:
            service.close()


@app.command()
def demo(
    limit: Annotated[int | None, typer.Option(help="Only the first N chest X-rays.")] = None,
) -> None:
    """Start everything on loopback, seed the demo studies, print the URL and a demo sign-in."""
    from inference.service import in_background
    from orthanc.launcher import archive_with_health
    from viewer.app import serve as run_viewer

    settings = _settings()
    password = _ensure_demo_user(settings)
    typer.echo(_ensure_demo_model(settings))
    with archive_with_health(settings) as (connection, health), in_background(settings, connection):
        report = _seed(connection, settings, limit)
        typer.echo(f"Seeded: {report.summary()}")
        typer.echo(
            f"\n  openaim is running at http://{settings.host}:{settings.port}/\n"
            f"  demo sign-in: user {DEMO_USER!r}, password {password!r}\n"
            "  Ctrl-C stops the platform and its Orthanc.\n"
        )
        run_viewer(settings, connection, health)


def _ensure_demo_user(settings: Settings) -> str:
    from viewer.access.users import Role, add_user, find_user

    password = generated_secret(settings.resolved_data_dir / "demo-password", nbytes=12)
    with transaction(_database(settings)) as db:
        if find_user(db, DEMO_USER) is None:
            add_user(db, DEMO_USER, password, set(Role), display_name="Demo Reader (all roles)")
    return password


def _ensure_demo_model(settings: Settings) -> str:
    """Install the demo model (trained by this project; not for clinical use) and show it, once."""
    from inference import catalog
    from inference.catalog import Mode
    from inference.manifest import load_manifest

    manifest = load_manifest(settings.demo_model_package)
    with catalog.catalog_transaction(_database(settings)) as db:
        if catalog.get_version(db, manifest.id, manifest.version) is None:
            catalog.install(
                db,
                settings.demo_model_package,
                catalog.packages_dir(settings),
                DEMO_SYSTEM_USER,
                tuple(settings.model_modules),
            )
        clinical = [
            v for v in catalog.list_versions(db) if v.model_id == manifest.id and v.mode == Mode.CLINICAL
        ]
        if not clinical:
            catalog.set_mode(db, manifest.id, manifest.version, Mode.CLINICAL, DEMO_SYSTEM_USER)
    return f"Demo model: {manifest.name} {manifest.version} (a demonstration, not for clinical use)"


@app.command()
def seed(
    limit: Annotated[int | None, typer.Option(help="Only the first N chest X-rays.")] = None,
) -> None:
    """Load the demo studies (NIH ChestX-ray14 images as DICOM, and the DICOM fixtures) into Orthanc."""
    from orthanc.launcher import archive

    settings = _settings()
    with archive(settings) as connection:
        report = _seed(connection, settings, limit)
    typer.echo(f"Seeded: {report.summary()}")


def _seed(connection: OrthancConnection, settings: Settings, limit: int | None) -> SeedReport:
    """The demo studies into this Orthanc, with progress on the console."""
    from openaim.seed import print_progress
    from openaim.seed import seed as seed_studies
    from orthanc.seeding import OrthancSeedArchive

    with OrthancSeedArchive(connection) as target:
        return seed_studies(target, settings.shared_data_dir, limit=limit, progress=print_progress)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema to the newest migration."""
    upgrade(_settings().resolved_database_url)
    typer.echo("Database schema is up to date.")


@user_app.command("add")
def user_add(
    username: str,
    role: Annotated[
        list[str], typer.Option("--role", "-r", help="radiologist, reviewer, governance or admin.")
    ],
    display_name: Annotated[str, typer.Option(help="Name shown in the viewer.")] = "",
    password_stdin: Annotated[
        bool, typer.Option(help="Read the password from standard input (for scripts).")
    ] = False,
) -> None:
    """Add a user with one or more roles. The password is asked for, never passed as an argument."""
    from viewer.access.accounts import add_account
    from viewer.access.users import Role

    try:
        roles = {Role(value) for value in role}
    except ValueError as error:
        raise typer.BadParameter(
            f"{error}; choose from {', '.join(r.value for r in Role)}", param_hint="--role"
        ) from error
    password = _password(password_stdin, "Password")
    min_score = _settings().password_min_score
    _account_change(
        lambda db, actor: add_account(
            db, actor, username, display_name, roles, password, must_change=False, min_score=min_score
        )
    )
    typer.echo(f"Added {username} ({', '.join(sorted(roles))}).")


def _password(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)


def _account_change(change: Callable[[Session, str], AccountChange]) -> AccountChange:
    """Make one account change as ``cli:<os user>`` (the rules of viewer.access.accounts hold here as on
    the admin pages) and audit it in the same transaction; a refusal ends the command with exit 1."""
    from inference.cli import cli_username
    from openaim import audit, audit_anchoring
    from viewer.access.accounts import AccountError

    settings = _settings()
    factory = _database(settings)
    try:
        with transaction(factory) as db:
            done = change(db, cli_username())
            audit.append(db, audit.EventType.SECURITY_ALERT, **done.audit_fields())
    except (AccountError, ValueError) as error:  # UserExistsError and refused passwords too
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    audit_anchoring.anchor_now(settings, factory)
    return done


@user_app.command("disable")
def user_disable(username: str) -> None:
    """Disable a user and end their sessions. The last active admin cannot be disabled."""
    from viewer.access.accounts import disable

    typer.echo(_account_change(lambda db, actor: disable(db, actor, username)).describe())


@user_app.command("enable")
def user_enable(username: str) -> None:
    """Let a disabled user sign in again."""
    from viewer.access.accounts import enable

    typer.echo(_account_change(lambda db, actor: enable(db, actor, username)).describe())


@user_app.command("reset-password")
def user_reset_password(
    username: str,
    password_stdin: Annotated[
        bool, typer.Option(help="Read the temporary password from standard input instead of generating one.")
    ] = False,
) -> None:
    """Reset a password (e.g. an admin who lost theirs): the user's sessions end and they must choose a new
    one at the next sign-in. Without --password-stdin a password is generated and printed once."""
    from viewer.access.accounts import generated_password, reset_password

    password = sys.stdin.readline().rstrip("\n") if password_stdin else generated_password()
    min_score = _settings().password_min_score
    change = _account_change(
        lambda db, actor: reset_password(db, actor, username, password, min_score=min_score)
    )
    typer.echo(change.describe())
    if not password_stdin:
        typer.echo(f"Temporary password (shown once): {password}")


@user_app.command("blinded")
def user_blinded(
    username: str,
    on: Annotated[bool, typer.Option("--on/--off", help="Blinded read on or off for this user.")] = True,
) -> None:
    """Blinded read: the AI stays hidden on each study until this user records an impression."""
    from viewer.access.users import find_user

    with transaction(_database(_settings())) as db:
        user = find_user(db, username)
        if user is None:
            typer.echo(f"error: no user {username!r}", err=True)
            raise typer.Exit(1)
        user.blinded_read = on
    typer.echo(f"Blinded read {'on' if on else 'off'} for {username}.")


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit trail: its keyed hash chain, and the anchors of its head kept outside the database.
    Exit 1 if any row was altered, removed or rewritten, or the newest rows were deleted."""
    from openaim.audit import verify
    from openaim.audit_anchoring import anchor_file

    settings = _settings()
    anchors = anchor_file(settings).read()
    with _database(settings)() as db:
        result = verify(db, anchors=anchors)
    for problem in result.problems:
        typer.echo(problem, err=True)
    if not result.ok:
        typer.echo(f"audit trail FAILED verification: {len(result.problems)} problem(s)", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit trail intact: {result.rows} rows, head {result.head}")
    if result.unkeyed_rows:
        typer.echo(f"  {result.unkeyed_rows} of them written before the chain was keyed (plain SHA-256)")
    if result.last_anchor is None:
        typer.echo(f"  no anchors in {anchors.path} yet: deleting the newest rows would go unseen", err=True)
    else:
        anchor = result.last_anchor
        newest = f"row {anchor.row_id} at {anchor.at:%Y-%m-%d %H:%M:%S} UTC"
        typer.echo(f"  {result.anchors} anchor(s) match; the newest: {newest}")
