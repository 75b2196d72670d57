"""Crash recovery with real processes: workers are SIGKILLed mid-activity and mid-episode.

Each test runs worker subprocesses (``crash_worker.py``) on one SQLite task hub in
``tmp_path`` and drives them from this process with a :class:`duratask.TaskHubClient`. After
a worker is killed, a new one takes over once the dead worker's leases expire (1 s here), and
every instance must finish with the right output and a well-formed history: nothing lost,
nothing committed twice. Activities may run again (at least once), and the tests check that
the one interrupted activity did.

No test sleeps to synchronise: it waits for conditions (files, exit codes, instance statuses)
with deadlines. The only deliberate delays are the random kill moments, spent waiting on the
worker process (which must not exit meanwhile).
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask import history as h

from . import crash_app
from .crash_app import Job

pytestmark = pytest.mark.timeout(90)

WORKER_SCRIPT = Path(__file__).with_name("crash_worker.py")
LEASE_SECONDS = 1.0
STARTUP_TIMEOUT = 20.0
POLL = 0.02


# -- history checks -------------------------------------------------------------------------------
_SCHEDULING = (h.TaskScheduled, h.TimerCreated, h.SubOrchestrationInstanceCreated, h.EventSent)
_COMPLETES: dict[type[h.HistoryEvent], type[h.HistoryEvent]] = {
    h.TaskCompleted: h.TaskScheduled,
    h.TaskFailed: h.TaskScheduled,
    h.TimerFired: h.TimerCreated,
    h.SubOrchestrationInstanceCompleted: h.SubOrchestrationInstanceCreated,
    h.SubOrchestrationInstanceFailed: h.SubOrchestrationInstanceCreated,
}


def assert_history_valid(events: Sequence[h.HistoryEvent], *, finished: bool = True) -> None:
    """Fail unless ``events`` is one well-formed execution, with nothing recorded twice.

    - exactly one ExecutionStarted, in the first episode; at most one ExecutionCompleted (one
      if ``finished``), and only an OrchestratorCompleted may follow it;
    - OrchestratorStarted / OrchestratorCompleted alternate, starting with a start and ending
      with a completion, and every other event lies inside such an episode;
    - scheduling events (TaskScheduled, TimerCreated, SubOrchestrationInstanceCreated,
      EventSent) have distinct, non-negative event ids;
    - each completion (TaskCompleted/Failed, TimerFired, SubOrchestrationInstanceCompleted/
      Failed) refers to an earlier scheduling event of the matching kind, and each scheduled id
      is completed at most once.
    """
    kinds = [type(e).__name__ for e in events]

    def fail(i: int, problem: str) -> str:
        return f"history event #{i} ({kinds[i]}): {problem}\nhistory: {kinds}"

    assert events, "empty history"
    starts = [i for i, e in enumerate(events) if isinstance(e, h.ExecutionStarted)]
    assert len(starts) == 1, f"{len(starts)} ExecutionStarted events in {kinds}"
    assert starts[0] == 1, fail(starts[0], "ExecutionStarted is not the first event of episode 1")
    ends = [i for i, e in enumerate(events) if isinstance(e, h.ExecutionCompleted)]
    assert len(ends) <= 1, f"{len(ends)} ExecutionCompleted events in {kinds}"
    if finished:
        assert ends, f"no ExecutionCompleted in {kinds}"
    if ends:
        after = kinds[ends[0] + 1 :]
        assert after in ([], ["OrchestratorCompleted"]), fail(ends[0], f"followed by {after}")

    in_episode = False
    for i, event in enumerate(events):
        if isinstance(event, h.OrchestratorStarted):
            assert not in_episode, fail(i, "an episode starts inside another")
            in_episode = True
        elif isinstance(event, h.OrchestratorCompleted):
            assert in_episode, fail(i, "closes no episode")
            in_episode = False
        else:
            assert in_episode, fail(i, "outside any episode")
    assert not in_episode, f"the last episode is not closed: {kinds}"

    scheduled: dict[int, type[h.HistoryEvent]] = {}
    completed: set[int] = set()
    for i, event in enumerate(events):
        if isinstance(event, _SCHEDULING):
            assert event.event_id >= 0, fail(i, f"bad event id {event.event_id}")
            assert event.event_id not in scheduled, fail(i, f"id {event.event_id} reused")
            scheduled[event.event_id] = type(event)
        elif type(event) in _COMPLETES:
            ref = h.result_task_id(event)
            assert ref is not None, fail(i, "a result naming no task")
            wanted = _COMPLETES[type(event)]
            assert scheduled.get(ref) is wanted, fail(i, f"no earlier {wanted.__name__} #{ref}")
            assert ref not in completed, fail(i, f"#{ref} completed twice")
            completed.add(ref)


# -- worker subprocesses --------------------------------------------------------------------------
def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float, hub: Hub) -> Path:
    """Wait until ``path`` exists; fail if ``proc`` exits first or the deadline passes."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {path.name} after {timeout}s\n{hub.worker_logs()}")
        try:
            code = proc.wait(timeout=POLL)  # doubles as the poll interval
        except subprocess.TimeoutExpired:
            continue
        if not path.exists():
            raise AssertionError(
                f"worker {proc.pid} exited ({code}) before {path.name} appeared\n"
                f"{hub.worker_logs()}"
            )
    return path


@dataclass
class Hub:
    """A SQLite task hub in a temporary directory, a client, and the workers started on it."""

    workdir: Path
    client: dt.TaskHubClient
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def db_path(self) -> Path:
        return self.workdir / "hub.db"

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db_path}"  # db_path is absolute: sqlite:////...

    def start_worker(self, mode: str = "normal", *extra: str) -> subprocess.Popen[bytes]:
        """Start a worker subprocess and wait until it is processing work."""
        log = self.workdir / f"worker-{len(self.procs)}-{mode}.log"
        command = [
            sys.executable,
            str(WORKER_SCRIPT),
            "--store",
            self.url,
            "--workdir",
            str(self.workdir),
            "--mode",
            mode,
            "--lease-seconds",
            str(LEASE_SECONDS),
            *extra,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        wait_for_file(self.workdir / f"ready-{proc.pid}", proc, STARTUP_TIMEOUT, self)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop a worker gracefully; it must exit cleanly. A worker still starting has no
        SIGTERM handler yet, so wait until it is ready first."""
        self.wait_ready(proc)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        assert code == 0, f"worker {proc.pid} exited with {code}\n{self.worker_logs()}"

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def worker_logs(self, tail: int = 4000) -> str:
        parts = []
        for log in sorted(self.workdir.glob("worker-*.log")):
            parts.append(f"--- {log.name} ---\n{log.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    # -- outcomes -----------------------------------------------------------------------------
    def wait_all(self, instance_ids: Sequence[str], timeout: float) -> list[dt.OrchestrationState]:
        deadline = time.monotonic() + timeout
        states = []
        for iid in instance_ids:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                states.append(self.client.wait_for_orchestration_completion(iid, remaining))
            except dt.OrchestrationWaitTimeoutError as exc:
                raise AssertionError(f"{exc}\n{self.worker_logs()}") from exc
        return states

    def count_finished(self, instance_ids: Sequence[str]) -> int:
        finished = 0
        for iid in instance_ids:
            state = self.client.get_orchestration_state(iid)
            finished += state is not None and state.runtime_status.is_terminal
        return finished

    def executions(self) -> list[dict[str, Any]]:
        log = self.workdir / crash_app.EXECUTIONS_LOG
        return [json.loads(line) for line in log.read_text().splitlines()]

    def check_histories(self, instance_ids: Sequence[str]) -> dict[str, list[h.HistoryEvent]]:
        """Validate the history of every instance; returns them by instance id."""
        histories = {}
        for iid in instance_ids:
            events = self.client.get_orchestration_history(iid)
            try:
                assert_history_valid(events)
            except AssertionError as exc:
                raise AssertionError(f"instance {iid!r}: {exc}") from exc
            histories[iid] = events
        return histories

    def assert_no_work_left(self) -> None:
        """Nothing waits in the store once every instance is done (read the file directly)."""
        with contextlib.closing(sqlite3.connect(self.db_path)) as conn:
            messages = conn.execute("SELECT event_type, instance_id FROM messages").fetchall()
            activities = conn.execute("SELECT name, instance_id FROM activities").fetchall()
            leased = conn.execute(
                "SELECT instance_id FROM instances WHERE lock_token IS NOT NULL"
            ).fetchall()
        assert (messages, activities, leased) == ([], [], []), (
            f"left behind: messages {messages}, activities {activities}, leases {leased}"
        )


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    client = dt.TaskHubClient(f"sqlite:///{tmp_path / 'hub.db'}")
    hub = Hub(workdir=tmp_path, client=client)
    try:
        yield hub
    finally:
        hub.cleanup()
        client.close()


def scheduled_activities(histories: dict[str, list[h.HistoryEvent]]) -> set[tuple[str, int]]:
    return {
        (iid, e.event_id)
        for iid, events in histories.items()
        for e in events
        if isinstance(e, h.TaskScheduled)
    }


def report(figures: dict[str, Any]) -> None:
    """Print the test's figures (shown with ``pytest -s``)."""
    print(" ".join(f"{k}={v}" for k, v in figures.items()))


# -- the tests ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_in_the_middle_of_an_activity(hub: Hub) -> None:
    began = time.monotonic()
    ids = [
        hub.client.schedule_new_orchestration(crash_app.sequence, input=n, instance_id=f"seq-{n}")
        for n in range(5)
    ]
    a = hub.start_worker("activity")
    marker = wait_for_file(hub.workdir / crash_app.HANG_MARKER, a, STARTUP_TIMEOUT, hub)
    hung = json.loads(marker.read_text())
    assert hung["pid"] == a.pid
    finished_at_kill = hub.count_finished(ids)
    hub.kill(a)  # while hang_once is blocked inside it

    b = hub.start_worker("normal")
    states = hub.wait_all(ids, timeout=30)
    hub.stop(b)

    for n, state in enumerate(states):
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state
        assert state.output == crash_app.expected_sequence(n)
    histories = hub.check_histories(ids)
    hub.assert_no_work_left()

    executions = hub.executions()
    runs = Counter((e["instance"], e["task_id"]) for e in executions)
    # Every scheduled activity ran, and nothing ran that was not scheduled.
    assert set(runs) == scheduled_activities(histories)
    # The interrupted activity ran again, on the new worker, as a second delivery.
    hung_key = (hung["instance"], hung["task_id"])
    hung_runs = [e for e in executions if (e["instance"], e["task_id"]) == hung_key]
    assert len(hung_runs) >= 2
    assert hung_runs[0]["pid"] == a.pid and hung_runs[0]["delivery"] == 1
    assert hung_runs[-1]["pid"] == b.pid and hung_runs[-1]["delivery"] >= 2
    # ... and its orchestration recorded one result for it.
    completions = [
        e
        for e in histories[hung["instance"]]
        if isinstance(e, h.TaskCompleted) and e.task_scheduled_id == hung["task_id"]
    ]
    assert len(completions) == 1
    report(
        {
            "instances": len(ids),
            "finished_at_kill": finished_at_kill,
            "activity_executions": len(executions),
            "re_executions": len(executions) - len(runs),
            "seconds": round(time.monotonic() - began, 2),
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("when", "kill_filter", "kill_on"),
    [
        ("before", "mid-instance", 3),
        ("after", "mid-instance", 3),
        ("before", "child-completing", 1),
        ("after", "child-completing", 1),
        ("before", "root-completing", 1),
        ("after", "root-completing", 1),
    ],
    ids=[
        "before-commit",
        "after-commit",
        "before-child-final-commit",
        "after-child-final-commit",
        "before-root-final-commit",
        "after-root-final-commit",
    ],
)
def test_kill_in_the_middle_of_an_episode(
    hub: Hub, when: str, kill_filter: str, kill_on: int
) -> None:
    began = time.monotonic()
    jobs = [Job(n, timer_ms=100) for n in range(5)]
    ids = [
        hub.client.schedule_new_orchestration(crash_app.pipeline, input=job, instance_id=f"p-{n}")
        for n, job in enumerate(jobs)
    ]
    options = ["--kill-on", str(kill_on), "--kill-when", when, "--kill-filter", kill_filter]
    a = hub.start_worker("episode", *options)
    try:
        code = a.wait(timeout=STARTUP_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"worker A never killed itself\n{hub.worker_logs()}")
    assert code == -signal.SIGKILL, hub.worker_logs()
    record = json.loads((hub.workdir / crash_app.EPISODE_KILL_RECORD).read_text())
    assert record["pid"] == a.pid and record["committed"] == (when == "after")
    if kill_filter == "mid-instance":
        # Which instance's episode comes third is up to the worker; any is in the middle.
        assert record["history_length"] > 0, record
    else:
        assert "EXECUTION_COMPLETED" in record["new_events"], record
        assert record["instance"].endswith(":child") == (kill_filter == "child-completing")

    b = hub.start_worker("normal")
    states = hub.wait_all(ids, timeout=30)
    hub.stop(b)

    for job, state in zip(jobs, states, strict=True):
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state
        assert state.output == crash_app.expected_pipeline(job)
    children = [f"{iid}:child" for iid in ids]
    histories = hub.check_histories([*ids, *children])
    hub.assert_no_work_left()
    executions = hub.executions()
    assert {(e["instance"], e["task_id"]) for e in executions} == scheduled_activities(histories)

    # Where the killed episode would go in its instance's history:
    events = histories[record["instance"]]
    at = record["history_length"]
    started_at = datetime.fromisoformat(record["episode_started_at"])
    episode_starts = [
        i
        for i, e in enumerate(events)
        if isinstance(e, h.OrchestratorStarted) and e.timestamp == started_at
    ]
    assert isinstance(events[at], h.OrchestratorStarted)
    if record["committed"]:
        # A's commit is there, once, exactly as A wrote it; B carried on after it.
        assert episode_starts == [at]
        written = events[at : at + len(record["new_events"])]
        assert [e.event_type.name for e in written] == record["new_events"]
    else:
        # Nothing of A's episode was stored; B ran the episode again, at a later time.
        assert episode_starts == []
        assert events[at].timestamp > started_at
    report(
        {
            "case": f"{when}/{kill_filter}#{kill_on}",
            "instances": len(ids) + len(children),
            "killed_instance": record["instance"],
            "killed_episode": record["new_events"],
            "seconds": round(time.monotonic() - began, 2),
        }
    )


@pytest.mark.slow
def test_random_kills_under_load(hub: Hub) -> None:
    """Three SIGKILLs at random moments while a mixed workload runs; a fourth worker finishes.

    Before each worker starts, a fresh batch of orchestrations is scheduled. Activities work
    for 0.2 s each, so a pipeline's critical path (five activities in a row and a 0.3 s timer)
    takes at least 1.3 s: every kill (at most 1 s after its worker is ready) lands while its
    batch is still running, with activities in flight; earlier batches are further along.
    """
    began = time.monotonic()
    rng = random.Random(20240611)
    kills, batch_size = 3, 8
    ids: list[str] = []
    jobs: dict[str, Job] = {}
    unfinished_at_kill: list[int] = []
    for generation in range(kills + 1):
        for k in range(batch_size):
            n = generation * batch_size + k
            jobs[f"r-{n}"] = Job(n, timer_ms=300, fan_out=3)
            ids.append(
                hub.client.schedule_new_orchestration(
                    crash_app.pipeline, input=jobs[f"r-{n}"], instance_id=f"r-{n}"
                )
            )
        last = generation == kills
        proc = hub.start_worker("normal" if last else "random", "--activity-ms", "200")
        hub.wait_ready(proc)
        if last:
            break
        delay = rng.uniform(0.2, 1.0)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=delay)  # the worker must still be running at the kill
        unfinished = len(ids) - hub.count_finished(ids)
        hub.kill(proc)
        assert unfinished > 0
        unfinished_at_kill.append(unfinished)

    states = hub.wait_all(ids, timeout=40)
    hub.stop(proc)

    for iid, state in zip(ids, states, strict=True):
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state
        assert state.output == crash_app.expected_pipeline(jobs[iid])
    children = [f"{iid}:child" for iid in ids]
    histories = hub.check_histories([*ids, *children])
    hub.assert_no_work_left()

    executions = hub.executions()
    runs = Counter((e["instance"], e["task_id"]) for e in executions)
    assert set(runs) == scheduled_activities(histories)
    workers_seen = {e["pid"] for e in executions}
    assert len(workers_seen) >= 2, "the work was not shared between workers"
    report(
        {
            "instances": len(ids) + len(children),
            "kills": kills,
            "unfinished_at_kill": unfinished_at_kill,
            "activity_executions": len(executions),
            "re_executions": len(executions) - len(runs),
            "worker_pids_running_activities": len(workers_seen),
            "seconds": round(time.monotonic() - began, 2),
        }
    )


@pytest.mark.slow
def test_kills_during_an_eternal_orchestration_keep_its_event_stream(hub: Hub) -> None:
    """SIGKILLs while an eternal orchestration works through a numbered stream of events,
    sent back to back by one client as it goes: it ends with exactly the stream, in order
    (none lost, none applied twice)."""
    kill_during_an_event_stream(hub)


def kill_during_an_event_stream(hub: Hub) -> None:
    """The scenario of the test above, on any hub (PostgreSQL's runs it too)."""
    began = time.monotonic()
    rng = random.Random(20261207)
    count, kills = 150, 3
    iid = hub.client.schedule_new_orchestration(
        crash_app.stream_collector, input=[], instance_id="stream"
    )
    sender_client = dt.TaskHubClient(hub.url)
    sent: list[int] = []

    def send_stream() -> None:
        for n in range(count):
            sender_client.raise_orchestration_event(iid, "n", data=n)
            sent.append(n)
        sender_client.raise_orchestration_event(iid, "n", data=None)

    sender = threading.Thread(target=send_stream, name="stream-sender")
    try:
        for generation in range(kills + 1):
            proc = hub.start_worker("random", "--activity-ms", "5")
            hub.wait_ready(proc)
            if generation == 0:
                sender.start()
            if generation == kills:
                break
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=rng.uniform(0.2, 0.5))
            hub.kill(proc)
        sender.join(timeout=60)
        [state] = hub.wait_all([iid], timeout=60)
        hub.stop(proc)
    finally:
        sender.join(timeout=60)
        sender_client.close()
    assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state
    assert state.output == [n * n for n in range(count)]
    hub.check_histories([iid])
    hub.assert_no_work_left()
    executions = hub.executions()
    report(
        {
            "events": count + 1,
            "kills": kills,
            "activity_executions": len(executions),
            "activity_re_executions": len(executions) - len({e["input"] for e in executions}),
            "seconds": round(time.monotonic() - began, 2),
        }
    )


# -- the checker itself ---------------------------------------------------------------------------
_T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _valid_history() -> list[h.HistoryEvent]:
    return [
        h.OrchestratorStarted(timestamp=_T0),
        h.ExecutionStarted(timestamp=_T0, name="o", instance_id="i", execution_id="e"),
        h.TaskScheduled(event_id=0, timestamp=_T0, name="a"),
        h.TimerCreated(event_id=1, timestamp=_T0, fire_at=_T0),
        h.OrchestratorCompleted(timestamp=_T0),
        h.OrchestratorStarted(timestamp=_T0),
        h.TaskCompleted(timestamp=_T0, task_scheduled_id=0, result="1"),
        h.TimerFired(timestamp=_T0, timer_id=1, fire_at=_T0),
        h.ExecutionCompleted(timestamp=_T0, status=dt.OrchestrationStatus.COMPLETED),
        h.OrchestratorCompleted(timestamp=_T0),
    ]


def test_history_checker_accepts_a_valid_history() -> None:
    assert_history_valid(_valid_history())
    assert_history_valid(_valid_history()[:5], finished=False)


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda ev: ev.insert(7, ev[6]), id="duplicate-completion"),
        pytest.param(lambda ev: ev.insert(4, ev[2]), id="duplicate-scheduling-id"),
        pytest.param(lambda ev: ev.insert(4, ev[1]), id="second-start"),
        pytest.param(lambda ev: ev.insert(6, ev[8]), id="second-completion"),
        pytest.param(lambda ev: ev.insert(9, ev[6]), id="event-after-completion"),
        pytest.param(lambda ev: ev.pop(4), id="episodes-not-alternating"),
        pytest.param(lambda ev: ev.pop(), id="episode-not-closed"),
        pytest.param(lambda ev: ev.pop(2), id="completion-of-unscheduled-task"),
        pytest.param(lambda ev: ev.pop(8), id="not-finished"),
        pytest.param(
            lambda ev: ev.__setitem__(7, h.TimerFired(timestamp=_T0, timer_id=0, fire_at=_T0)),
            id="completion-of-wrong-kind",
        ),
    ],
)
def test_history_checker_rejects(corrupt: Any) -> None:
    events = _valid_history()
    corrupt(events)
    with pytest.raises(AssertionError):
        assert_history_valid(events)
