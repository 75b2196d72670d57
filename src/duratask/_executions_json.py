"""Earlier executions and lease takeovers of an instance as JSON, one form for the CLI and
the REST API."""

from __future__ import annotations

from typing import Any

from duratask.backends.base import ExecutionRecord, LeaseTakeover


def execution_to_json(record: ExecutionRecord) -> dict[str, Any]:
    """An earlier execution's record as the CLI's and the REST API's JSON show it."""
    return {
        "generation": record.generation,
        "execution_id": record.execution_id,
        "name": record.name,
        "version": record.version,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat(),
        "status": record.status.value,
        "input_summary": record.input_summary,
        "output_summary": record.output_summary,
    }


def takeover_to_json(takeover: LeaseTakeover) -> dict[str, Any]:
    """A lease takeover as the CLI's and the REST API's JSON show it."""
    return {
        "execution_id": takeover.execution_id,
        "previous_owner": takeover.previous_owner,
        "lease_expired_at": takeover.lease_expired_at.isoformat(),
        "taken_at": takeover.taken_at.isoformat(),
        "taken_by": takeover.taken_by,
    }
