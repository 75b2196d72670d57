"""Crashes with real processes: ``duratask serve`` SIGKILLed mid-run and started again, and
an SDK worker SIGKILLed in the middle of an activity. Nothing is lost; the work a dead
worker held goes to another at once, not after its lease."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import duratask as dt
from duratask import history as h
from tests.serve import sdk_worker_proc
from tests.serve.harness import sdk_client_on, sdk_worker_on, serving, wait_until

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[2]
STEPS = 30  # long enough that the kill lands mid-run, however fast the steps go


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_serve(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "duratask.cli", "serve", "--store", url, "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=20, what="duratask serve to listen")
    return proc


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_serve_killed_mid_run_and_restarted_loses_nothing(
    hub_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    procs.append(start_serve(hub_url, port, log))
    address = f"localhost:{port}"
    with (
        dt.TaskHubClient(hub_url) as client,
        sdk_worker_on(address, configure=sdk_worker_proc.register),
    ):
        sdk = sdk_client_on(address)
        ids = [sdk.schedule_new_orchestration("counting", input=STEPS) for _ in range(6)]
        sdk.close()

        def progressed() -> bool:
            return (
                sum(
                    isinstance(e, h.TaskCompleted)
                    for iid in ids
                    for e in client.get_orchestration_history(iid)
                )
                >= 6
            )

        wait_until(progressed, what="some steps to complete")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        unfinished = [
            iid
            for iid in ids
            if not client.get_orchestration_state(iid).runtime_status.is_terminal  # type: ignore[union-attr]
        ]
        assert unfinished, "the kill came too late to test anything"
        procs.append(start_serve(hub_url, port, log))
        # The SDK worker reconnects by itself; every instance ends with the right output.
        for iid in ids:
            state = client.wait_for_orchestration_completion(iid, timeout=60)
            assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
            assert state.output == STEPS
            history = client.get_orchestration_history(iid)
            done = [e.task_scheduled_id for e in history if isinstance(e, h.TaskCompleted)]
            assert sorted(done) == sorted(set(done)) and len(done) == STEPS


def test_a_worker_killed_mid_activity_hands_it_over_at_once(
    hub_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    with serving(hub_url) as server, dt.TaskHubClient(hub_url) as client:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        worker = subprocess.Popen(
            [sys.executable, sdk_worker_proc.__file__, server.address, str(tmp_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(worker)
        sdk = sdk_client_on(server.address)
        iid = sdk.schedule_new_orchestration("slow_flow", input="job")
        sdk.close()
        wait_until((tmp_path / "job.started").exists, what="the activity to start")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        started = time.monotonic()
        with sdk_worker_on(server.address, configure=sdk_worker_proc.register):
            state = client.wait_for_orchestration_completion(iid, timeout=30)
        assert state.output == "done job"
        # Handed back when the stream dropped, not when the 30 s lease ran out.
        assert time.monotonic() - started < 15


def test_an_activity_that_kills_its_sdk_worker_is_given_up_after_max_deliveries(
    hub_url: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Each death is a delivery (the stream ended with the activity given out), so the
    killer is not handed out forever: its task fails with PoisonWorkError."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start_worker(address: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, sdk_worker_proc.__file__, address, str(tmp_path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    with serving(hub_url, max_deliveries=2) as server, dt.TaskHubClient(hub_url) as client:
        iid = client.schedule_new_orchestration("calls_a_killer", input="poison")
        worker = start_worker(server.address)
        deaths = 0
        deadline = time.monotonic() + 60
        while True:
            state = client.get_orchestration_state(iid)
            if state is not None and state.runtime_status.is_terminal:
                break
            assert time.monotonic() < deadline, f"not finished; {deaths} worker deaths"
            if worker.poll() is not None:
                deaths += 1
                worker = start_worker(server.address)
            time.sleep(0.05)  # a supervisor's poll interval
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED
        assert state.output is not None and state.output.startswith("gave up: PoisonWorkError")
        assert "'kills' was delivered 3 times" in state.output
        runs = (tmp_path / "kills.runs").read_text().split()
        assert runs == ["poison", "poison"] and deaths == 2
