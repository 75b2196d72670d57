"""Dashboard hardening: failed logins are rate-limited, sessions expire and their cookies are
hardened, and a forged Host header is never echoed into URLs or redirects."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette

from duratask.cli.main import main
from duratask.dashboard import bind_socket, build_server, create_app
from duratask.dashboard.security import CSRF_COOKIE, SESSION_COOKIE
from tests.conformance.e2e_hub import wait_until
from tests.dashboard import workflows
from tests.dashboard.conftest import JSON, Hub, csrf_token

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "evil.example"


class FakeTime:
    """A wall clock (seconds since the epoch) that moves only when told."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@contextlib.asynccontextmanager
async def browser(
    app: Starlette, *, address: str = "127.0.0.1", base_url: str = "http://127.0.0.1:8233"
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``app``, connecting from ``address``."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as web:
        yield web


async def login(web: httpx.AsyncClient, token: str, csrf: str | None = None) -> httpx.Response:
    if csrf is None:
        csrf = csrf_token((await web.get("/login")).text)
    return await web.post("/login", data={"csrf_token": csrf, "token": token, "next": "/"})


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """The Set-Cookie headers of a response, by cookie name."""
    return {header.split("=", 1)[0]: header for header in response.headers.get_list("set-cookie")}


# -- B1: failed logins are rate-limited per client address ---------------------------------------


async def test_two_hundred_wrong_logins_are_mostly_refused_untried(hub: Hub) -> None:
    clock = FakeTime()
    app = create_app(hub.client, token=TOKEN, clock=clock)
    async with browser(app) as web, browser(app, address="10.1.2.3") as other:
        csrf = csrf_token((await web.get("/login")).text)
        statuses = [(await login(web, f"guess-{n}", csrf)).status_code for n in range(200)]
        # Five free attempts, a sixth that starts the back-off, then nothing more is tried.
        assert statuses[:6] == [401] * 6
        assert statuses[6:] == [429] * 194
        refused = await login(web, f"guess-{TOKEN}", csrf)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert "wait 1 s" in refused.text
        # While it must wait, even the right token is not tried (no oracle), on pages or API.
        assert (await login(web, TOKEN, csrf)).status_code == 429
        api = await web.get("/api/counts", headers=BEARER)
        assert api.status_code == 429 and api.json()["error"]["type"] == "too_many_attempts"
        assert api.headers["retry-after"] == "1"
        # Another address is not held back by this one.
        assert (await login(other, TOKEN)).status_code == 303

        # The wait doubles with each further failure...
        clock.advance(1)
        assert (await login(web, "guess-again", csrf)).status_code == 401
        assert (await login(web, TOKEN, csrf)).headers["retry-after"] == "2"
        clock.advance(2)
        # ...and the right token, once tried, logs in and forgets the failures.
        assert (await login(web, TOKEN, csrf)).status_code == 303
        assert (await login(web, "one-slip", csrf)).status_code == 401
        assert (await login(web, "two-slips", csrf)).status_code == 401


async def test_wrong_bearer_tokens_are_rate_limited_too(hub: Hub) -> None:
    clock = FakeTime()
    app = create_app(hub.client, token=TOKEN, clock=clock)
    async with browser(app) as web:
        statuses = [
            (
                await web.get("/api/counts", headers={"Authorization": f"Bearer guess-{n}"})
            ).status_code
            for n in range(200)
        ]
        assert statuses[:6] == [401] * 6 and statuses[6:] == [429] * 194
        assert (await web.get("/api/counts", headers=BEARER)).status_code == 429
        clock.advance(1)
        assert (await web.get("/api/counts", headers=BEARER)).status_code == 200
        # A request without credentials is no login attempt: it is neither counted nor held.
        for _ in range(20):
            assert (await web.get("/api/counts")).status_code == 401
        assert (await web.get("/api/counts", headers=BEARER)).status_code == 200


# -- B2: sessions expire; cookies are HttpOnly, SameSite=Strict, Secure over TLS -----------------


async def test_a_session_expires_and_cannot_be_forged(hub: Hub) -> None:
    clock = FakeTime()
    app = create_app(hub.client, token=TOKEN, session_lifetime=timedelta(hours=1), clock=clock)
    async with browser(app) as web:
        response = await login(web, TOKEN)
        assert response.status_code == 303
        cookie = set_cookies(response)[SESSION_COOKIE]
        for attribute in ("HttpOnly", "SameSite=Strict", "Max-Age=3600", "Path=/"):
            assert attribute.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http, no https public URL
        value = web.cookies[SESSION_COOKIE]
        assert TOKEN not in value
        assert (await web.get("/api/counts")).status_code == 200

        clock.advance(3599)
        assert (await web.get("/instances")).status_code == 200
        clock.advance(2)  # past the hour: the same cookie no longer works
        assert (await web.get("/api/counts")).status_code == 401
        expired = await web.get("/instances")
        assert expired.status_code == 303 and expired.headers["location"].startswith("/login")

        # Moving the signed issue time forward is refused...
        version, _issued, signature = value.split(".")
        web.cookies.set(SESSION_COOKIE, f"{version}.{int(clock())}.{signature}")
        assert (await web.get("/api/counts")).status_code == 401
        # ...and so is the old fixed cookie, an HMAC of the token that never expired.
        old = hmac.new(TOKEN.encode(), b"duratask-dashboard-session", hashlib.sha256).hexdigest()
        web.cookies.set(SESSION_COOKIE, old)
        assert (await web.get("/api/counts")).status_code == 401

        web.cookies.delete(SESSION_COOKIE)
        assert (await login(web, TOKEN)).status_code == 303  # a new login, a new session
        assert (await web.get("/api/counts")).status_code == 200


async def test_the_default_session_lasts_twelve_hours(hub: Hub) -> None:
    clock = FakeTime()
    async with browser(create_app(hub.client, token=TOKEN, clock=clock)) as web:
        response = await login(web, TOKEN)
        assert "max-age=43200" in set_cookies(response)[SESSION_COOKIE].lower()
        clock.advance(12 * 3600 - 1)
        assert (await web.get("/api/counts")).status_code == 200
        clock.advance(1)
        assert (await web.get("/api/counts")).status_code == 401


@pytest.mark.parametrize(
    ("options", "base_url"),
    [
        ({}, "https://127.0.0.1:8233"),  # served over TLS
        ({"public_url": "https://duratask.example.com"}, "http://127.0.0.1:8233"),  # TLS proxy
    ],
    ids=["tls", "https-public-url"],
)
async def test_cookies_are_secure_behind_tls(
    hub: Hub, options: dict[str, Any], base_url: str
) -> None:
    app = create_app(hub.client, token=TOKEN, **options)
    async with browser(app, base_url=base_url) as web:
        page = await web.get("/login")
        csrf_cookie = set_cookies(page)[CSRF_COOKIE]
        assert "; Secure" in csrf_cookie and "HttpOnly" in csrf_cookie
        csrf = csrf_token(page.text)
        response = await web.post(
            "/login",
            data={"csrf_token": csrf, "token": TOKEN, "next": "/"},
            headers={"Cookie": f"{CSRF_COOKIE}={csrf}"},
        )
        assert response.status_code == 303, response.text
        session = set_cookies(response)[SESSION_COOKIE]
        assert "secure" in session.lower() and "samesite=strict" in session.lower()
        assert "httponly" in session.lower()


async def test_an_unusable_public_url_is_refused() -> None:
    for url in ("ftp://example.com", "example.com", "https://example.com/sub/path", "https://"):
        with pytest.raises(ValueError, match="public URL"):
            create_app("memory://x", public_url=url)
        result = CliRunner().invoke(
            main, ["dashboard", "--store", "memory://x", "--port", "0", "--public-url", url]
        )
        assert result.exit_code == 2 and "public URL" in result.output, result.output


# -- B3: a forged Host header is never echoed ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "origin"),
    [
        ({}, "http://127.0.0.1:8233"),  # the address the server is bound to
        ({"token": TOKEN}, "http://127.0.0.1:8233"),  # beyond loopback: a token, any Host
        ({"token": TOKEN, "public_url": "https://dash.example.com"}, "https://dash.example.com"),
    ],
    ids=["bound-address", "token", "public-url"],
)
async def test_a_forged_host_is_never_echoed(
    hub: Hub, options: dict[str, Any], origin: str
) -> None:
    app = create_app(hub.client, **options)
    forged = {"Host": EVIL, **(BEARER if "token" in options else {}), **JSON}
    async with browser(app) as web:
        started = await web.post("/api/orchestrations/wait_event?instance_id=h-1", headers=forged)
        assert started.status_code == 202, started.text
        assert started.headers["location"] == f"{origin}/api/instances/h-1"
        urls = started.json()
        assert all(url.startswith(f"{origin}/") for key, url in urls.items() if key != "id")
        assert urls["dashboardUri"] == f"{origin}/instances/h-1"
        running = await web.get("/api/instances/h-1", headers=forged)
        assert running.status_code == 202
        assert running.headers["location"] == f"{origin}/api/instances/h-1"
        await hub.client.raise_orchestration_event("h-1", "go", "done")
        await hub.client.wait_for_orchestration_completion("h-1", timeout=20)
        restarted = await web.post("/api/instances/h-1/restart", headers=forged)
        assert restarted.headers["location"] == f"{origin}/api/instances/h-1"

        # No redirect to an absolute URL built from the Host (a trailing slash is a 404).
        for path in ("/login/", "/instances/h-1/", "/static", "/openapi.json/", "/"):
            response = await web.get(path, headers=forged)
            location = response.headers.get("location", "")
            assert not location.startswith("http"), (path, location)
            assert EVIL not in response.text and EVIL not in location, path


async def test_loopback_without_a_token_answers_only_loopback_hosts(hub: Hub) -> None:
    app = create_app(hub.client, allowed_hosts=["127.0.0.1", "localhost", "::1"])
    async with browser(app) as web:
        response = await web.get("/api/counts", headers={"Host": EVIL})
        assert response.status_code == 400 and response.json()["error"]["type"] == "bad_host"
        assert (await web.get("/api/counts", headers={"Host": "localhost:8233"})).status_code == 200


async def test_a_real_server_names_its_bound_address_not_the_host_header(hub: Hub) -> None:
    app = create_app(hub.client, token=TOKEN)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = build_server(app, host="127.0.0.1", port=port, log_level="warning")
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:

        async def started() -> bool:
            return bool(server.started)

        await wait_until(started, what="the dashboard to listen")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as web:
            response = await web.post(
                f"/api/orchestrations/{workflows.echo.__name__}?instance_id=real-1",
                headers={"Host": EVIL, **BEARER, **JSON},
                json="hi",
            )
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"http://127.0.0.1:{port}/api/instances/real-1"
        assert EVIL not in response.text
    finally:
        server.should_exit = True
        await serving
        sock.close()
