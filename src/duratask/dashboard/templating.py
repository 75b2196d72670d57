"""Jinja2 rendering for the pages: autoescaping on, templates shipped inside the package."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.requests import Request

from duratask.converter import replace_lone_surrogates
from duratask.dashboard.responses import SafeHTMLResponse
from duratask.dashboard.values import pretty_payload

PACKAGE_DIR = Path(__file__).parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def human_span(seconds: float) -> str:
    """A duration for people: ``850 ms``, ``4.2 s``, ``3 min 4 s``, ``2 h 5 min``, ``3 d 4 h``."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _relative(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "—"
    seconds = (now - value).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    span = human_span(abs(seconds))
    return f"{span} ago" if seconds > 0 else f"in {span}"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return human_span((end - start).total_seconds())


def instance_href(instance_id: str, suffix: str = "") -> str:
    """The page of an instance (ids are percent-encoded, slashes included)."""
    return f"/instances/{quote(replace_lone_surrogates(instance_id), safe='')}{suffix}"


def _query(params: dict[str, Any]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None or value == "" or value is False:
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, str(v)) for v in value)
        else:
            pairs.append((key, str(value)))
    return urlencode(pairs)


def build_environment() -> jinja2.Environment:
    """The template environment (autoescape on for everything)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["payload"] = pretty_payload
    env.filters["query"] = _query
    env.filters["relative"] = _relative
    env.filters["duration"] = _duration
    env.globals["instance_href"] = instance_href
    return env


class Renderer:
    """Renders a template into a response, with what every page needs in its context."""

    def __init__(self, *, read_only: bool, token: bool) -> None:
        self.env = build_environment()
        self.read_only = read_only
        self.token = token

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> SafeHTMLResponse:
        full = {
            "request_path": request.url.path,
            "csrf_token": getattr(request.state, "csrf_token", ""),
            "read_only": self.read_only,
            "has_token": self.token,
            "refresh_seconds": 0,
            "notice": None,
            **context,
        }
        html = self.env.get_template(name).render(full)
        return SafeHTMLResponse(html, status_code=status_code)

    def error(self, request: Request, status: int, title: str, message: str) -> SafeHTMLResponse:
        """An error page."""
        return self.render(
            request, "error.html", {"status": status, "title": title, "message": message}, status
        )
