"""The application factory: pages, the API, the OpenAPI document and the static files."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import duratask
from duratask.client import AsyncTaskHubClient
from duratask.dashboard.api import API_ROUTES, api_routes
from duratask.dashboard.errors import HttpError, json_error
from duratask.dashboard.hub import ClientSource
from duratask.dashboard.openapi import build_document
from duratask.dashboard.pages import Pages
from duratask.dashboard.responses import SafeJSONResponse
from duratask.dashboard.schedule_pages import SchedulePages
from duratask.dashboard.security import (
    DEFAULT_SESSION_LIFETIME,
    LoginLimiter,
    Security,
    SecurityMiddleware,
    is_api,
)
from duratask.dashboard.templating import STATIC_DIR, Renderer

_LOG = logging.getLogger("duratask.dashboard")
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


class PackagedFiles(StaticFiles):
    """The dashboard's own static files and nothing else.

    A path that names none of them (a NUL byte, ``..``, a name too long for the file system)
    is a 404 decided without asking the file system, which raises on some of those.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)
        self.names = frozenset(p.name for p in directory.iterdir() if p.is_file())

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path not in self.names:
            return "", None
        return super().lookup_path(path)


def create_app(
    client: AsyncTaskHubClient | str,
    *,
    read_only: bool = False,
    token: str | None = None,
    allowed_hosts: Iterable[str] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    public_url: str | None = None,
    session_lifetime: float | timedelta = DEFAULT_SESSION_LIFETIME,
    clock: Callable[[], float] | None = None,
) -> Starlette:
    """The dashboard and management API as a Starlette app.

    ``client`` is a client (its owner closes it) or a store URL (the app opens a client and
    closes it when the app shuts down). ``read_only`` hides and refuses every action.
    ``token`` requires that token: as ``Authorization: Bearer`` on API calls, through the
    login form on pages; a login lasts ``session_lifetime`` (seconds or a timedelta, 12
    hours by default). ``allowed_hosts`` restricts the Host header the app answers to.
    ``public_url`` (``https://host[:port]``) is the origin the app writes into absolute URLs
    and ``Location`` headers; without it, the address the server is bound to is used, never
    the request's Host header. ``clock`` (seconds since the epoch, ``time.time`` by default)
    is for tests.
    """
    if token is not None and not token.strip():
        raise ValueError("the dashboard token must not be empty")
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    if isinstance(session_lifetime, timedelta):
        session_lifetime = session_lifetime.total_seconds()
    now = clock or time.time
    source = ClientSource(client)
    security = Security(
        token=token,
        read_only=read_only,
        allowed_hosts=frozenset(h.lower() for h in allowed_hosts) if allowed_hosts else None,
        max_body_bytes=max_body_bytes,
        public_url=public_url,
        session_lifetime=float(session_lifetime),
        clock=now,
        limiter=LoginLimiter(now),
    )
    renderer = Renderer(read_only=read_only, token=token is not None)
    pages = Pages(source, renderer, security)
    schedule_pages = SchedulePages(source, renderer, security)
    document = build_document(
        API_ROUTES, version=duratask.__version__, token=token is not None, read_only=read_only
    )

    async def openapi(request: Request) -> Response:
        return SafeJSONResponse(document)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if is_api(request.url.path):
            kinds = {404: "not_found", 405: "method_not_allowed"}
            kind = kinds.get(exc.status_code, "http_error")
            return json_error(HttpError(exc.status_code, kind, exc.detail, exc.headers))
        page = renderer.error(request, exc.status_code, exc.detail, "")
        page.headers.update(exc.headers or {})
        return page

    async def server_error(request: Request, exc: Exception) -> Response:
        _LOG.error("unexpected error serving %s %s", request.method, request.url.path, exc_info=exc)
        message = "unexpected server error; the details are in the server's log"
        if is_api(request.url.path):
            return json_error(HttpError(500, "internal_error", message))
        return renderer.error(request, 500, "Server error", message)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await source.close()

    routes = [
        Route("/openapi.json", openapi, methods=["GET"]),
        *api_routes(source),
        Mount("/static", PackagedFiles(STATIC_DIR), name="static"),
        *schedule_pages.routes(),
        *pages.routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityMiddleware, security=security, page_error=renderer.error)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    # A request with a stray trailing slash gets 404, not a redirect: Starlette's redirect
    # would build an absolute URL, and no response should point elsewhere than asked.
    app.router.redirect_slashes = False
    app.state.client_source = source
    app.state.openapi = document
    return app
