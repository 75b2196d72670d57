"""The replay engine (internal): pure, no I/O. The worker is its only caller."""

from duratask._engine.executor import ExecutionResult, OrchestrationCursor, OrchestrationExecutor
from duratask._engine.rewind import final_failure, has_ended, rewound_view

__all__ = [
    "ExecutionResult",
    "OrchestrationCursor",
    "OrchestrationExecutor",
    "final_failure",
    "has_ended",
    "rewound_view",
]
