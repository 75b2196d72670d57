"""Workers and the backlog as JSON, one form for the CLI and the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from duratask.backends.base import BacklogEntry, WorkerInfo


def worker_to_json(worker: WorkerInfo, now: datetime) -> dict[str, Any]:
    """A worker as the CLI's and the REST API's JSON show it."""
    return {
        "worker_id": worker.worker_id,
        "host": worker.host,
        "pid": worker.pid,
        "started_at": worker.started_at.isoformat(),
        "heartbeat_at": worker.heartbeat_at.isoformat(),
        "seconds_since_heartbeat": round((now - worker.heartbeat_at).total_seconds(), 3),
        "orchestrations": sorted(
            [{"name": n, "version": v} for n, v in worker.orchestrations],
            key=lambda o: (o["name"], o["version"] or ""),
        ),
        "activities": sorted(worker.activities),
        "task_queues": sorted(worker.task_queues),
        "in_flight": dict(worker.in_flight),
    }


def backlog_to_json(entry: BacklogEntry) -> dict[str, Any]:
    """A backlog entry as the CLI's and the REST API's JSON show it."""
    return {
        "kind": entry.kind,
        "name": entry.name,
        "ready": entry.ready,
        "later": entry.later,
        "leased": entry.leased,
    }
