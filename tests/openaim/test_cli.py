"""The `openaim` command: users from the command line, and a demo that outlives its Orthanc's death and
that Ctrl-C stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from openaim.cli import app as cli
from openaim.db import make_engine, session_factory
from orthanc.launcher import free_port
from viewer.access.users import check_password, find_user

PASSWORD = "a long enough password"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    variables = {"OPENAIM_DATA_DIR": str(tmp_path / "data")}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables


def test_user_add_creates_a_user_with_roles_and_a_hashed_password(env: dict[str, str]) -> None:
    result = CliRunner().invoke(
        cli,
        ["user", "add", "dr-tan", "--role", "radiologist", "--role", "reviewer", "--password-stdin"],
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "Added dr-tan (radiologist, reviewer)" in result.output
    factory = session_factory(make_engine(f"sqlite:///{env['OPENAIM_DATA_DIR']}/openaim.db"))
    with factory() as db:
        user = check_password(db, "dr-tan", PASSWORD)
        assert user is not None
        assert {role.value for role in user.roles} == {"radiologist", "reviewer"}


def test_user_add_refuses_duplicates_unknown_roles_and_short_passwords(env: dict[str, str]) -> None:
    runner = CliRunner()
    add = ["user", "add", "dr-lim", "--password-stdin"]
    assert runner.invoke(cli, [*add, "-r", "admin"], input=PASSWORD + "\n").exit_code == 0
    duplicate = runner.invoke(cli, [*add, "-r", "admin"], input=PASSWORD + "\n")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    unknown = runner.invoke(cli, ["user", "add", "x", "-r", "wizard", "--password-stdin"], input=PASSWORD)
    assert unknown.exit_code == 2 and "radiologist, reviewer, governance, admin" in unknown.output
    short = runner.invoke(cli, ["user", "add", "y", "-r", "admin", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 12 characters" in short.output


def test_user_blinded_turns_the_blinded_read_on_and_off(env: dict[str, str]) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(
            cli, ["user", "add", "dr-ong", "-r", "radiologist", "--password-stdin"], input=PASSWORD
        ).exit_code
        == 0
    )
    factory = session_factory(make_engine(f"sqlite:///{env['OPENAIM_DATA_DIR']}/openaim.db"))

    def blinded() -> bool:
        with factory() as db:
            user = find_user(db, "dr-ong")
            assert user is not None
            return user.blinded_read

    assert blinded() is False  # off unless asked for
    assert runner.invoke(cli, ["user", "blinded", "dr-ong", "--on"]).exit_code == 0
    assert blinded() is True
    assert runner.invoke(cli, ["user", "blinded", "dr-ong", "--off"]).exit_code == 0
    assert blinded() is False
    unknown = runner.invoke(cli, ["user", "blinded", "nobody"])
    assert unknown.exit_code == 1 and "no user" in unknown.output


def test_user_commands_share_the_admin_rules_and_are_audited(env: dict[str, str]) -> None:
    runner = CliRunner()
    add = ["user", "add", "boss", "-r", "admin", "--password-stdin"]
    assert runner.invoke(cli, add, input=PASSWORD).exit_code == 0
    last = runner.invoke(cli, ["user", "disable", "boss"])
    assert last.exit_code == 1 and "last active admin" in last.output
    reset = runner.invoke(cli, ["user", "reset-password", "boss"])
    assert reset.exit_code == 0, reset.output
    temporary = re.search(r"Temporary password \(shown once\): (\S+)", reset.output)
    assert temporary is not None
    factory = session_factory(make_engine(f"sqlite:///{env['OPENAIM_DATA_DIR']}/openaim.db"))
    with factory() as db:
        user = check_password(db, "boss", temporary.group(1))
        assert user is not None and user.must_change_password
        assert check_password(db, "boss", PASSWORD) is None
        trail = db.execute(text("SELECT username, detail FROM audit_events ORDER BY id")).all()
    assert [detail for _, detail in trail] == [
        '{"change": "added", "roles_after": ["admin"], "roles_before": [], '
        '"subtype": "UserSecurityAttributesChanged", "target": "boss"}',
        '{"change": "password reset", "subtype": "UserSecurityAttributesChanged", "target": "boss"}',
    ]
    assert all(username.startswith("cli:") for username, _ in trail)
    assert runner.invoke(cli, ["user", "disable", "nobody"]).exit_code == 1


@pytest.mark.slow
def test_demo_serves_the_platform_and_ctrl_c_leaves_no_orthanc_running(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "OPENAIM_DATA_DIR": str(tmp_path / "data"),
        "OPENAIM_PORT": str(port),
        "OPENAIM_ORTHANC_HTTP_PORT": str(free_port()),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # this tree's code, wherever it is installed
    }
    openaim = Path(sys.executable).parent / "openaim"
    demo = subprocess.Popen(
        [str(openaim), "demo", "--limit", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = _read_until(demo, "Ctrl-C stops", timeout=90)
        assert f"http://127.0.0.1:{port}/" in output
        assert re.search(r"demo sign-in: user 'demo', password '[^']{12,}'", output)
        assert _wait_for(f"http://127.0.0.1:{port}/healthz")
        orthanc_config = tmp_path / "data" / "orthanc" / "orthanc.json"
        assert _orthanc_pids(orthanc_config), "Orthanc should be running while the demo runs"
        assert "Demo model: " in output and "not for clinical use" in output
        assert _wait_until(lambda: _results(tmp_path / "data" / "openaim.db") >= 2, timeout=90), (
            "the demo model should have read both seeded chest X-rays"
        )
        [killed] = _orthanc_pids(orthanc_config)
        os.kill(int(killed), signal.SIGKILL)  # Orthanc dies under the platform: it is brought back
        assert _wait_until(lambda: _archive_restarts(port) == 1, timeout=30), "Orthanc was not restarted"
        assert _orthanc_pids(orthanc_config) not in ([], [killed])
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=30)
        assert _orthanc_pids(orthanc_config) == []
    finally:
        if demo.poll() is None:
            demo.kill()


def _read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if marker in line:
            return "".join(lines)
    raise AssertionError("the demo did not start:\n" + "".join(lines))


def _wait_for(url: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.1)
    return False


def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def _results(database: Path) -> int:
    engine = make_engine(f"sqlite:///{database}")
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM inference_results")).scalar_one()
    engine.dispose()
    return int(count)


def _archive_restarts(port: int) -> int | None:
    """The child Orthanc's restarts as /healthz reports them; None while it is not running."""
    answer = httpx.get(f"http://127.0.0.1:{port}/healthz")
    return int(answer.json()["archive"]["restarts"]) if answer.status_code == 200 else None


def _orthanc_pids(config: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", str(config)], capture_output=True, text=True, check=False)
    return found.stdout.split()


KILLED_IN_THE_AUDIT_APPEND = """
import os, signal, sys
from openaim import audit
from openaim.cli import app

def killed(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

audit.AuditEvent.content_hash = killed
sys.argv = ["openaim", "user", "add", "dr-killed", "--role", "radiologist", "--password-stdin"]
app()
"""


def test_a_kill_9_while_the_audit_event_is_written_leaves_no_account_without_its_event(
    env: dict[str, str],
) -> None:
    """Issue 15 item 7: a kill -9 between an action's commit and its audit row's left actions without
    their row. The account and its event commit together now: a process killed while writing the event
    leaves neither."""
    process = subprocess.run(
        [sys.executable, "-c", KILLED_IN_THE_AUDIT_APPEND],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    factory = session_factory(make_engine(f"sqlite:///{env['OPENAIM_DATA_DIR']}/openaim.db"))
    with factory() as db:
        assert find_user(db, "dr-killed") is None
        assert db.execute(text("SELECT count(*) FROM audit_events")).scalar() == 0
