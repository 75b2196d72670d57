"""Azurite, the Azure Storage emulator, for the Azure store's tests: started once per test
session on free loopback ports (in memory, nothing on disk) and stopped at the end.

``make azurite`` installs it into ``.azurite/`` (the npm package). Without it the Azure
tests are skipped with a warning in the summary, or fail when
``DURATASK_REQUIRE_AZURITE=1`` (as in CI).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]
LOCAL_AZURITE = ROOT / ".azurite" / "node_modules" / ".bin" / "azurite"


@dataclass
class Azurite:
    """A running emulator: its process and ports."""

    process: subprocess.Popen[bytes]
    blob: int
    queue: int
    table: int
    location: Path | None = None

    def url(self, hub: str, partitions: int | None = None) -> str:
        """The ``azure://`` URL of task hub ``hub`` on this emulator."""
        extra = f"&partitions={partitions}" if partitions else ""
        return (
            f"azure://devstoreaccount1/{hub}?blob_port={self.blob}&queue_port={self.queue}"
            f"&table_port={self.table}{extra}"
        )

    def connection_string(self) -> str:
        """A connection string for Microsoft's own clients to reach this emulator."""
        from duratask.backends.azure._target import emulator_connection_string

        return emulator_connection_string("127.0.0.1", self.blob, self.queue, self.table)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


_running: list[Azurite] = []
_problem: list[str] = []


def executable() -> str | None:
    """The Azurite command: the project's own install, else one on PATH."""
    if LOCAL_AZURITE.exists():
        return str(LOCAL_AZURITE)
    return shutil.which("azurite")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    location: Path | None = None, ports: tuple[int, int, int] | None = None, timeout: float = 30
) -> Azurite:
    """Start an Azurite (in memory, or keeping its data in ``location``); raises
    RuntimeError if it does not listen within ``timeout`` seconds."""
    command = executable()
    if command is None:
        raise RuntimeError("azurite is not installed (make azurite)")
    blob, queue, table = ports or (free_port(), free_port(), free_port())
    args = [command, "--silent", "--skipApiVersionCheck", "--loose", "--disableProductStyleUrl"]
    args += ["--location", str(location)] if location else ["--inMemoryPersistence"]
    for service, port in (("blob", blob), ("queue", queue), ("table", table)):
        args += [f"--{service}Host", "127.0.0.1", f"--{service}Port", str(port)]
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=location or ROOT,
        preexec_fn=_die_with_parent,
    )
    azurite = Azurite(process, blob, queue, table, location)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"azurite exited with {process.returncode}: {err.strip()}")
        if all(_listening(port) for port in (blob, queue, table)):
            return azurite
        time.sleep(0.1)
    azurite.stop()
    raise RuntimeError(f"azurite did not listen within {timeout} s")


def _die_with_parent() -> None:
    """In the child: be killed when the test process dies, however it dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def require_azurite() -> Azurite:
    """The session's Azurite, started on first use; skips the test when it cannot run (fails
    it under ``DURATASK_REQUIRE_AZURITE=1``)."""
    if not _running and not _problem:
        try:
            import azure.data.tables  # noqa: F401

            azurite = start()
        except (ImportError, RuntimeError, OSError) as exc:
            _problem.append(" ".join(f"{type(exc).__name__}: {exc}".split()))
        else:
            _running.append(azurite)
            atexit.register(azurite.stop)
    if _problem:
        why = f"Azurite unavailable ({_problem[0]})"
        if os.environ.get("DURATASK_REQUIRE_AZURITE") == "1":
            pytest.fail(f"{why}; DURATASK_REQUIRE_AZURITE=1 forbids skipping", pytrace=False)
        pytest.skip(f"{why}; run make azurite")
    return _running[0]


def problem() -> str | None:
    """Why Azurite could not be used this session, if it could not."""
    return _problem[0] if _problem else None


def warn_in_summary(terminalreporter: Any, tests: str) -> None:
    """Say in pytest's summary that ``tests`` were skipped (or failed, as in CI) for want of
    Azurite, when they were."""
    if not _problem:
        return
    required = os.environ.get("DURATASK_REQUIRE_AZURITE") == "1"
    terminalreporter.write_line(
        f"WARNING: {tests} {'FAILED' if required else 'SKIPPED'}: "
        f"Azurite unavailable ({_problem[0]}); run make azurite",
        red=True,
        bold=True,
    )


def stop_all() -> None:
    while _running:
        _running.pop().stop()


def new_hub() -> str:
    """A fresh task hub name."""
    return f"t{uuid.uuid4().hex[:16]}"
