"""PostgreSQL scale-out with real processes: three workers (``crash_worker.py``) share one hub.

Every test schedules ``crash_app.steps_then_fan_out`` orchestrations (five activities one
after the other, then a fan-out of ten) on a fresh schema, runs three worker subprocesses on
it, and checks that every instance completed with the right output and that every episode
was committed exactly once: the history table, read directly, holds sequence numbers
0..n-1 per instance without gaps or duplicates, and each history passes
``assert_history_valid``. Activities may run more than once (at least once delivery); the
tests count and report the re-executions.

- scale-out: the work is spread over all three processes;
- SIGKILL: one worker dies mid-run holding leases; the two others take its work over once
  those leases expire (2 s here): each activity it held runs again on a survivor, after the
  expiry (the executions log records when);
- ``pg_terminate_backend``: every connection of every worker is killed, three times during
  the run; the workers reconnect and carry on;
- an eternal orchestration fed a numbered stream of events, its worker killed three times,
  ends with exactly the stream (the SQLite crash test's scenario, here on PostgreSQL).

No test sleeps to synchronise: waits poll a condition with a deadline, and the poll interval
is spent waiting on a worker process (which must not exit meanwhile). The client and the
test's own admin connection use other application names than the workers, so terminations
hit the workers only. Run with ``pytest -s`` to see each test's figures.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import duratask as dt

from ..conformance.conftest import drop_schema, new_schema, require_postgres
from . import crash_app
from .crash_app import Burst
from .test_crash_recovery import (
    POLL,
    Hub,
    kill_during_an_event_stream,
    report,
    scheduled_activities,
)

pytestmark = pytest.mark.timeout(90)

LEASE_SECONDS = 2.0
WORKERS = 3
STEPS, FAN_OUT = 5, 10
ACTIVITIES_PER_INSTANCE = STEPS + FAN_OUT
# The workers' store connections are named duratask[<schema>] (see postgres/database.py).
WORKER_APPLICATION_NAME = "duratask[{schema}]%"


@dataclass
class PgHub(Hub):
    """A PostgreSQL task hub (one schema), a client, an admin connection and the workers."""

    store_url: str = ""
    schema: str = ""
    admin: psycopg.Connection[tuple[Any, ...]] | None = None
    bursts: dict[str, Burst] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.store_url

    def sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run ``query`` (``{schema}`` stands for the hub's schema) on the admin connection."""
        assert self.admin is not None
        statement = sql.SQL(query).format(schema=sql.Identifier(self.schema))
        return self.admin.execute(statement, params).fetchall()

    # -- workers --------------------------------------------------------------------------------
    def start_workers(self, count: int, *extra: str) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` plain workers (our ``--lease-seconds`` comes after the one
        ``start_worker`` passes, so it wins) and wait until all are processing work."""
        procs = [
            self.start_worker("normal", "--lease-seconds", str(LEASE_SECONDS), *extra)
            for _ in range(count)
        ]
        for proc in procs:
            self.wait_ready(proc)
        return procs

    @property
    def worker_connections(self) -> str:
        """A LIKE pattern for the application name of the workers' connections."""
        return WORKER_APPLICATION_NAME.format(schema=self.schema)

    def terminate_worker_connections(self) -> int:
        """``pg_terminate_backend`` every connection of every worker; how many were killed."""
        rows = self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
            (self.worker_connections,),
        )
        return sum(1 for (killed,) in rows if killed)

    def wait_for_listeners(self, procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
        """Wait until each worker of ``procs`` listens (each has one listening connection,
        and opens it again after losing it)."""
        deadline = time.monotonic() + timeout
        query = (
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND query LIKE 'LISTEN %%'"
        )
        while (listening := int(self.sql(query, (self.worker_connections,))[0][0])) < len(procs):
            assert time.monotonic() < deadline, f"{listening} of {len(procs)} workers listening"
            with contextlib.suppress(subprocess.TimeoutExpired):
                procs[0].wait(timeout=POLL)  # doubles as the poll interval

    def wait_for_open_transactions(self, pace: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait until every worker transaction open now has ended.

        A killed worker's backends still run what it sent before dying (a COMMIT among
        them) before they notice it is gone; once that is over, its leases stay as they are.
        """
        (now,) = self.sql("SELECT clock_timestamp()")[0]
        deadline = time.monotonic() + timeout
        query = (
            "SELECT pid, state, query FROM pg_stat_activity "
            "WHERE application_name LIKE %s AND xact_start < %s"
        )
        while open_transactions := self.sql(query, (self.worker_connections, now)):
            assert time.monotonic() < deadline, f"transactions still open: {open_transactions}"
            with contextlib.suppress(subprocess.TimeoutExpired):
                pace.wait(timeout=POLL)  # doubles as the poll interval

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        index = self.procs.index(proc)
        return next(self.workdir.glob(f"worker-{index}-*.log")).read_text(errors="replace")

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        super().kill(proc)
        self.killed.add(proc.pid)

    def leases_of(self, proc: subprocess.Popen[bytes]) -> dict[tuple[str, int | None], float]:
        """The leases ``proc`` holds: when each expires (a Unix time), by instance id and
        task id (None for an orchestration lease, the task id for an activity's)."""
        owner = f"%:{proc.pid}:%"  # worker ids are host:pid:random
        rows = self.sql(
            "SELECT instance_id, NULL::bigint, lock_expires_at FROM {schema}.instances "
            "WHERE lock_owner LIKE %s "
            "UNION ALL "
            "SELECT instance_id, task_id, lock_expires_at FROM {schema}.activities "
            "WHERE lock_owner LIKE %s",
            (owner, owner),
        )
        return {(iid, task_id): expires.timestamp() for iid, task_id, expires in rows}

    # -- the workload ----------------------------------------------------------------------------
    def schedule(self, count: int) -> list[str]:
        ids = []
        for n in range(count):
            iid = f"b-{n}"
            self.bursts[iid] = Burst(n, steps=STEPS, fan_out=FAN_OUT)
            ids.append(
                self.client.schedule_new_orchestration(
                    crash_app.steps_then_fan_out, input=self.bursts[iid], instance_id=iid
                )
            )
        return ids

    def activities_run(self) -> int:
        """Activity executions so far (lines of the executions log)."""
        try:
            return (self.workdir / crash_app.EXECUTIONS_LOG).read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    def count_finished(self, instance_ids: Sequence[str] = ()) -> int:
        """How many instances of the hub are finished (all of them: ``instance_ids`` is
        ignored, every instance of the hub is the test's)."""
        rows = self.sql(
            "SELECT count(*) FROM {schema}.instances WHERE runtime_status = ANY(%s)",
            ([s.value for s in dt.OrchestrationStatus if s.is_terminal],),
        )
        return int(rows[0][0])

    def run_to_completion(
        self,
        ids: Sequence[str],
        running: Sequence[subprocess.Popen[bytes]],
        timeout: float,
        actions: Sequence[tuple[float, Callable[[], None]]] = (),
    ) -> None:
        """Wait until every instance is finished, failing if a worker of ``running`` exits.

        Each action runs once the activity executions reach its fraction of the workload, and
        only while instances are still unfinished (it must land mid-run)."""
        deadline = time.monotonic() + timeout
        todo = sorted(actions, key=lambda a: a[0])
        total_activities = len(ids) * ACTIVITIES_PER_INSTANCE
        while True:
            finished = self.count_finished()
            # One action per poll, so that each sees how far the run is and lands mid-run.
            if todo and self.activities_run() >= todo[0][0] * total_activities:
                assert finished < len(ids), f"the run finished before the action at {todo[0][0]}"
                todo.pop(0)[1]()
                running = [p for p in running if p.pid not in self.killed]
            if finished == len(ids):
                assert not todo, f"actions left over: {todo}"
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{finished}/{len(ids)} instances finished after {timeout}s, "
                    f"{self.activities_run()} activity executions\n{self.worker_logs()}"
                )
            for proc in running:
                if proc.poll() is not None:
                    raise AssertionError(
                        f"worker {proc.pid} exited ({proc.returncode}) mid-run\n"
                        f"{self.worker_logs()}"
                    )
            with contextlib.suppress(subprocess.TimeoutExpired):
                running[0].wait(timeout=POLL * 2)  # doubles as the poll interval

    def stop_all(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            code = proc.wait(timeout=15)
            assert code == 0, f"worker {proc.pid} exited with {code}\n{self.worker_logs()}"

    # -- checks ----------------------------------------------------------------------------------
    def check_outcomes(self, ids: Sequence[str]) -> dict[str, Any]:
        """Every instance completed with its expected output; every history is contiguous in
        the table and valid; every scheduled activity ran. Returns figures."""
        for iid in ids:
            state = self.client.get_orchestration_state(iid)
            assert state is not None, iid
            assert state.runtime_status is dt.OrchestrationStatus.COMPLETED, state
            assert state.output == crash_app.expected_steps_then_fan_out(self.bursts[iid])

        sequence_numbers: dict[str, list[int]] = {}
        for iid, number in self.sql(
            "SELECT instance_id, sequence_number FROM {schema}.history "
            "ORDER BY instance_id, sequence_number"
        ):
            sequence_numbers.setdefault(iid, []).append(number)
        assert set(sequence_numbers) == set(ids)
        histories = self.check_histories(ids)
        for iid, numbers in sequence_numbers.items():
            assert numbers == list(range(len(numbers))), f"{iid}: sequence numbers {numbers}"
            assert len(numbers) == len(histories[iid]), iid
        self.assert_no_work_left()

        executions = self.executions()
        runs = Counter((e["instance"], e["task_id"]) for e in executions)
        assert set(runs) == scheduled_activities(histories)
        assert len(runs) == len(ids) * ACTIVITIES_PER_INSTANCE
        return {
            "instances": len(ids),
            "history_rows": sum(len(n) for n in sequence_numbers.values()),
            "activity_executions": len(executions),
            "re_executions": len(executions) - len(runs),
        }

    def assert_no_work_left(self) -> None:
        messages = self.sql("SELECT event_type, instance_id FROM {schema}.messages")
        activities = self.sql("SELECT name, instance_id FROM {schema}.activities")
        leased = self.sql("SELECT instance_id FROM {schema}.instances WHERE lock_token IS NOT NULL")
        assert (messages, activities, leased) == ([], [], []), (
            f"left behind: messages {messages}, activities {activities}, leases {leased}"
        )

    def shares(self) -> dict[int, float]:
        """Each worker's share of the activity executions."""
        by_pid = Counter(e["pid"] for e in self.executions())
        total = sum(by_pid.values())
        return {pid: round(n / total, 3) for pid, n in by_pid.items()}


@pytest.fixture
def pg_hub(tmp_path: Path) -> Iterator[PgHub]:
    base = require_postgres()
    schema = new_schema()
    join = "&" if "?" in base else "?"
    store_url = f"{base}{join}schema={schema}"
    admin = psycopg.connect(base, autocommit=True, application_name="duratask-test-admin")
    client = dt.TaskHubClient(f"{store_url}&application_name=duratask-test-client")
    hub = PgHub(workdir=tmp_path, client=client, store_url=store_url, schema=schema, admin=admin)
    try:
        yield hub
    finally:
        hub.cleanup()
        client.close()
        admin.close()
        drop_schema(schema)


def throughput(began: float, ids: Sequence[str], figures: dict[str, Any]) -> dict[str, Any]:
    """Seconds since ``began`` (scheduling the instances included), and the rates."""
    seconds = time.monotonic() - began
    return {
        "seconds": round(seconds, 2),
        "orchestrations_per_s": round(len(ids) / seconds, 1),
        "activities_per_s": round(figures["activity_executions"] / seconds, 1),
    }


# -- the tests ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_three_workers_share_the_hub(pg_hub: PgHub) -> None:
    procs = pg_hub.start_workers(WORKERS)
    began = time.monotonic()
    ids = pg_hub.schedule(300)
    scheduling = time.monotonic() - began
    pg_hub.run_to_completion(ids, procs, timeout=60)
    ran_for = throughput(began, ids, {"activity_executions": pg_hub.activities_run()})
    pg_hub.stop_all(procs)

    figures = pg_hub.check_outcomes(ids)
    shares = pg_hub.shares()
    assert set(shares) == {p.pid for p in procs}
    assert min(shares.values()) >= 0.10, f"activities not spread over the workers: {shares}"
    report(
        {
            **figures,
            **ran_for,
            "scheduling_s": round(scheduling, 2),
            "shares": sorted(shares.values()),
        }
    )


@pytest.mark.slow
def test_a_killed_worker_s_instances_are_finished_by_the_others(pg_hub: PgHub) -> None:
    # Activities that take a while: the victim dies with some of them running.
    procs = pg_hub.start_workers(WORKERS, "--activity-ms", "20")
    victim, survivors = procs[0], procs[1:]
    at_kill: dict[str, Any] = {}

    def kill_the_victim() -> None:
        # Kill it while it holds leases: those are what the survivors must wait out.
        deadline = time.monotonic() + 10
        while not pg_hub.leases_of(victim):
            assert time.monotonic() < deadline, "the victim never held a lease"
        pg_hub.kill(victim)
        pg_hub.wait_for_open_transactions(pace=survivors[0], timeout=10)
        at_kill["leases"] = pg_hub.leases_of(victim)  # frozen: nobody renews them now
        at_kill["unfinished"] = len(ids) - pg_hub.count_finished()

    began = time.monotonic()
    ids = pg_hub.schedule(150)
    pg_hub.run_to_completion(ids, procs, timeout=60, actions=[(0.3, kill_the_victim)])
    ran_for = throughput(began, ids, {"activity_executions": pg_hub.activities_run()})
    pg_hub.stop_all(survivors)

    figures = pg_hub.check_outcomes(ids)
    leases: dict[tuple[str, int | None], float] = at_kill["leases"]
    assert leases, "the victim held no lease when it died"
    # Every activity the victim held a lease on ran again on a survivor, as a redelivery,
    # and not before the lease expired.
    executions = pg_hub.executions()
    for (iid, task_id), expires in leases.items():
        if task_id is None:
            continue
        reruns = [
            e
            for e in executions
            if (e["instance"], e["task_id"]) == (iid, task_id) and e["pid"] != victim.pid
        ]
        assert reruns, (iid, task_id)
        assert reruns[0]["delivery"] >= 2 and reruns[0]["at"] >= expires, (reruns, expires)
    shares = pg_hub.shares()
    assert {p.pid for p in survivors} <= set(shares)
    report(
        {
            **figures,
            **ran_for,
            "unfinished_at_kill": at_kill["unfinished"],
            "orphaned_instance_leases": sum(t is None for _, t in leases),
            "orphaned_activity_leases": sum(t is not None for _, t in leases),
            "shares": sorted(shares.values()),
        }
    )


@pytest.mark.slow
def test_workers_survive_their_connections_being_terminated(pg_hub: PgHub) -> None:
    procs = pg_hub.start_workers(WORKERS)
    terminated: list[int] = []
    unfinished: list[int] = []

    def terminate() -> None:
        # A termination counts only once every worker is back from the one before.
        pg_hub.wait_for_listeners(procs, timeout=30)
        unfinished.append(len(ids) - pg_hub.count_finished())
        terminated.append(pg_hub.terminate_worker_connections())

    began = time.monotonic()
    ids = pg_hub.schedule(150)
    actions = [(fraction, terminate) for fraction in (0.2, 0.45, 0.7)]
    pg_hub.run_to_completion(ids, procs, timeout=60, actions=actions)
    ran_for = throughput(began, ids, {"activity_executions": pg_hub.activities_run()})
    pg_hub.stop_all(procs)

    figures = pg_hub.check_outcomes(ids)
    # Each worker has at least a pooled connection and a listening one at any time; every
    # worker saw its listening connection die at each termination, and got over it.
    assert min(terminated) >= 2 * WORKERS, terminated
    for proc in procs:
        listener_lost = pg_hub.log_of(proc).count(f"listening on '{pg_hub.schema}' failed")
        assert listener_lost >= len(terminated), (proc.pid, listener_lost)
    shares = pg_hub.shares()
    assert set(shares) == {p.pid for p in procs}
    logs = pg_hub.worker_logs(tail=10**7)
    report(
        {
            **figures,
            **ran_for,
            "backends_terminated": terminated,
            "unfinished_at_termination": unfinished,
            "retry_warnings": logs.count("retrying"),
            "lease_lost_warnings": logs.count("lease lost"),
            "shares": sorted(shares.values()),
        }
    )


@pytest.mark.slow
def test_kills_during_an_eternal_orchestration_keep_its_event_stream(pg_hub: PgHub) -> None:
    """SIGKILLs while an eternal orchestration continues as new through a numbered stream of
    events: on PostgreSQL too it ends with exactly the stream, in order."""
    kill_during_an_event_stream(pg_hub)
