"""The replay engine (internal): pure, no I/O. The worker runs it; the client reads a
history with its rewind rules before it asks for a rewind."""

from duratask._engine.executor import ExecutionResult, OrchestrationCursor, OrchestrationExecutor
from duratask._engine.rewind import (
    failed_children,
    final_failure,
    has_ended,
    locks_released_by_failure,
    rewound_view,
)

__all__ = [
    "ExecutionResult",
    "OrchestrationCursor",
    "OrchestrationExecutor",
    "failed_children",
    "final_failure",
    "has_ended",
    "locks_released_by_failure",
    "rewound_view",
]
