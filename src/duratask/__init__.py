"""duratask: durable orchestrations for Python, replayed from an event-sourced history.

Write orchestrations as ``async def`` functions that call activities, wait on durable timers
and external events, and start sub-orchestrations; run them with a :class:`TaskHubWorker`
on an embedded SQLite file (or in memory) and drive them with a :class:`TaskHubClient`.
"""

from duratask.client import AsyncTaskHubClient, ReuseIdPolicy, TaskHubClient
from duratask.context import ActivityContext, OrchestrationContext
from duratask.converter import DataConverter, JsonDataConverter
from duratask.errors import (
    ActivityNotRegisteredError,
    ActivityTimeoutError,
    DurataskError,
    EventTimeoutError,
    InvalidInstanceIdError,
    InvalidOperationError,
    InvalidScheduleError,
    LeaseLostError,
    NonDeterminismError,
    OrchestrationAlreadyExistsError,
    OrchestrationFailedError,
    OrchestrationNotFoundError,
    OrchestrationNotRegisteredError,
    OrchestrationWaitTimeoutError,
    PayloadTooLargeError,
    PoisonWorkError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    SerializationError,
    StoreError,
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
    "DataConverter",
    "DurataskError",
    "EventTimeoutError",
    "EventType",
    "FailureDetails",
    "HistoryEvent",
    "Interval",
    "InvalidInstanceIdError",
    "InvalidOperationError",
    "InvalidScheduleError",
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
