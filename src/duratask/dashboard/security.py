"""Who may do what: token login, CSRF on forms, read-only mode, Host checks, body limits.

One ASGI middleware guards every request before any route runs:

- with a token, the API wants ``Authorization: Bearer <token>`` (or the session cookie the
  login form sets) and pages want the session cookie, otherwise they send you to ``/login``;
- every POST of a page form must carry the per-session CSRF token (a cookie plus a hidden
  field with the same value), or it is refused with 403;
- every POST and DELETE under ``/api/`` must send ``Content-Type: application/json``: a
  browser cannot send that to another site without a CORS preflight, which this server never
  approves, so another web page cannot trigger them (with or without a token);
- in read-only mode every POST and DELETE is refused with 403 (login and logout aside);
- with ``allowed_hosts``, a request naming another Host is refused (DNS rebinding);
- request bodies over ``max_body_bytes`` are refused with 413.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from duratask.dashboard.errors import HttpError, error_body

CSRF_COOKIE = "duratask_csrf"
CSRF_FIELD = "csrf_token"
SESSION_COOKIE = "duratask_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/login", "/openapi.json"})
LOGIN_PATHS = frozenset({"/login", "/logout"})
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
NO_STORE = [(b"cache-control", b"no-store")]

PageError = Callable[[Request, int, str, str], Response]


@dataclass(frozen=True, slots=True)
class Security:
    """The access rules of one dashboard app."""

    token: str | None = None
    read_only: bool = False
    allowed_hosts: frozenset[str] | None = None
    max_body_bytes: int = 4 * 1024 * 1024

    def session_value(self) -> str:
        """The session cookie's value: derived from the token, never the token itself."""
        assert self.token is not None
        return hmac.new(
            self.token.encode(), b"duratask-dashboard-session", hashlib.sha256
        ).hexdigest()

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token (constant-time)."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def authenticated(self, conn: HTTPConnection) -> bool:
        """Whether the request carries the bearer token or a session cookie (or none is needed)."""
        if self.token is None:
            return True
        scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self.token_matches(credentials.strip()):
            return True
        cookie = conn.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())


def host_name(header: str) -> str:
    """The host part of a Host header, without the port (IPv6 brackets kept off)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def safe_next(target: str | None) -> str:
    """A local path to return to after logging in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class BodyTooLarge(HttpError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"the request body is over {limit} bytes")


class SecurityMiddleware:
    """Applies :class:`Security` to every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, security: Security, page_error: PageError) -> None:
        self.app = app
        self.security = security
        self.page_error = page_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_headers(send, SECURITY_HEADERS)
        request = Request(scope, receive)
        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        path = request.url.path
        if is_api(path):
            send = _with_headers(send, NO_STORE)
            await self.app(scope, _limited(receive, self.security.max_body_bytes), send)
            return
        if path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        send = _with_headers(send, NO_STORE)
        cookie_token = request.cookies.get(CSRF_COOKIE, "")
        if request.method not in SAFE_METHODS:
            try:
                body = await _read_body(receive, self.security.max_body_bytes)
            except HttpError as error:
                await self.page_error(request, error.status, "Too large", error.message)(
                    scope, receive, send
                )
                return
            if not _csrf_ok(body, cookie_token):
                page = self.page_error(
                    request,
                    403,
                    "Forbidden",
                    "The form's security token is missing or out of date. Go back, reload "
                    "the page and try again.",
                )
                await page(scope, receive, send)
                return
            receive = _replay(body, receive)
        state = scope.setdefault("state", {})
        if cookie_token:
            state["csrf_token"] = cookie_token
        else:
            state["csrf_token"] = secrets.token_urlsafe(32)
            cookie = (
                f"{CSRF_COOKIE}={state['csrf_token']}; Path=/; HttpOnly; SameSite=Strict"
            ).encode()
            send = _with_headers(send, [(b"set-cookie", cookie)])
        await self.app(scope, receive, send)

    def _refusal(self, request: Request) -> Response | None:
        """The response refusing the request before it reaches a route, if any."""
        rules = self.security
        path = request.url.path
        api = is_api(path)
        mutating = request.method not in SAFE_METHODS
        if rules.allowed_hosts is not None:
            host = host_name(request.headers.get("host", ""))
            if host not in rules.allowed_hosts:
                return self._deny(
                    request,
                    api,
                    HttpError(
                        400, "bad_host", f"this server does not answer for the host {host!r}"
                    ),
                )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > rules.max_body_bytes:
            return self._deny(request, api, BodyTooLarge(rules.max_body_bytes))
        public = path in PUBLIC_PATHS or path.startswith("/static/")
        if not public and not rules.authenticated(request):
            if api:
                return self._deny(
                    request,
                    api,
                    HttpError(
                        401,
                        "unauthorized",
                        "send the dashboard token: Authorization: Bearer <token>",
                        {"WWW-Authenticate": 'Bearer realm="duratask"'},
                    ),
                )
            if request.method in SAFE_METHODS:
                target = path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
            return self._deny(request, api, HttpError(403, "unauthorized", "log in first"))
        if mutating and rules.read_only and path not in LOGIN_PATHS:
            return self._deny(
                request,
                api,
                HttpError(403, "read_only", "the dashboard is read-only: actions are switched off"),
            )
        if api and mutating and not is_json(request.headers.get("content-type", "")):
            return self._deny(
                request,
                api,
                HttpError(
                    415,
                    "unsupported_media_type",
                    "send Content-Type: application/json with every POST and DELETE under /api/ "
                    "(an empty body is fine)",
                ),
            )
        return None

    def _deny(self, request: Request, api: bool, error: HttpError) -> Response:
        if api:
            return JSONResponse(error_body(error), status_code=error.status, headers=error.headers)
        titles = {400: "Bad request", 403: "Forbidden", 413: "Too large"}
        return self.page_error(
            request, error.status, titles.get(error.status, "Refused"), error.message
        )


def _csrf_ok(body: bytes, cookie_token: str) -> bool:
    if not cookie_token:
        return False
    fields = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    sent = [value for key, value in fields if key == CSRF_FIELD]
    return len(sent) == 1 and hmac.compare_digest(sent[0].encode(), cookie_token.encode())


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _limited(receive: Receive, limit: int) -> Receive:
    size = 0

    async def limited() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise BodyTooLarge(limit)
        return message

    return limited


def _with_headers(send: Send, headers: list[tuple[bytes, bytes]]) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *headers]}
        await send(message)

    return sender
