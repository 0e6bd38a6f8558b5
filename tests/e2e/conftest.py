"""The whole platform served for real (Orthanc, database, viewer under uvicorn) and a real Chromium."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Response, sync_playwright

from openaim.db import make_engine, session_factory, transaction, upgrade
from openaim.seed import seed
from openaim.settings import REPO_ROOT, Settings
from orthanc import OrthancConnection
from orthanc.launcher import free_port
from orthanc.seeding import OrthancSeedArchive
from viewer.access.users import Role, add_user
from viewer.app import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
USERNAME = "reader"
PASSWORD = "correct horse battery staple"
ARTIFACTS = REPO_ROOT / "test-artifacts" / "e2e"


@dataclass(frozen=True)
class Platform:
    """The served viewer: its address and its database (for tests that arrange AI results)."""

    url: str
    database_url: str
    data_dir: Path


@contextmanager
def serve(app: FastAPI, port: int | None = None) -> Iterator[str]:
    """Serve ``app`` under uvicorn on a loopback port (a free one by default) until the block ends."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="viewer", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert thread.is_alive(), "the viewer stopped while starting"
        assert time.monotonic() < deadline, "the viewer did not answer /healthz in 15 s"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, orthanc: OrthancConnection, shared_data: Path
) -> Iterator[Platform]:
    """The viewer on a free loopback port, over plain HTTP as a reading-room workstation sees it.

    ``cookie_secure`` keeps its default (True): Chromium treats http://127.0.0.1 as a secure context,
    so it stores and sends the ``__Host-`` Secure cookies there.
    """
    tmp = tmp_path_factory.mktemp("platform")
    url = f"sqlite:///{tmp / 'openaim.db'}"
    upgrade(url)
    engine = make_engine(url)
    with transaction(session_factory(engine)) as db:
        add_user(db, USERNAME, PASSWORD, {Role.RADIOLOGIST}, display_name="Dr Reader")
    engine.dispose()
    with OrthancSeedArchive(orthanc) as archive:
        seed(archive, shared_data, limit=3)
    settings = Settings(data_dir=tmp / "data", database_url=url)
    with serve(create_app(settings, orthanc)) as base:
        yield Platform(base, url, settings.data_dir)


@pytest.fixture(scope="module")
def viewer_url(platform: Platform) -> str:
    return platform.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class PageProblems:
    """What the browser complained about: console errors, uncaught exceptions, failed HTTP requests."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(f"{message.text} ({message.location.get('url', '')})")

    def on_page_error(self, error: Error) -> None:
        self.page_errors.append(f"{error.name}: {error.message}")

    def on_response(self, response: Response) -> None:
        if response.status >= 400:
            self.bad_responses.append(f"{response.status} {response.request.method} {response.url}")

    def all(self) -> list[str]:
        return self.console_errors + self.page_errors + self.bad_responses


@pytest.fixture
def problems() -> PageProblems:
    return PageProblems()


@pytest.fixture
def page(browser: Browser, problems: PageProblems) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("console", problems.on_console)
    page.on("pageerror", problems.on_page_error)
    page.on("response", problems.on_response)
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def sign_in(page: Page, base_url: str, username: str = USERNAME, password: str = PASSWORD) -> None:
    """Through the real sign-in form; lands on the worklist."""
    page.goto(f"{base_url}/signin?next=/worklist")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/worklist")
