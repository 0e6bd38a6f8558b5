"""Request bodies: none is read before its sender's session is known, and none beyond its cap.

FastAPI reads and parses a route's body before it runs the route's dependencies, the sign-in check among
them: 300 MB of JSON sent without a session was parsed (+0.65 GB of memory), then answered 401. This
middleware stands before every route:

- a request that carries a body, to any path but the sign-in form, needs a cookie naming a live session
  (the session memo, else the database) or gets 401 with nothing read;
- a body over its cap gets 413 naming the cap: at once when Content-Length says so, and as soon as a
  chunked body passes it otherwise. The cap is ``Settings.max_request_bytes`` for JSON and forms, and
  larger for the upload routes named at construction (STOW-RS: ``Settings.max_upload_bytes``).

The gate answers "could this be someone signed in", to spare memory; the route still checks the session
against the database and the roles, as before. So it may trust the memo a moment longer than a route
would.

FastAPI's own limit (``max_body_size``, fastapi/_body_limit.py) is not used: its app-wide limiter runs
outside every middleware of the app's, so a stranger's large body would be answered 413 before any
session check, and its answer ("Content Too Large") names no limit; a route's own limit is fixed when
the route is declared, before the settings are read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from viewer.access.deps import cookie_names
from viewer.access.session_memo import SessionMemo, look_up

SessionCheck = Callable[[Request], Awaitable[bool]]


class BodyTooLargeError(HTTPException):
    """Raised by ``receive`` once a body passes its cap. An HTTPException, so that FastAPI's body
    reading passes it on (it turns other errors into 400) and the app's handler answers 413."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, too_large(cap))


def too_large(cap: int) -> str:
    return f"The request body is larger than this server accepts here ({_size(cap)})."


def _size(count: int) -> str:
    if count >= 1024 * 1024 and count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB"
    if count >= 1024 and count % 1024 == 0:
        return f"{count // 1024} KiB"
    return f"{count} bytes"


@dataclass(frozen=True)
class BodyCaps:
    """The largest body accepted: ``default`` for every path but those in ``by_path`` (exact paths)."""

    default: int
    by_path: Mapping[str, int] = field(default_factory=dict)

    def for_path(self, path: str) -> int:
        return self.by_path.get(path, self.default)


async def has_live_session(request: Request) -> bool:
    """Whether the request's session cookie names a session that is live (memo first, then database)."""
    state = request.app.state
    token = request.cookies.get(cookie_names(state.settings)[0])
    if not token:
        return False
    memo: SessionMemo = state.session_memo
    if memo.get(token) is not None:
        return True
    found = await run_in_threadpool(look_up, state.db, token)
    if found is None:
        return False
    memo.put(token, found)
    return True


class BodyLimits:
    """ASGI middleware: the session gate and the caps described above."""

    def __init__(
        self,
        app: ASGIApp,
        caps: BodyCaps,
        public_paths: frozenset[str] = frozenset(),
        signed_in: SessionCheck = has_live_session,
    ) -> None:
        self.app = app
        self.caps = caps
        self.public_paths = public_paths
        self.signed_in = signed_in

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = _content_length(headers)
        if declared == 0 or (declared is None and "transfer-encoding" not in headers):
            await self.app(scope, receive, send)  # no body: nothing to read early
            return
        path: str = scope["path"]
        if path not in self.public_paths and not await self.signed_in(Request(scope)):
            await _answer(scope, receive, send, 401, "Sign in first.")
            return
        cap = self.caps.for_path(path)
        if declared is not None and declared > cap:
            await _answer(scope, receive, send, 413, too_large(cap))
            return
        await self._capped(scope, receive, send, cap)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise BodyTooLargeError(cap)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLargeError as error:  # read outside a route (its handler answers otherwise)
            if started:
                raise
            await _answer(scope, receive, send, 413, error.detail)


def _content_length(headers: Headers) -> int | None:
    """The declared length; None when absent (chunked) or unreadable (then counted as it arrives)."""
    value = headers.get("content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def _answer(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
    # Connection: close, so that the server does not go on reading the body it was not asked to keep.
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)
