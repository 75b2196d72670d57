"""CPU accounting for W1: the CPU time of worker processes and of the PostgreSQL backends
that serve a trial, over the trial's timed window.

A process's CPU time is read from ``/proc/<pid>/stat`` (user + system time, all threads).
PostgreSQL backends are found in ``pg_stat_activity`` by the ``application_name`` of the
trial's connections (duratask names its connections ``duratask[<schema>]``, and the DBOS
peer is configured the same way), so other sessions on a shared server are not counted.
Connections come and go, so a sampler thread looks the backends up again every 0.2 s and a
:class:`CpuLedger` keeps, per process, the CPU used since the window opened (a backend born
during the window counts from zero).

Only the backends are counted, not the server's background processes (WAL writer,
checkpointer, background writer, autovacuum): those serve every database on the server at
once, and on a shared machine their CPU cannot be attributed to one trial. With
``synchronous_commit = on`` each backend flushes its own commit records, so the backends
carry nearly all the work a trial causes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

try:
    CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - not Linux
    CLOCK_TICKS = 100.0


def parse_proc_stat_cpu(text: str, ticks_per_s: float = CLOCK_TICKS) -> float:
    """User + system CPU seconds from the text of ``/proc/<pid>/stat``.

    The second field, the command name, is in parentheses and may itself hold spaces and
    parentheses, so fields are counted from the last ``)``: after it come field 3 (state)
    onwards, and utime and stime are fields 14 and 15."""
    end = text.rindex(")")
    fields = text[end + 1 :].split()
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds process ``pid`` has used so far, or None if it cannot be read (gone, or
    not visible from here)."""
    try:
        return parse_proc_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds of each readable process of ``pids``."""
    out: dict[int, float] = {}
    for pid in pids:
        seconds = process_cpu_seconds(pid)
        if seconds is not None:
            out[pid] = seconds
    return out


class CpuLedger:
    """CPU seconds used by a changing set of processes since a starting point.

    ``start`` takes the first sample (CPU seconds per pid); every later ``observe`` adds what
    the processes used since. A pid first seen after the start counts from zero (it was
    born during the window). A pid whose CPU time goes down is a new process that reuses
    the number: what the old one used is kept and the new one counts from zero. A process
    that ends between two samples loses what it used after its last sample.
    """

    def __init__(self) -> None:
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._retired = 0.0
        self.started = False

    def start(self, sample: Mapping[int, float]) -> None:
        self._base = dict(sample)
        self._last = dict(sample)
        self._retired = 0.0
        self.started = True

    def observe(self, sample: Mapping[int, float]) -> None:
        if not self.started:
            raise RuntimeError("observe() before start()")
        for pid, seconds in sample.items():
            last = self._last.get(pid)
            if last is not None and seconds < last:
                self._retired += last - self._base.get(pid, 0.0)
                self._base[pid] = 0.0
            self._last[pid] = seconds

    @property
    def processes(self) -> int:
        """How many distinct processes were seen."""
        return len(self._last)

    def total(self) -> float:
        return self._retired + sum(
            seconds - self._base.get(pid, 0.0) for pid, seconds in self._last.items()
        )


def per_thousand(seconds: float, activities: int) -> float:
    """CPU seconds per 1,000 activities."""
    if activities <= 0:
        raise ValueError("activities must be positive")
    return seconds / activities * 1000


class PgBackendCpu:
    """Samples the CPU time of the PostgreSQL backends whose ``application_name`` is
    ``application_name``, from a thread of its own, between :meth:`start` and :meth:`stop`.

    Works only when the server runs on this machine in a process namespace this process can
    see (``/proc/<pid>`` of the backends readable); otherwise :attr:`unavailable` says why
    and :meth:`stop` returns None. The thread's own CPU time (its queries and ``/proc``
    reads) is kept in :attr:`own_cpu_s`, so a caller timing its whole process can subtract
    it.
    """

    def __init__(self, pg_url: str, application_name: str, interval: float = 0.2) -> None:
        self._pg_url = pg_url
        self._application_name = application_name
        self._interval = interval
        self._ledger = CpuLedger()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self.unavailable = ""
        self.own_cpu_s = 0.0

    def _pids(self) -> list[int]:
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (self._application_name,),
        ).fetchall()
        return [int(row[0]) for row in rows]

    def _sample(self) -> dict[int, float]:
        pids = self._pids()
        sample = cpu_of(pids)
        if pids and not sample:
            raise LookupError(
                "the PostgreSQL backends' /proc entries are not visible from this process "
                "(a server on another machine or in another container)"
            )
        return sample

    def start(self) -> None:
        import psycopg

        try:
            self._conn = psycopg.connect(
                self._pg_url, autocommit=True, application_name="duratask-bench-cpu"
            )
            with self._lock:
                self._ledger.start(self._sample())
        except Exception as exc:
            self.unavailable = f"{type(exc).__name__}: {exc}"
            return
        self._thread = threading.Thread(target=self._run, name="pg-cpu", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._observe()

    def _observe(self, own: bool = True) -> None:
        before = time.thread_time()
        try:
            with self._lock:
                self._ledger.observe(self._sample())
        except Exception as exc:
            self.unavailable = f"{type(exc).__name__}: {exc}"
            self._stop.set()
        finally:
            if own:
                self.own_cpu_s += time.thread_time() - before

    def stop(self) -> float | None:
        """Take a last sample, stop sampling, and return the backends' CPU seconds since
        :meth:`start` (None if they could not be measured)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if not self.unavailable:
                self._observe(own=False)  # on the caller's thread, after its own timing
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        if self.unavailable or not self._ledger.started:
            return None
        return self._ledger.total()

    @property
    def backends(self) -> int:
        return self._ledger.processes


def cpu_figures(
    worker_cpu_s: float | None, pg_cpu_s: float | None, activities: int
) -> dict[str, float]:
    """W1's CPU figures from the CPU seconds of the worker side and of the PostgreSQL
    backends (None: not measured) over ``activities`` activities."""
    out: dict[str, float] = {}
    if worker_cpu_s is not None:
        out["worker_cpu_s"] = worker_cpu_s
        out["worker_cpu_s_per_1k"] = per_thousand(worker_cpu_s, activities)
    if pg_cpu_s is not None:
        out["pg_cpu_s"] = pg_cpu_s
        out["pg_cpu_s_per_1k"] = per_thousand(pg_cpu_s, activities)
        if worker_cpu_s is not None and pg_cpu_s > 0:
            out["workers_per_pg_core"] = worker_cpu_s / pg_cpu_s
    return out


class CpuWindow:
    """The CPU figures of one timed window: :meth:`open` just before the clock starts,
    :meth:`close` when it stops.

    The worker side is either the processes ``worker_pids`` (worker subprocesses, read from
    ``/proc``) or, without them, this whole process (``time.process_time``, all threads,
    less the PostgreSQL sampler's own thread). With ``pg_url`` and ``application_name`` the
    PostgreSQL backends of the trial are measured too (see :class:`PgBackendCpu`).
    """

    def __init__(
        self,
        *,
        worker_pids: list[int] | None = None,
        pg_url: str | None = None,
        application_name: str | None = None,
    ) -> None:
        self._worker_pids = worker_pids
        self._pg = PgBackendCpu(pg_url, application_name) if pg_url and application_name else None
        self._process_before = 0.0
        self._workers_before: dict[int, float] = {}
        self.notes: list[str] = []

    def open(self) -> None:
        if self._pg is not None:
            self._pg.start()
        if self._worker_pids is not None:
            self._workers_before = cpu_of(self._worker_pids)
        self._process_before = time.process_time()

    def close(self, activities: int) -> dict[str, Any]:
        process_used = time.process_time() - self._process_before
        worker_s: float | None = process_used
        if self._worker_pids is not None:
            after = cpu_of(self._worker_pids)
            pids = set(self._worker_pids)
            if set(after) == pids and set(self._workers_before) == pids:
                worker_s = sum(after[pid] - self._workers_before[pid] for pid in pids)
            else:
                worker_s = None
                self.notes.append("a worker process's CPU time could not be read")
        pg_s: float | None = None
        if self._pg is not None:
            pg_s = self._pg.stop()
            if worker_s is not None and self._worker_pids is None:
                worker_s -= self._pg.own_cpu_s
            if self._pg.unavailable:
                self.notes.append(f"PostgreSQL backend CPU not measured: {self._pg.unavailable}")
        figures: dict[str, Any] = dict(cpu_figures(worker_s, pg_s, activities))
        if self._pg is not None and pg_s is not None:
            figures["pg_backends"] = self._pg.backends
        if self.notes:
            figures["cpu_notes"] = self.notes
        return figures
