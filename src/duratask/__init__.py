"""duratask: durable orchestrations for Python, replayed from an event-sourced history.

Write orchestrations as ``async def`` functions that call activities, wait on durable timers
and external events, and start sub-orchestrations; run them with a :class:`TaskHubWorker`
on an embedded SQLite file (or in memory) and drive them with a :class:`TaskHubClient`.
"""

from duratask.backends.base import CleanEntityStorageResult, EntityMetadata, EntityQueryPage
from duratask.client import AsyncTaskHubClient, ReuseIdPolicy, TaskHubClient
from duratask.context import ActivityContext, CriticalSection, OrchestrationContext
from duratask.converter import DataConverter, JsonDataConverter
from duratask.entities import Entity, EntityContext, EntityInstanceId
from duratask.errors import (
    ActivityNotRegisteredError,
    ActivityTimeoutError,
    DurataskError,
    EntityLockError,
    EntityNotRegisteredError,
    EntityOperationFailedError,
    EventTimeoutError,
    InvalidInstanceIdError,
    InvalidOperationError,
    LeaseLostError,
    NonDeterminismError,
    OrchestrationAlreadyExistsError,
    OrchestrationFailedError,
    OrchestrationNotFoundError,
    OrchestrationNotRegisteredError,
    OrchestrationWaitTimeoutError,
    PayloadTooLargeError,
    PoisonWorkError,
    SerializationError,
    StoreError,
    TaskFailedError,
    TaskHubNotFoundError,
)
from duratask.history import EventType, HistoryEvent
from duratask.retry import RetryPolicy
from duratask.state import FailureDetails, OrchestrationState, OrchestrationStatus
from duratask.task import Task, when_all, when_any
from duratask.timeline import format_timeline
from duratask.worker import TaskHubWorker

__version__ = "0.1.0"

__all__ = [
    "ActivityContext",
    "ActivityNotRegisteredError",
    "ActivityTimeoutError",
    "AsyncTaskHubClient",
    "CleanEntityStorageResult",
    "CriticalSection",
    "DataConverter",
    "DurataskError",
    "Entity",
    "EntityContext",
    "EntityInstanceId",
    "EntityLockError",
    "EntityMetadata",
    "EntityNotRegisteredError",
    "EntityOperationFailedError",
    "EntityQueryPage",
    "EventTimeoutError",
    "EventType",
    "FailureDetails",
    "HistoryEvent",
    "InvalidInstanceIdError",
    "InvalidOperationError",
    "JsonDataConverter",
    "LeaseLostError",
    "NonDeterminismError",
    "OrchestrationAlreadyExistsError",
    "OrchestrationContext",
    "OrchestrationFailedError",
    "OrchestrationNotFoundError",
    "OrchestrationNotRegisteredError",
    "OrchestrationState",
    "OrchestrationStatus",
    "OrchestrationWaitTimeoutError",
    "PayloadTooLargeError",
    "PoisonWorkError",
    "RetryPolicy",
    "ReuseIdPolicy",
    "SerializationError",
    "StoreError",
    "Task",
    "TaskFailedError",
    "TaskHubClient",
    "TaskHubNotFoundError",
    "TaskHubWorker",
    "__version__",
    "format_timeline",
    "when_all",
    "when_any",
]
