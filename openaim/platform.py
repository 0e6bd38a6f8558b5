"""Running the platform: the archive (a child Orthanc, or an external one) and the viewer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import uvicorn

from openaim.logs import uvicorn_log_config
from openaim.settings import Settings
from orthanc import OrthancConnection, OrthancServer


@contextlib.contextmanager
def archive(settings: Settings) -> Iterator[OrthancConnection]:
    """The Orthanc to use: the configured external one, or a child process stopped on exit."""
    if settings.orthanc_url:
        if not settings.orthanc_username or settings.orthanc_password is None:
            raise SystemExit("OPENAIM_ORTHANC_URL is set: set OPENAIM_ORTHANC_USERNAME and _PASSWORD too")
        yield OrthancConnection(
            settings.orthanc_url,
            settings.orthanc_username,
            settings.orthanc_password.get_secret_value(),
        )
        return
    server = OrthancServer(
        settings.resolved_data_dir / "orthanc",
        http_port=settings.orthanc_http_port,
        stable_age=settings.orthanc_stable_age,
        executable=settings.orthanc_executable,
        plugins_dir=settings.orthanc_plugins_dir,
    )
    with server as connection:
        yield connection


@contextlib.contextmanager
def inference(settings: Settings, connection: OrthancConnection) -> Iterator[None]:
    """The inference service in a background thread (when enabled), stopped and joined on exit."""
    if not settings.inference_enabled:
        yield
        return
    from inference.service import InferenceService
    from openaim.db import make_engine, session_factory

    engine = make_engine(settings.resolved_database_url)
    service = InferenceService(settings, connection, session_factory(engine))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="inference", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
        service.close()
        engine.dispose()


def serve(settings: Settings, connection: OrthancConnection) -> None:
    """Run the viewer until Ctrl-C or SIGTERM, on a database already migrated."""
    from viewer.app import create_app

    app = create_app(settings, connection)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(),
        proxy_headers=False,
        server_header=False,
    )
