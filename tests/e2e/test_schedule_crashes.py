"""Schedules with real worker processes: every slot runs exactly once while the worker that
fires dies by SIGKILL between starting a run and recording it, and two or three workers race
for the rest, on one SQLite file and on one PostgreSQL hub.

The schedule fires every second for six seconds. The first worker is alone and kills
itself right after it created the first run; the others start then, wait for its claim to
expire (two seconds), take over, catch the missed slots up, and race for the next ones. At
the end every slot has exactly one run, each run completed, and the schedule counted each
slot once. Waits poll conditions with deadlines.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import duratask as dt
from duratask._schedule_times import SlotTimes, run_instance_id

from ..conformance.conftest import POSTGRES_URL, drop_schema, new_schema, require_postgres

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

SCRIPT = Path(__file__).with_name("schedule_worker.py")
SLOTS = 6


def start(url: str, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    log = workdir / f"worker-{uuid.uuid4().hex[:6]}.log"
    command = [sys.executable, str(SCRIPT), "--store", url, "--workdir", str(workdir), *extra]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def logs(workdir: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(workdir.glob("worker-*.log")))


def wait_for(condition: Callable[[], bool], timeout: float, what: str, workdir: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{logs(workdir)}")
        time.sleep(0.05)


@pytest.fixture(params=["sqlite", "postgres"])
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    require_postgres()
    schema = new_schema()
    yield f"{POSTGRES_URL}?schema={schema}"
    drop_schema(schema)


@pytest.mark.parametrize("survivors", [1, 2])
def test_every_slot_runs_exactly_once_when_the_firing_worker_is_killed(
    hub_url: str, tmp_path: Path, survivors: int
) -> None:
    procs: list[subprocess.Popen[bytes]] = []
    with dt.TaskHubClient(hub_url) as client:
        try:
            first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=4)
            spec = dt.ScheduleSpec(
                intervals=[dt.Interval(timedelta(seconds=1))],
                start_at=first,
                end_at=first + timedelta(seconds=SLOTS - 1),
            )
            client.create_schedule("tick", "tick", spec, input=1, overlap=dt.Overlap.ALLOW_ALL)
            doomed = start(hub_url, tmp_path, "--kill-at-run", "1")
            procs.append(doomed)
            wait_for(lambda: doomed.poll() is not None, 30, "the firing worker to die", tmp_path)
            assert doomed.returncode == -signal.SIGKILL, logs(tmp_path)
            (killed,) = tmp_path.glob("killed-*")
            assert killed.read_text() == run_instance_id("tick", first)
            procs += [start(hub_url, tmp_path) for _ in range(survivors)]

            def finished() -> bool:
                return client.describe_schedule("tick").info.finished

            wait_for(finished, 60, "the schedule to finish", tmp_path)
            expected = [
                run_instance_id("tick", s)
                for s in SlotTimes(spec).between(first, first + timedelta(seconds=SLOTS))
            ]
            assert len(expected) == SLOTS

            def all_completed() -> bool:
                page = client.query_orchestrations(instance_id_prefix="tick@", page_size=100)
                return all(
                    s.runtime_status is dt.OrchestrationStatus.COMPLETED for s in page.states
                )

            wait_for(all_completed, 30, "every run to complete", tmp_path)
            page = client.query_orchestrations(instance_id_prefix="tick@", page_size=100)
            assert sorted(s.instance_id for s in page.states) == expected
            info = client.describe_schedule("tick").info
            assert info.runs == SLOTS and info.skipped == 0, logs(tmp_path)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
                if proc.poll() is None:
                    proc.kill()
