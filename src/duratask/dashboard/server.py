"""Running the dashboard with uvicorn, bound to loopback unless a token protects it."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from duratask.client import AsyncTaskHubClient
from duratask.dashboard.app import create_app
from duratask.dashboard.security import DEFAULT_SESSION_LIFETIME, parse_public_url

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8233
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class DashboardConfigError(ValueError):
    """The dashboard cannot be served as asked (e.g. an exposed host without a token)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if not is_loopback(host) and not token:
        raise DashboardConfigError(
            f"refusing to serve the dashboard on {host!r} without a token: anyone who can "
            "reach it could run actions on your task hub. Pass --token (or set "
            "DURATASK_DASHBOARD_TOKEN), or bind to 127.0.0.1."
        )


def check_public_url(url: str | None) -> None:
    """Refuse a public URL the app could not use (not http(s), or with a path)."""
    try:
        parse_public_url(url)
    except ValueError as exc:
        raise DashboardConfigError(str(exc)) from None


def loopback_hosts(host: str) -> list[str]:
    """Host header names to accept when serving on loopback without a token."""
    return sorted(LOOPBACK_NAMES | {host.strip("[]").lower()})


class DashboardServer(uvicorn.Server):
    """A uvicorn server that stops on Ctrl-C without raising it again afterwards.

    (uvicorn re-raises the signal once it has shut down; a process running a worker beside
    the dashboard needs to finish stopping the worker first.) ``ready`` is set once the
    server accepts connections, for callers running it in another thread.

    Attributes:
        ready: Set once the server accepts connections.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening as uvicorn does, then set ``ready``."""
        await super().startup(sockets=sockets)
        if self.started:
            self.ready.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Handle SIGINT and SIGTERM while the server runs (in the main thread only) and
        restore the previous handlers afterwards, without raising the signal again."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)

        def on_signal(sig: int, frame: FrameType | None) -> None:
            self.handle_exit(sig, frame)

        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Ask the server to shut down gracefully; a second Ctrl-C forces it."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0 picks a free one).

    Binding before the server starts turns "address in use" into an ``OSError`` here rather
    than an exit from inside uvicorn.
    """
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def build_server(
    app: Starlette,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "info",
    access_log: bool = False,
) -> DashboardServer:
    """A uvicorn server for ``app`` (start it with ``await server.serve()``)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        lifespan="on",
        server_header=False,
    )
    return DashboardServer(config)


def serve(
    client: AsyncTaskHubClient | str,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    read_only: bool = False,
    token: str | None = None,
    log_level: str = "info",
    public_url: str | None = None,
    session_lifetime: float = DEFAULT_SESSION_LIFETIME,
) -> None:
    """Serve the dashboard until Ctrl-C.

    Listening on anything but loopback needs a ``token`` (:class:`DashboardConfigError`
    otherwise). Without a token, only requests naming a loopback host are answered.
    ``public_url`` and ``session_lifetime`` (seconds) are as :func:`create_app` takes them.
    """
    check_bind(host, token)
    check_public_url(public_url)
    allowed = None if token else loopback_hosts(host)
    app = create_app(
        client,
        read_only=read_only,
        token=token,
        allowed_hosts=allowed,
        public_url=public_url,
        session_lifetime=session_lifetime,
    )
    server = build_server(app, host=host, port=port, log_level=log_level)
    server.run(sockets=[bind_socket(host, port)])
