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
    FeatureNotSupportedError,
    InvalidInstanceIdError,
    InvalidOperationError,
    InvalidScheduleError,
    InvalidStoreUrlError,
    LeaseLostError,
    NonDeterminismError,
    NotATaskHubError,
    OrchestrationAlreadyExistsError,
    OrchestrationFailedError,
    OrchestrationFinishedError,
    OrchestrationNotFoundError,
    OrchestrationNotRegisteredError,
    OrchestrationWaitTimeoutError,
    PayloadTooLargeError,
    PoisonWorkError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    SchemaVersionError,
    SerializationError,
    StoreError,
    StoreFullError,
    TaskFailedError,
    TaskHubNotFoundError,
)
from duratask.history import EventType, HistoryEvent
from duratask.retry import RetryPolicy
from duratask.schedules import (
    CatchUp,
    Interval,
    Overlap,
    ScheduleDescription,
    ScheduleInfo,
    ScheduleRun,
    ScheduleSpec,
)
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
    "CatchUp",
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
    "FeatureNotSupportedError",
    "HistoryEvent",
    "Interval",
    "InvalidInstanceIdError",
    "InvalidOperationError",
    "InvalidScheduleError",
    "InvalidStoreUrlError",
    "JsonDataConverter",
    "LeaseLostError",
    "NonDeterminismError",
    "NotATaskHubError",
    "OrchestrationAlreadyExistsError",
    "OrchestrationContext",
    "OrchestrationFailedError",
    "OrchestrationFinishedError",
    "OrchestrationNotFoundError",
    "OrchestrationNotRegisteredError",
    "OrchestrationState",
    "OrchestrationStatus",
    "OrchestrationWaitTimeoutError",
    "Overlap",
    "PayloadTooLargeError",
    "PoisonWorkError",
    "RetryPolicy",
    "ReuseIdPolicy",
    "ScheduleAlreadyExistsError",
    "ScheduleDescription",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "ScheduleRun",
    "ScheduleSpec",
    "SchemaVersionError",
    "SerializationError",
    "StoreError",
    "StoreFullError",
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
