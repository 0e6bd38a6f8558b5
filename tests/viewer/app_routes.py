"""The app's routes as tables of them are written: (method, path template), read from the app itself so
that a table that forgets a new route fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

Route = tuple[str, str]  # (method, path template)


def app_routes(app: FastAPI) -> dict[Route, Any]:
    """Every (method, path) the app answers, with its route context; a mount (static files) as ("*", path).
    HEAD, which Starlette adds beside each GET, is the GET's."""
    found: dict[Route, Any] = {}
    for context in iter_route_contexts(app.routes):
        methods = sorted(set(context.methods or ["*"]) - {"HEAD"}) or ["*"]
        for method in methods:
            found[(method, context.path)] = context
    return found


def dependencies_of(context: Any) -> Iterator[Callable[..., Any]]:
    """Every callable the route depends on, however deep (the router's own dependencies included)."""

    def walk(dependant: Any) -> Iterator[Callable[..., Any]]:
        if dependant.call is not None:
            yield dependant.call
        for sub in dependant.dependencies:
            yield from walk(sub)

    yield from walk(context.dependant)
