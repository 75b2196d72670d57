"""Task hub stores behind one seam: the work-item half (:class:`OrchestrationService`) and
the client half (:class:`OrchestrationServiceClient`), both implemented by each store
(:class:`TaskHubStore`).

``open_store(url)`` picks a store by URL:

- ``memory://`` or ``memory://NAME``: in-process store (tests; shared by every worker and
  client of this process that uses the same name);
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: an embedded SQLite file;
- ``postgresql://user@host:port/db?schema=NAME`` (or ``postgres://``): a PostgreSQL task hub
  in schema NAME (default ``duratask``); needs ``pip install 'duratask[postgres]'``.
"""

from __future__ import annotations

from typing import TypeVar, overload
from urllib.parse import urlsplit

from duratask.backends.base import (
    ActivityRequest,
    ActivityWorkItem,
    EagerLease,
    EpisodeFence,
    HistoryMark,
    InstanceQuery,
    InstanceUnchanged,
    KnownHistories,
    LeaseHeld,
    LeaseHolder,
    LockedMessage,
    OrchestrationCommit,
    OrchestrationMessage,
    OrchestrationService,
    OrchestrationServiceClient,
    OrchestrationWorkItem,
    PurgeFilter,
    QueryPage,
    ScheduleRecord,
    StatusChange,
    StoreDescription,
    StoreLifecycle,
    SupportsWakeUps,
    TaskHubStore,
    WorkerInfo,
    WorkFilter,
    orchestration_key,
)
from duratask.errors import InstanceBusyError

__all__ = [
    "ActivityRequest",
    "ActivityWorkItem",
    "EagerLease",
    "EpisodeFence",
    "HistoryMark",
    "InstanceBusyError",
    "InstanceQuery",
    "InstanceUnchanged",
    "KnownHistories",
    "LeaseHeld",
    "LeaseHolder",
    "LockedMessage",
    "OrchestrationCommit",
    "OrchestrationMessage",
    "OrchestrationService",
    "OrchestrationServiceClient",
    "OrchestrationWorkItem",
    "PurgeFilter",
    "QueryPage",
    "ScheduleRecord",
    "StatusChange",
    "StoreDescription",
    "StoreLifecycle",
    "SupportsWakeUps",
    "TaskHubStore",
    "WorkFilter",
    "WorkerInfo",
    "open_store",
    "orchestration_key",
]


S = TypeVar("S", bound=StoreLifecycle)


@overload
def open_store(url: str) -> TaskHubStore: ...


@overload
def open_store(url: S) -> S: ...


def open_store(url: str | S) -> TaskHubStore | S:
    """Build the store a URL names (not yet opened). A store object is returned as is."""
    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "memory":
        from duratask.backends.memory import MemoryOrchestrationService

        return MemoryOrchestrationService.named(parts.netloc + parts.path or "default")
    if scheme == "sqlite":
        from duratask.backends.sqlite import SqliteOrchestrationService

        path = url[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]  # sqlite:///rel.db -> rel.db ; sqlite:////abs.db -> /abs.db
        if not path:
            raise ValueError(f"store URL {url!r} names no file (use sqlite:///path/to/hub.db)")
        return SqliteOrchestrationService(path)
    if scheme in ("postgresql", "postgres"):
        from duratask.backends.postgres import PostgresOrchestrationService

        return PostgresOrchestrationService(url)
    raise ValueError(
        f"unsupported store URL {url!r}: expected memory://, sqlite:///path "
        "or postgresql://user@host:port/db?schema=NAME"
    )
