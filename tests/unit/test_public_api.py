"""The public API: names exported from ``duratask``, ``duratask.testing`` and
``duratask.backends`` are pinned, so additions and removals are deliberate."""

from __future__ import annotations

import pytest

import duratask as dt
import duratask.backends
import duratask.testing

EXPECTED = [
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


def test_exports_are_pinned_and_sorted() -> None:
    assert dt.__all__ == EXPECTED
    assert dt.__all__ == sorted(dt.__all__)


def test_every_export_exists() -> None:
    for name in dt.__all__:
        assert hasattr(dt, name), name


def test_errors_share_one_base() -> None:
    for name in dt.__all__:
        obj = getattr(dt, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, dt.DurataskError), name


def test_event_timeout_is_a_timeout_error() -> None:
    assert issubclass(dt.EventTimeoutError, TimeoutError)


TESTING = [
    "HistoryMismatchError",
    "InvalidHistoryError",
    "ReplayFailedError",
    "ReplayResult",
    "SyncTimeSkippingHub",
    "TimeSkippingHub",
    "VirtualClock",
    "describe_action",
    "replay",
    "replay_many",
]

BACKENDS = [
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


@pytest.mark.parametrize(
    ("module", "expected"),
    [(duratask.testing, TESTING), (duratask.backends, BACKENDS)],
    ids=["testing", "backends"],
)
def test_package_exports_are_pinned_sorted_and_exist(module: object, expected: list[str]) -> None:
    exported = module.__all__  # type: ignore[attr-defined]
    assert exported == expected
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(module, name), name
