"""The SQLite task hub store (``sqlite:///path/to/hub.db``)."""

from duratask.backends.sqlite.store import SqliteOrchestrationService

__all__ = ["SqliteOrchestrationService"]
