"""Who may do what: token login, sessions, CSRF on forms, read-only mode, Host checks,
body limits, and the one origin the app calls itself by.

One ASGI middleware guards every request before any route runs:

- with a token, the API wants ``Authorization: Bearer <token>`` (or the session cookie the
  login form sets) and pages want the session cookie, otherwise they send you to ``/login``;
- a session cookie carries its signed issue time and expires (12 hours by default); it is
  HttpOnly, SameSite=Strict, and Secure when the app is served over TLS or configured with
  an https public URL;
- failed logins (and wrong bearer tokens) are counted per client address: after a few, each
  further attempt must wait twice as long as the last (429 with Retry-After);
- every POST of a page form must carry the per-session CSRF token (a cookie plus a hidden
  field with the same value), or it is refused with 403;
- every POST and DELETE under ``/api/`` must send ``Content-Type: application/json``: a
  browser cannot send that to another site without a CORS preflight, which this server never
  approves, so another web page cannot trigger them (with or without a token);
- in read-only mode every POST and DELETE is refused with 403 (login and logout aside);
- with ``allowed_hosts``, a request naming another Host is refused (DNS rebinding);
- request bodies over ``max_body_bytes`` are refused with 413;
- the request's Host header is then replaced by the app's own origin (its configured public
  URL, else the address the server is bound to), so nothing the app writes (management URLs,
  ``Location`` headers) ever echoes a Host that a client chose.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from duratask.dashboard.errors import HttpError, error_body
from duratask.dashboard.responses import SafeJSONResponse

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
Clock = Callable[[], float]

DEFAULT_SESSION_LIFETIME = 12 * 3600.0  # seconds
SESSION_CLOCK_SKEW = 60.0  # seconds a session's issue time may lie ahead of this clock
_SESSION_VERSION = "v1"


def parse_public_url(url: str | None) -> tuple[str, str] | None:
    """(scheme, host[:port]) of the URL the dashboard is reached at; ValueError if unusable."""
    if url is None:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"public URL {url!r} must be an absolute http:// or https:// URL, "
            "e.g. https://duratask.example.com"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(
            f"public URL {url!r} must name only a scheme, host and port (no path, query or "
            "user); mount the app under a path with the ASGI root_path instead"
        )
    try:
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError as exc:
        raise ValueError(f"public URL {url!r}: {exc}") from None
    return parts.scheme, parts.netloc.lower()


class LoginLimiter:
    """Failed login attempts per client address, with an exponential back-off.

    The first ``free`` failures cost nothing; each later one blocks the address for
    ``base`` seconds, doubling up to ``maximum``. A success forgets the address, and so does
    a quiet spell of ``forget_after`` seconds. At most ``max_clients`` addresses are
    remembered (the longest quiet are forgotten first).
    """

    def __init__(
        self,
        clock: Clock = time.monotonic,
        *,
        free: int = 5,
        base: float = 1.0,
        maximum: float = 300.0,
        forget_after: float = 900.0,
        max_clients: int = 10_000,
    ) -> None:
        self.clock = clock
        self.free = free
        self.base = base
        self.maximum = maximum
        self.forget_after = max(forget_after, maximum)
        self.max_clients = max_clients
        # address -> (failures, time of the last failure, blocked until)
        self._failures: OrderedDict[str, tuple[int, float, float]] = OrderedDict()

    def retry_after(self, client: str) -> float | None:
        """Seconds ``client`` must still wait before another attempt, or None."""
        entry = self._entry(client)
        if entry is None:
            return None
        wait = entry[2] - self.clock()
        return wait if wait > 0 else None

    def failed(self, client: str) -> None:
        """Count a failed attempt of ``client``."""
        now = self.clock()
        entry = self._entry(client)
        failures = (entry[0] if entry else 0) + 1
        blocked_until = now
        if failures > self.free:
            blocked_until = now + min(self.base * 2 ** (failures - self.free - 1), self.maximum)
        self._failures[client] = (failures, now, blocked_until)
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget the failures of ``client``."""
        self._failures.pop(client, None)

    def _entry(self, client: str) -> tuple[int, float, float] | None:
        entry = self._failures.get(client)
        if entry is not None and self.clock() - entry[1] > self.forget_after:
            del self._failures[client]
            return None
        return entry


def client_address(conn: HTTPConnection) -> str:
    """The address a request comes from (what failed logins are counted by)."""
    return conn.client.host if conn.client is not None else "unknown"


@dataclass(frozen=True, slots=True)
class Security:
    """The access rules of one dashboard app."""

    token: str | None = None
    read_only: bool = False
    allowed_hosts: frozenset[str] | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    public_url: str | None = None
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    clock: Clock = time.time
    limiter: LoginLimiter = field(default_factory=LoginLimiter)

    def __post_init__(self) -> None:
        parse_public_url(self.public_url)
        if not self.session_lifetime > 0:
            raise ValueError(f"session_lifetime must be positive, got {self.session_lifetime!r}")

    @property
    def origin(self) -> tuple[str, str] | None:
        """The configured (scheme, host[:port]), if a public URL is given."""
        return parse_public_url(self.public_url)

    def _signature(self, issued: int) -> str:
        assert self.token is not None
        key = hmac.new(self.token.encode(), b"duratask-dashboard-session", hashlib.sha256)
        message = f"{_SESSION_VERSION}.{issued}".encode()
        return hmac.new(key.digest(), message, hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """A session cookie's value: its issue time, signed with a key derived from the token
        (never the token itself)."""
        issued = int(self.clock())
        return f"{_SESSION_VERSION}.{issued}.{self._signature(issued)}"

    def session_valid(self, value: str) -> bool:
        """Whether ``value`` is a session this app issued that has not expired."""
        if self.token is None:
            return False
        version, _, rest = value.partition(".")
        issued_text, _, signature = rest.partition(".")
        if version != _SESSION_VERSION or not issued_text.isdigit() or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        if not hmac.compare_digest(signature.encode(), self._signature(issued).encode()):
            return False
        age = self.clock() - issued
        return -SESSION_CLOCK_SKEW <= age < self.session_lifetime

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token (constant-time)."""
        return self.token is not None and hmac.compare_digest(
            given.encode("utf-8", "surrogatepass"), self.token.encode()
        )

    def bearer(self, conn: HTTPConnection) -> str | None:
        """The bearer token the request sends, if any."""
        scheme, _, credentials = conn.headers.get("authorization", "").partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" else None

    def authenticated(self, conn: HTTPConnection) -> bool:
        """Whether the request carries the bearer token or a live session (or none is needed)."""
        if self.token is None:
            return True
        given = self.bearer(conn)
        if given is not None and self.token_matches(given):
            return True
        return self.session_valid(conn.cookies.get(SESSION_COOKIE, ""))

    def secure_cookies(self, conn: HTTPConnection) -> bool:
        """Whether cookies must be Secure: when served over TLS or at an https public URL
        (by the time routes run, the request's scheme is the public URL's)."""
        return conn.url.scheme == "https"


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
        # From here on the app sees its own origin, never the Host the client sent.
        scope = self._own_origin(scope)
        request = Request(scope, receive)
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
            secure = "; Secure" if self.security.secure_cookies(request) else ""
            cookie = (
                f"{CSRF_COOKIE}={state['csrf_token']}; Path=/; HttpOnly; SameSite=Strict{secure}"
            ).encode()
            send = _with_headers(send, [(b"set-cookie", cookie)])
        await self.app(scope, receive, send)

    def _own_origin(self, scope: Scope) -> Scope:
        """``scope`` with the Host header (and scheme) of the app's own origin: the public URL
        if one is configured, else the address the server is bound to."""
        origin = self.security.origin
        if origin is not None:
            scheme, netloc = origin
        else:
            scheme = scope.get("scheme", "http")
            netloc = _netloc(scope.get("server"), scheme)
        headers = [(k, v) for k, v in scope.get("headers", []) if k != b"host"]
        headers.append((b"host", netloc.encode("ascii", "replace")))
        return {**scope, "headers": headers, "scheme": scheme}

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
        if rules.token is not None and rules.bearer(request) is not None:
            refused = self._bearer_refusal(request, api)
            if refused is not None:
                return refused
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

    def _bearer_refusal(self, request: Request, api: bool) -> Response | None:
        """A request sending a bearer token is a login attempt: 429 while its address must
        wait, and a wrong token counts as a failed attempt (it is then refused with 401)."""
        rules = self.security
        client = client_address(request)
        wait = rules.limiter.retry_after(client)
        if wait is not None:
            return self._deny(request, api, too_many_attempts(wait))
        given = rules.bearer(request)
        if given is not None and not rules.token_matches(given):
            rules.limiter.failed(client)
        return None

    def _deny(self, request: Request, api: bool, error: HttpError) -> Response:
        if api:
            return SafeJSONResponse(
                error_body(error), status_code=error.status, headers=error.headers
            )
        titles = {400: "Bad request", 403: "Forbidden", 413: "Too large", 429: "Too many attempts"}
        page = self.page_error(
            request, error.status, titles.get(error.status, "Refused"), error.message
        )
        page.headers.update(error.headers)
        return page


def too_many_attempts(wait: float) -> HttpError:
    """429: the client's address must wait ``wait`` seconds before trying a token again."""
    seconds = max(1, math.ceil(wait))
    return HttpError(
        429,
        "too_many_attempts",
        f"too many failed login attempts from your address: wait {seconds} s before trying again",
        {"Retry-After": str(seconds)},
    )


def _netloc(server: tuple[str, int | None] | None, scheme: str) -> str:
    """host[:port] of the address the server is bound to (the default port left out)."""
    if not server:
        return "localhost"
    host, port = server[0], server[1]
    shown = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return shown if port is None or port == default else f"{shown}:{port}"


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
