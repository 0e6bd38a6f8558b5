"""docker-compose.yml cannot be started here (no Docker engine): check what can be checked without it.

The file must parse; Orthanc must be a pinned release with the 2026 security fixes and must not publish
its HTTP port; the worker must ask for a GPU; and every ``OPENAIM_*`` variable handed to the platform
and the worker must be a setting the platform actually reads, so that a typo fails here rather than
being silently ignored in a hospital.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml
from sqlalchemy.engine import make_url

from openaim.cli import app as cli
from openaim.settings import REPO_ROOT, Settings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PYPROJECT = REPO_ROOT / "pyproject.toml"

ORTHANC_IMAGE = "orthancteam/orthanc"
# orthancteam/orthanc 26.4.0 (April 2026) is the first release found to carry Orthanc core 1.12.11,
# which fixes CVE-2026-5437..5445 (CERT/CC VU#536588). Nothing older may be pinned.
FIRST_ORTHANC_RELEASE_WITH_FIXES = (26, 4, 0)
ORTHANC_DEFAULT_HTTP_PORT = 8042

APP_SERVICES = ("platform", "inference")
REQUIRED_SETTINGS = (
    "database_url",
    "orthanc_url",
    "orthanc_username",
    "orthanc_password",
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|REGISTERED_USERS|DATABASE_URL")
PLACEHOLDER = "change-me"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, and bare $VAR; $$ escapes.
BRACED_REFERENCE = re.compile(
    r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
)
BARE_REFERENCE = re.compile(r"(?<!\$)\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


# --- helpers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path.name}:{number}: not NAME=value: {raw!r}"
        name = name.strip()
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name), f"{path.name}:{number}: {name!r}"
        assert name not in values, f"{path.name}:{number}: {name} given twice"
        values[name] = value.strip()
    return values


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of compose's two syntaxes it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {name: value for name, _, value in pairs}
    return {str(name): "" if value is None else str(value) for name, value in env.items()}


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's variable substitution, enough for this file (the value .env would give)."""

    def braced(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        value = variables.get(name)
        if op in (":-", ":?") and not value:
            value = None
        if value is not None:
            return value
        if op in (":-", "-"):
            return arg or ""
        raise AssertionError(f"${{{name}}} is required ({arg}) and has no value")

    text = BRACED_REFERENCE.sub(braced, text)
    text = BARE_REFERENCE.sub(lambda m: variables.get(m["name"], ""), text)
    return text.replace("$$", "$")


def referenced_variables(node: Any) -> set[str]:
    """Variables compose substitutes: those in the parsed file's strings (comments do not count)."""
    if isinstance(node, dict):
        return set().union(*(referenced_variables(v) for v in node.values()), set())
    if isinstance(node, list):
        return set().union(*(referenced_variables(v) for v in node), set())
    if isinstance(node, str):
        braced = {m["name"] for m in BRACED_REFERENCE.finditer(node)}
        return braced | {m["name"] for m in BARE_REFERENCE.finditer(node)}
    return set()


def setting_name(variable: str) -> str | None:
    """The Settings field an environment variable sets, as pydantic-settings resolves it."""
    prefix = Settings.model_config.get("env_prefix") or ""
    case_sensitive = Settings.model_config.get("case_sensitive", False)
    name, wanted = (variable, prefix) if case_sensitive else (variable.lower(), prefix.lower())
    if not name.startswith(wanted):
        return None
    return name[len(wanted) :]


def openaim_variables(env: dict[str, str]) -> dict[str, str]:
    prefix = (Settings.model_config.get("env_prefix") or "").lower()
    return {name: value for name, value in env.items() if name.lower().startswith(prefix)}


def published_targets(service: dict[str, Any]) -> set[int]:
    """Container ports a service publishes on the host (short or long port syntax)."""
    targets: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            spec = str(entry["target"])
        else:
            spec = str(entry).split("/")[0].rsplit(":", 1)[-1]
        first, _, last = spec.partition("-")
        targets.update(range(int(first), int(last or first) + 1))
    return targets


def depends_on_healthy(service: dict[str, Any], other: str) -> bool:
    depends = service.get("depends_on") or {}
    return isinstance(depends, dict) and (depends.get(other) or {}).get("condition") == "service_healthy"


# --- the file and its services ----------------------------------------------------------------------


def test_compose_file_parses_and_has_the_services(compose: dict[str, Any]) -> None:
    assert {"postgres", "orthanc", "platform", "inference"} <= set(compose["services"])


def test_orthanc_image_is_a_pinned_release_with_the_2026_fixes(compose: dict[str, Any]) -> None:
    image = compose["services"]["orthanc"]["image"]
    repository, _, tag = image.partition(":")
    assert repository == ORTHANC_IMAGE, image
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:-full)?", tag.split("@")[0])
    assert match, f"{image}: pin a release tag (YY.M.N), never latest or a moving tag"
    release = tuple(int(part) for part in match.groups())
    assert release >= FIRST_ORTHANC_RELEASE_WITH_FIXES, (
        f"{image} predates {FIRST_ORTHANC_RELEASE_WITH_FIXES}: Orthanc core < 1.12.11 has known CVEs"
    )


def test_orthanc_publishes_no_http_port(compose: dict[str, Any]) -> None:
    orthanc = compose["services"]["orthanc"]
    env = environment(orthanc)
    http_port = int(env.get("ORTHANC__HTTP_PORT", ORTHANC_DEFAULT_HTTP_PORT))
    assert http_port not in published_targets(orthanc), "Orthanc's HTTP port is published"
    assert orthanc.get("network_mode") != "host"
    assert published_targets(orthanc) <= {4242}, "only the DICOM port may be published"


def test_orthanc_configuration(compose: dict[str, Any]) -> None:
    orthanc = compose["services"]["orthanc"]
    env = environment(orthanc)
    assert env["ORTHANC__AUTHENTICATION_ENABLED"] == "true"
    assert "${" in env["ORTHANC__REGISTERED_USERS"]
    assert env["DICOM_WEB_PLUGIN_ENABLED"] == "true"
    assert env.get("ORTHANC__DICOM_WEB__ENABLE", "true") == "true"
    assert env["POSTGRESQL_PLUGIN_ENABLED"] == "true"
    assert env["ORTHANC__POSTGRESQL__ENABLE_INDEX"] == "true"
    assert env["ORTHANC__POSTGRESQL__HOST"] == "postgres"
    assert env["ORTHANC__POSTGRESQL__DATABASE"] == "orthanc"
    # The same deliberate choice as the platform's own Orthanc (see Settings.orthanc_stable_age).
    assert int(env["ORTHANC__STABLE_AGE"]) == Settings.model_fields["orthanc_stable_age"].default
    assert orthanc.get("healthcheck", {}).get("test"), "orthanc needs a healthcheck"
    assert depends_on_healthy(orthanc, "postgres")


def test_dicomweb_host_is_the_address_the_platform_uses(compose: dict[str, Any]) -> None:
    # DicomWeb.Host is written into BulkDataURIs: it must be what the clients connect to.
    orthanc_env = environment(compose["services"]["orthanc"])
    for name in APP_SERVICES:
        url = environment(compose["services"][name])["OPENAIM_ORTHANC_URL"]
        assert urlsplit(url).netloc == orthanc_env["ORTHANC__DICOM_WEB__HOST"], name


def test_postgres_is_pinned_with_a_healthcheck(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:1[67]\.\d+(-[a-z0-9.]+)?", postgres["image"]), postgres["image"]
    assert postgres.get("healthcheck", {}).get("test")
    assert not postgres.get("ports"), "PostgreSQL is not published"


def test_inference_reserves_a_gpu(compose: dict[str, Any]) -> None:
    inference = compose["services"]["inference"]
    reservations = inference.get("deploy", {}).get("resources", {}).get("reservations", {})
    devices = reservations.get("devices") or []
    assert any(
        device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", []) for device in devices
    ), devices
    program, subcommand = inference["command"]
    assert program == "openaim"
    assert subcommand in typer.main.get_command(cli).commands  # type: ignore[attr-defined]  # a click Group


def test_the_platform_leaves_inference_to_the_gpu_service(compose: dict[str, Any]) -> None:
    assert compose["services"]["platform"]["environment"]["OPENAIM_INFERENCE_ENABLED"] == "false"


def test_platform_serves_on_its_published_port(compose: dict[str, Any]) -> None:
    platform = compose["services"]["platform"]
    command = platform["command"]
    command = command.split() if isinstance(command, str) else command
    assert command[:2] == ["openaim", "serve"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0"  # noqa: S104 (inside its container)
    assert published_targets(platform) == {port}
    assert platform["build"], "the platform is built from the repository's Dockerfile"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_wait_for_healthy_dependencies(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert depends_on_healthy(service, "postgres")
    assert depends_on_healthy(service, "orthanc")


# --- the settings passed to the platform ------------------------------------------------------------


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_openaim_variable_is_a_setting(compose: dict[str, Any], name: str) -> None:
    variables = openaim_variables(environment(compose["services"][name]))
    assert variables, f"{name} gets no OPENAIM_* settings"
    unknown = sorted(v for v in variables if setting_name(v) not in Settings.model_fields)
    assert not unknown, f"{name}: not settings the platform reads: {unknown}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_required_settings_are_given(compose: dict[str, Any], name: str) -> None:
    given = {setting_name(v) for v in openaim_variables(environment(compose["services"][name]))}
    missing = sorted(set(REQUIRED_SETTINGS) - given)
    assert not missing, f"{name} lacks {missing}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_settings_accept_the_values(compose: dict[str, Any], env_example: dict[str, str], name: str) -> None:
    """With .env.example's values substituted, the platform's Settings parse every value."""
    values: dict[str, str] = {
        str(setting_name(variable)): interpolate(value, env_example)
        for variable, value in openaim_variables(environment(compose["services"][name])).items()
    }
    # model_validate: the given values only, whatever this machine's environment or .env holds.
    settings = Settings.model_validate(values)
    url = make_url(settings.resolved_database_url)
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.database, url.username) == ("postgres", "openaim", "openaim")
    assert url.password == env_example["PLATFORM_DB_PASSWORD"]
    assert settings.orthanc_url == "http://orthanc:8042"
    assert settings.orthanc_password is not None
    assert settings.orthanc_password.get_secret_value() == env_example["ORTHANC_PASSWORD"]
    assert settings.cookie_secure is True
    assert str(settings.data_dir) == "/var/lib/openaim"


def test_database_roles_match_the_init_script(compose: dict[str, Any]) -> None:
    script = compose["configs"]["postgres-init"]["content"]
    orthanc_env = environment(compose["services"]["orthanc"])
    database_url = environment(compose["services"]["platform"])["OPENAIM_DATABASE_URL"]
    url = make_url(interpolate(database_url, {"PLATFORM_DB_PASSWORD": "x"}))
    for role, database in (
        (url.username, url.database),
        (orthanc_env["ORTHANC__POSTGRESQL__USERNAME"], orthanc_env["ORTHANC__POSTGRESQL__DATABASE"]),
    ):
        assert f"CREATE ROLE {role} LOGIN" in script
        assert f"CREATE DATABASE {database} OWNER {role}" in script
    mounted = [c["target"] for c in compose["services"]["postgres"]["configs"]]
    assert any(t.startswith("/docker-entrypoint-initdb.d/") for t in mounted)


# --- secrets ----------------------------------------------------------------------------------------


def test_no_literal_secrets(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for variable, value in environment(service).items():
            if SECRET_NAME.search(variable):
                assert "${" in value, f"{name}.{variable}: take secrets from .env, not the file"


def test_every_variable_is_documented_in_env_example(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    referenced = referenced_variables(compose)
    undocumented = sorted(referenced - set(env_example))
    assert not undocumented, f"add to .env.example: {undocumented}"
    unused = sorted(set(env_example) - referenced)
    assert not unused, f".env.example documents variables the compose file never uses: {unused}"


def test_env_example_holds_placeholders_not_secrets(env_example: dict[str, str]) -> None:
    for name, value in env_example.items():
        if SECRET_NAME.search(name) or name.endswith("_KEY"):
            assert value == PLACEHOLDER, f"{name}: .env.example holds placeholders only"


# --- the image --------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def test_dockerfile_base_user_and_torch_pin() -> None:
    instructions = dockerfile_instructions()
    args = dict(arg.split("=", 1) for kind, arg in instructions if kind == "ARG" and "=" in arg)
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], a.split()[0]) for k, a in instructions if k == "FROM"
    ]
    assert bases[-1] == "python:3.11-slim-bookworm", bases
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must not run as root"
    pinned = re.search(r'"torch==([^"]+)"', PYPROJECT.read_text())
    assert pinned and args["TORCH_VERSION"] == pinned[1], "Dockerfile and pyproject pin one torch"


def test_dockerfile_settings_are_settings() -> None:
    names = {
        token.split("=", 1)[0]
        for kind, arguments in dockerfile_instructions()
        if kind == "ENV"
        for token in arguments.split()
        if "=" in token
    }
    openaim = {n for n in names if setting_name(n) is not None}
    unknown = sorted(n for n in openaim if setting_name(n) not in Settings.model_fields)
    assert not unknown, unknown


# --- docker compose itself, where its CLI exists ----------------------------------------------------


def compose_cli_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not compose_cli_available(), reason="no `docker compose` CLI here")
def test_docker_compose_config_accepts_the_file() -> None:
    done = subprocess.run(
        [
            "docker",
            "compose",
            "--project-directory",
            str(REPO_ROOT),
            "--env-file",
            str(ENV_EXAMPLE),
            "-f",
            str(COMPOSE_FILE),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rendered = json.loads(done.stdout)
    assert {"postgres", "orthanc", "platform", "inference"} <= set(rendered["services"])
