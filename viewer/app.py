"""The viewer application: pages and APIs for signed-in users, in front of the archive."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from urllib.parse import quote

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from inference import study_follower
from openaim import audit_anchoring
from openaim.db import make_engine, session_factory
from openaim.logs import uvicorn_log_config
from openaim.settings import Settings
from orthanc import OrthancConnection
from orthanc.launcher import HealthProbe
from orthanc.supervisor import ArchiveState
from viewer.access import oidc, password, signin
from viewer.access.body_limits import BodyCaps, BodyLimits
from viewer.access.deps import (
    NotSignedInError,
    PasswordChangeRequiredError,
    check_csrf,
    signed_in_user,
)
from viewer.access.headers import SecurityHeaders
from viewer.access.session_memo import SessionMemo
from viewer.admin import audit_log, users
from viewer.ai_results import foreign_masks, heatmaps
from viewer.archive.client import Archive, ArchiveError, NotInArchive
from viewer.case_packs import api as case_packs_api
from viewer.catalog import pages as catalog_pages
from viewer.feedback import api as feedback_api
from viewer.feedback import my_feedback, panel
from viewer.feedback import publish as feedback_publish
from viewer.reading import dicomweb, images, overlay_planes, pictures, study, worklist
from viewer.review import pages as review_pages
from viewer.templates import make_templates, render

log = logging.getLogger("openaim.viewer")


def create_app(
    settings: Settings, orthanc: OrthancConnection, archive_health: HealthProbe | None = None
) -> FastAPI:
    """The viewer; ``archive_health`` says how the child Orthanc is doing (None: an external Orthanc)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.archive = Archive(orthanc)
        # The worklist reads the study index; the viewer keeps it, whether or not inference runs here.
        with (
            study_follower.in_background(orthanc, app.state.db)
            if settings.study_index_follow
            else nullcontext(),
            audit_anchoring.in_background(settings, app.state.db),  # the head anchored at start and end too
        ):
            yield
        if (frames := getattr(app.state, "frame_source", None)) is not None:  # made on first use
            await frames.aclose()
        await app.state.archive.aclose()
        app.state.engine.dispose()

    app = FastAPI(title="openaim", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.engine = make_engine(settings.resolved_database_url)
    app.state.db = session_factory(app.state.engine, settings.resolved_audit_key)
    app.state.templates = make_templates(settings.frontend_dir)
    app.state.session_memo = SessionMemo(settings.session_recheck_s)

    app.include_router(signin.router)
    app.include_router(oidc.router)  # the provider's redirect back arrives before any session
    app.include_router(password.router)  # its own check: reachable while a password must change
    signed_in = [Depends(signed_in_user), Depends(check_csrf)]
    routers = (
        worklist,
        study,
        dicomweb,
        catalog_pages,
        images,
        pictures,
        overlay_planes,
        panel,
        heatmaps,
        foreign_masks,
        feedback_api,
        feedback_publish,
        review_pages,
        my_feedback,
        case_packs_api,
        users,
        audit_log,
    )
    for module in routers:
        app.include_router(module.router, dependencies=signed_in)

    app.mount("/static", StaticFiles(directory=settings.frontend_dir / "static"), name="static")
    vendor = settings.frontend_dir / "node_modules" / "htmx.org" / "dist"
    app.mount("/vendor/htmx", StaticFiles(directory=vendor, check_dir=False), name="htmx")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """503 while the child Orthanc is down or being restarted: every page needing images would fail."""
        if archive_health is None:
            return JSONResponse({"status": "ok"})
        archive = archive_health()
        running = archive.state == ArchiveState.RUNNING
        return JSONResponse(
            {"status": "ok" if running else "archive down", "archive": archive.as_dict()},
            status_code=200 if running else 503,
        )

    _add_error_handlers(app)
    # Before any route reads a body: a live session (but to sign in or out), and a cap by kind.
    uploads = {str(dicomweb.router.url_path_for("store")): settings.max_upload_bytes}
    caps = BodyCaps(default=settings.max_request_bytes, by_path=uploads)
    app.add_middleware(
        BodyLimits,
        caps=caps,
        public_paths=frozenset({app.url_path_for("signin"), app.url_path_for("signout")}),
    )
    app.add_middleware(SecurityHeaders)  # added last, so outermost: its headers go on every answer
    return app


def _wants_html(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


def _error_response(request: Request, status: int, message: object) -> Response:
    if _wants_html(request):
        return render(request, "error.html", status_code=status, status=status, message=message)
    return JSONResponse({"detail": message}, status_code=status)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotSignedInError)
    async def not_signed_in(request: Request, _: NotSignedInError) -> Response:
        if _wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)
        return JSONResponse({"detail": "Sign in first."}, status_code=401)

    @app.exception_handler(PasswordChangeRequiredError)
    async def password_change_required(request: Request, _: PasswordChangeRequiredError) -> Response:
        if _wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/account/password?next={quote(target)}", status_code=303)
        return JSONResponse({"detail": "Change your password first."}, status_code=403)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return _error_response(request, error.status_code, error.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(part) for part in item['loc'][1:]) or 'request'}: {item['msg']}"
            for item in error.errors()
        ]
        return _error_response(request, 422, problems)

    @app.exception_handler(NotInArchive)
    async def not_in_archive(request: Request, error: NotInArchive) -> Response:
        return _error_response(request, 404, "Not found in the archive.")

    @app.exception_handler(ArchiveError)
    async def archive_down(request: Request, error: ArchiveError) -> Response:
        log.warning("archive error: %s", error)  # a status or an exception class: nothing about a patient
        return _error_response(request, 502, "The image archive is not answering. Try again.")


def serve(
    settings: Settings, connection: OrthancConnection, archive_health: HealthProbe | None = None
) -> None:
    """Run the viewer until Ctrl-C or SIGTERM, on a database already migrated."""
    app = create_app(settings, connection, archive_health)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(),
        proxy_headers=False,
        server_header=False,
    )
