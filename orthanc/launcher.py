"""Run Orthanc as a child process of the platform: start, wait until it answers, stop on exit."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from openaim.private_files import PRIVATE_UMASK, private_file
from openaim.settings import Settings
from orthanc.config import PLUGINS, OrthancLayout, load_or_create_credentials, orthanc_config, write_config
from orthanc.connection import OrthancConnection
from orthanc.rest import OrthancRest
from orthanc.supervisor import ArchiveHealth, OrthancSupervisor

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "Orthanc is not installed. Run `make setup` (as root), or: "
    "apt-get install -y --no-install-recommends orthanc orthanc-dicomweb orthanc-gdcm dcmtk"
)


PR_SET_PDEATHSIG = 1

HealthProbe = Callable[[], ArchiveHealth]


class OrthancNotInstalledError(RuntimeError):
    def __init__(self, detail: str = "") -> None:
        super().__init__(f"{INSTALL_HINT}{(' (' + detail + ')') if detail else ''}")


class OrthancStartError(RuntimeError):
    pass


def _stop_with_parent() -> None:
    """Ask Linux to send Orthanc SIGTERM if the platform dies without stopping it (kill -9, crash)."""
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OrthancServer:
    """One Orthanc child process whose files live under ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        http_port: int,
        stable_age: int,
        executable: str = "Orthanc",
        plugins_dir: Path = Path("/usr/share/orthanc/plugins"),
        extra_plugins: tuple[str, ...] = (),
    ) -> None:
        self.layout = OrthancLayout(root)
        self.http_port = http_port
        self.stable_age = stable_age
        self.executable = executable
        self.plugins_dir = plugins_dir
        self.extra_plugins = extra_plugins
        self.process: subprocess.Popen[bytes] | None = None
        username, password = load_or_create_credentials(self.layout)
        self.connection = OrthancConnection(f"http://127.0.0.1:{http_port}", username, password)

    def _check_installed(self) -> str:
        binary = shutil.which(self.executable)
        if binary is None:
            raise OrthancNotInstalledError(f"no `{self.executable}` on PATH")
        for plugin in (*PLUGINS, *self.extra_plugins):
            if not (self.plugins_dir / plugin).exists():
                raise OrthancNotInstalledError(f"missing plugin {self.plugins_dir / plugin}")
        return binary

    def start(self, timeout: float = 30.0) -> OrthancConnection:
        binary = self._check_installed()
        config = orthanc_config(
            self.layout,
            http_port=self.http_port,
            credentials=(self.connection.username, self.connection.password),
            stable_age=self.stable_age,
            plugins_dir=self.plugins_dir,
            extra_plugins=self.extra_plugins,
        )
        config_file = write_config(self.layout, config)
        log_handle = private_file(self.layout.log_file).open("ab")
        self.process = subprocess.Popen(
            [binary, f"--logfile={self.layout.log_file}", str(config_file)],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_stop_with_parent,
            umask=PRIVATE_UMASK,  # its storage (images, index) and log: 0600 files in 0700 folders
        )
        log_handle.close()
        self._wait_until_ready(timeout)
        log.info("Orthanc is up on %s", self.connection.url)
        return self.connection

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with OrthancRest(self.connection, timeout=2.0) as rest:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise OrthancStartError(
                        f"Orthanc exited with code {self.process.returncode}; "
                        f"see {self.layout.log_file}:\n{self._log_tail()}"
                    )
                if rest.is_alive():
                    return
                time.sleep(0.1)
        self.stop()
        raise OrthancStartError(f"Orthanc did not answer within {timeout:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 15) -> str:
        if not self.layout.log_file.exists():
            return ""
        return "\n".join(self.layout.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("Orthanc stopped")

    def __enter__(self) -> OrthancConnection:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.contextmanager
def archive(settings: Settings) -> Iterator[OrthancConnection]:
    """The Orthanc to use: the configured external one, or a supervised child process stopped on exit."""
    with archive_with_health(settings) as (connection, _health):
        yield connection


@contextlib.contextmanager
def archive_with_health(settings: Settings) -> Iterator[tuple[OrthancConnection, HealthProbe | None]]:
    """``archive``, and how its child Orthanc is doing (None for an external Orthanc: not ours to watch)."""
    if settings.orthanc_url:
        if not settings.orthanc_username or settings.orthanc_password is None:
            raise SystemExit("OPENAIM_ORTHANC_URL is set: set OPENAIM_ORTHANC_USERNAME and _PASSWORD too")
        yield (
            OrthancConnection(
                settings.orthanc_url,
                settings.orthanc_username,
                settings.orthanc_password.get_secret_value(),
            ),
            None,
        )
        return
    server = OrthancServer(
        settings.resolved_data_dir / "orthanc",
        http_port=settings.orthanc_http_port,
        stable_age=settings.orthanc_stable_age,
        executable=settings.orthanc_executable,
        plugins_dir=settings.orthanc_plugins_dir,
    )
    supervisor = OrthancSupervisor(server, max_backoff=settings.orthanc_restart_max_seconds)
    with supervisor as connection:
        yield connection, supervisor.health
