"""The SQLite task hub store (``sqlite:///path/to/hub.db``)."""

from duratask.backends.sqlite._store import SqliteOrchestrationService

__all__ = ["SqliteOrchestrationService"]
