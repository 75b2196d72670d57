"""Log events for what an orchestration episode committed (started, finished, ...)."""

from __future__ import annotations

import logging
from typing import Any

from duratask import history as h
from duratask.backends.base import OrchestrationCommit
from duratask.state import OrchestrationStatus

_LOG = logging.getLogger("duratask.worker")

# Final status -> (level, event name).
_ENDINGS = {
    OrchestrationStatus.COMPLETED: (logging.INFO, "duratask.orchestration.completed"),
    OrchestrationStatus.FAILED: (logging.WARNING, "duratask.orchestration.failed"),
    OrchestrationStatus.TERMINATED: (logging.INFO, "duratask.orchestration.terminated"),
}
_OTHER_ENDING = (logging.INFO, "duratask.orchestration.ended")


_LOGGED = frozenset({h.ExecutionStarted, h.ExecutionCompleted, h.ExecutionRewound})


def log_commit(instance_id: str, commit: OrchestrationCommit) -> None:
    """Log the lifecycle changes a committed episode recorded."""
    for event in commit.new_events:
        if type(event) not in _LOGGED:
            continue
        if isinstance(event, h.ExecutionStarted):
            if _LOG.isEnabledFor(logging.DEBUG):
                _LOG.debug(
                    "orchestration %r started as %r",
                    event.name,
                    instance_id,
                    extra=_extra("duratask.orchestration.started", instance_id, commit),
                )
        elif isinstance(event, h.ExecutionCompleted):
            level, name = _ENDINGS.get(event.status, _OTHER_ENDING)
            if not _LOG.isEnabledFor(level):  # its arguments cost more than the check
                continue
            failure = event.failure_details
            _LOG.log(
                level,
                "orchestration %r (%r) %s%s",
                commit.state.name,
                instance_id,
                event.status.value,
                f": {failure.error_type}: {failure.message}" if failure else "",
                extra=_extra(name, instance_id, commit, status=event.status.value),
            )
        elif isinstance(event, h.ExecutionRewound):
            _LOG.info(
                "orchestration %r (%r) rewound",
                commit.state.name,
                instance_id,
                extra=_extra("duratask.orchestration.rewound", instance_id, commit),
            )
    state = commit.state
    if commit.reset_history and state.runtime_status is OrchestrationStatus.CONTINUED_AS_NEW:
        _LOG.debug(
            "orchestration %r (%r) continued as new",
            state.name,
            instance_id,
            extra=_extra("duratask.orchestration.continued_as_new", instance_id, commit),
        )


def _extra(
    event: str, instance_id: str, commit: OrchestrationCommit, **more: Any
) -> dict[str, Any]:
    return {
        "event": event,
        "instance_id": instance_id,
        "execution_id": commit.state.execution_id,
        "orchestration_name": commit.state.name,
        **more,
    }
