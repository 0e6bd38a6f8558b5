"""Jinja2 templates from frontend/templates. Autoescape stays on: every DICOM string is hostile HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from viewer.archive.dicom_text import person_name


def make_templates(frontend_dir: Path) -> Jinja2Templates:
    templates = Jinja2Templates(directory=frontend_dir / "templates")
    templates.env.autoescape = True
    templates.env.filters["person_name"] = person_name
    return templates


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    templates: Jinja2Templates = request.app.state.templates
    user = getattr(request.state, "page_user", None)
    context.setdefault("user", user)
    context.setdefault("csrf_token", user.csrf_token if user is not None else "")
    return templates.TemplateResponse(request, name, context, status_code=status_code)
