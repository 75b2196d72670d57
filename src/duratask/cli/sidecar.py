"""``duratask serve``: the Durable Task gRPC sidecar, so Microsoft's SDKs run on a task hub."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import click

from duratask.cli.errors import usage_error
from duratask.cli.store import STORE_ENV, mask_url, require_store_url

TOKEN_ENV = "DURATASK_SERVE_TOKEN"


@click.command("serve")
@click.option("--store", envvar=STORE_ENV, help=f"Task hub store URL (or set {STORE_ENV}).")
@click.option(
    "--host",
    default="localhost",
    show_default=True,
    help="Address to listen on (localhost: IPv4 and IPv6 loopback).",
)
@click.option(
    "--port", default=4001, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help=f"Require this token as 'authorization: Bearer <token>' metadata (or set {TOKEN_ENV}). "
    "Needed to listen on anything but loopback.",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PEM certificate chain: serve TLS (with --tls-key).",
)
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM private key.")
@click.option(
    "--max-deliveries",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Give up work an SDK worker was handed this many times without completing it "
    "(its worker died or hung each time): the activity's task or the instance fails with "
    "PoisonWorkError.",
)
def serve(
    store: str | None,
    host: str,
    port: int,
    token: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    max_deliveries: int,
) -> None:
    """Serve the Durable Task sidecar protocol (TaskHubSidecarService) on a task hub.

    Microsoft's Durable Task SDKs (Python, JavaScript, .NET, Java, Go) connect to it as to
    any sidecar, e.g. TaskHubGrpcClient(host_address="localhost:4001"), and run on the hub's
    SQLite or PostgreSQL store beside duratask's own workers.
    """
    try:
        from duratask.serve import SidecarConfigError, SidecarServer
        from duratask.serve.auth import read_tls
    except ImportError as exc:
        raise usage_error(
            f"'duratask serve' needs the module {exc.name!r}: pip install 'duratask[serve]'"
        ) from None
    url = require_store_url(store)
    try:
        tls = read_tls(tls_cert, tls_key)
        server = SidecarServer(
            url,
            host=host,
            port=port,
            token=token or None,
            tls=tls,
            max_deliveries=max_deliveries,
        )
    except SidecarConfigError as exc:
        raise usage_error(str(exc)) from None

    async def run() -> None:
        try:
            await server.start()
        except OSError as exc:
            raise usage_error(str(exc)) from None
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stopping.set)
        scheme = "TLS" if tls else "plain text"
        click.echo(
            f"duratask serve: {mask_url(url)} on {server.address} ({scheme}"
            f"{', token required' if token else ''}; Ctrl-C to stop)",
            err=True,
        )
        waiting = asyncio.create_task(server.wait())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({waiting, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        await server.stop()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting

    asyncio.run(run())
    click.echo("duratask serve: stopped", err=True)


__all__ = ["serve"]
