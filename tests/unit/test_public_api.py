"""The public API: names exported from ``duratask`` are pinned, so removals are deliberate."""

from __future__ import annotations

import duratask as dt

EXPECTED = [
    "ActivityContext",
    "ActivityNotRegisteredError",
    "AsyncTaskHubClient",
    "DataConverter",
    "DurataskError",
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
