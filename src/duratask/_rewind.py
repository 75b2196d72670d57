"""What a rewind sends: the ``ExecutionRewound`` message that a client (or a parent being
rewound, to its failed sub-orchestrations) sends to a FAILED instance.

The message also makes the instance PENDING as it is enqueued, so that clients waiting for
it see it waiting for a worker again rather than still FAILED; the store applies that as a
plain status change (see :class:`duratask.backends.base.StatusChange`) and knows nothing of
rewinds.
"""

from __future__ import annotations

from datetime import datetime

from duratask.backends.base import OrchestrationMessage, StatusChange
from duratask.history import ExecutionRewound
from duratask.state import OrchestrationStatus

_REOPENS = StatusChange(when=OrchestrationStatus.FAILED, becomes=OrchestrationStatus.PENDING)


def rewind_message(instance_id: str, reason: str | None, now: datetime) -> OrchestrationMessage:
    """The message that rewinds instance ``instance_id``."""
    event = ExecutionRewound(timestamp=now, reason=reason)
    return OrchestrationMessage(instance_id, event, status_change=_REOPENS)
