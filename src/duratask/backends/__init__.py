"""Task hub stores behind one seam: the work-item half (:class:`OrchestrationService`) and
the client half (:class:`OrchestrationServiceClient`), both implemented by each store
(:class:`TaskHubStore`).

``open_store(url)`` picks a store by URL:

- ``memory://`` or ``memory://NAME``: in-process store (tests; shared by every worker and
  client of this process that uses the same name);
- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (four slashes: an
  absolute path): an embedded SQLite file; the path is percent-decoded, and the query may set
  ``synchronous`` and ``busy_timeout`` (seconds);
- ``postgresql://user@host:port/db?schema=NAME`` (or ``postgres://``): a PostgreSQL task hub
  in schema NAME (default ``duratask``); needs ``pip install 'duratask[postgres]'``;
- ``azure://ACCOUNT/HUB``, ``azure:///HUB?connection_string=...`` or
  ``azure://devstoreaccount1/HUB?blob_port=P&queue_port=P&table_port=P`` (Azurite): an Azure
  Storage task hub; needs ``pip install 'duratask[azure]'``.
"""

from __future__ import annotations

from typing import TypeVar, overload

from duratask.backends import _urls
from duratask.backends.base import (
    ActivityRequest,
    ActivityWorkItem,
    BacklogEntry,
    CleanEntityStorageResult,
    EagerLease,
    EntityCommit,
    EntityMessage,
    EntityMetadata,
    EntityQuery,
    EntityQueryPage,
    EntityRecord,
    EntityWorkItem,
    EpisodeFence,
    ExecutionRecord,
    HistoryMark,
    InstanceQuery,
    InstanceSort,
    InstanceUnchanged,
    KnownHistories,
    LeaseHeld,
    LeaseHolder,
    LeaseTakeover,
    LockedEntityMessage,
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
    SupportsEagerStart,
    SupportsWakeUps,
    TaskHubStore,
    WorkerInfo,
    WorkFilter,
    orchestration_key,
)
from duratask.errors import InstanceBusyError, InvalidStoreUrlError, StoreError

__all__ = [
    "ActivityRequest",
    "ActivityWorkItem",
    "BacklogEntry",
    "CleanEntityStorageResult",
    "EagerLease",
    "EntityCommit",
    "EntityMessage",
    "EntityMetadata",
    "EntityQuery",
    "EntityQueryPage",
    "EntityRecord",
    "EntityWorkItem",
    "EpisodeFence",
    "ExecutionRecord",
    "HistoryMark",
    "InstanceBusyError",
    "InstanceQuery",
    "InstanceSort",
    "InstanceUnchanged",
    "KnownHistories",
    "LeaseHeld",
    "LeaseHolder",
    "LeaseTakeover",
    "LockedEntityMessage",
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
    "SupportsEagerStart",
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
    """Build the store a URL names (not yet opened). A store object is returned as is.

    A URL that is malformed, of an unknown kind or names what cannot hold a hub raises
    :class:`~duratask.InvalidStoreUrlError` (a ``ValueError``) showing the right form."""
    if not isinstance(url, str):
        return url
    kind = _urls.scheme(url)
    if kind == "memory":
        from duratask.backends.memory import MemoryOrchestrationService

        return MemoryOrchestrationService.named(_urls.memory_name(url))
    if kind == "sqlite":
        from duratask.backends.sqlite import SqliteOrchestrationService

        target = _urls.parse_sqlite_url(url)
        return SqliteOrchestrationService(target.path, **target.options)
    if kind == "azure":
        try:
            from duratask.backends.azure import AzureOrchestrationService, parse_azure_url
        except ImportError as exc:
            raise StoreError(
                "an azure:// store needs Microsoft's storage clients: "
                f"pip install 'duratask[azure]' ({exc})"
            ) from exc
        return AzureOrchestrationService(parse_azure_url(url))
    from duratask.backends.postgres import PostgresOrchestrationService

    try:
        return PostgresOrchestrationService(url)
    except ValueError as exc:  # the schema name, a parameter libpq does not know...
        if isinstance(exc, InvalidStoreUrlError):
            raise
        reason = str(exc).strip()
        raise InvalidStoreUrlError(
            f"PostgreSQL store URL: {reason} (the form is {_urls.POSTGRES_FORM})"
        ) from None
