"""The replay engine (internal): pure, no I/O. The worker is its only caller."""

from duratask._engine.executor import ExecutionResult, OrchestrationCursor, OrchestrationExecutor

__all__ = ["ExecutionResult", "OrchestrationCursor", "OrchestrationExecutor"]
