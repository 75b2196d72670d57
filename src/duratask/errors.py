"""The errors duratask raises, each a subclass of :class:`DurataskError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from duratask.state import FailureDetails


class DurataskError(Exception):
    """Base of every duratask error."""


class TaskFailedError(DurataskError):
    """An activity or sub-orchestration failed; raised where the orchestration awaited it.

    The original exception is not raised in the orchestration (it was raised in another
    process, perhaps long ago): its type name, message and stack trace are in ``details``.
    Catch this error and look at ``details.error_type`` to react to a particular failure.

    Attributes:
        details: What failed: the error's type name, message and stack trace.
        task_id: The sequence number of the failed task in the orchestration's history.
    """

    def __init__(self, message: str, details: FailureDetails, *, task_id: int = -1) -> None:
        super().__init__(message)
        self.details = details
        self.task_id = task_id

    @property
    def failure_details(self) -> FailureDetails:
        """The same as ``details`` (the name the Durable Task Framework uses)."""
        return self.details


class EventTimeoutError(DurataskError, TimeoutError):
    """``wait_for_external_event`` gave up: no event of that name arrived in time.

    Attributes:
        event_name: The name of the event that was waited for.
    """

    def __init__(self, event_name: str) -> None:
        super().__init__(f"timed out waiting for external event {event_name!r}")
        self.event_name = event_name


class NonDeterminismError(DurataskError):
    """Replaying the history did not reproduce the same actions: the code changed under it."""


class OrchestrationAlreadyExistsError(DurataskError):
    """An instance with this id already exists and the reuse policy does not allow replacing it.

    Attributes:
        instance_id: The id that is taken.
    """

    def __init__(self, instance_id: str, status: object) -> None:
        shown = getattr(status, "value", status)
        super().__init__(f"orchestration instance {instance_id!r} already exists (status {shown})")
        self.instance_id = instance_id


class OrchestrationNotFoundError(DurataskError, LookupError):
    """No instance with this id exists in the task hub.

    Attributes:
        instance_id: The id that was looked for.
    """

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no orchestration instance with id {instance_id!r}")
        self.instance_id = instance_id


class OrchestrationNotRegisteredError(DurataskError):
    """The worker has no orchestration (or version) registered under this name."""


class ActivityNotRegisteredError(DurataskError):
    """The worker has no activity registered under this name."""


class OrchestrationFailedError(DurataskError):
    """Raised by :meth:`~duratask.state.OrchestrationState.raise_if_failed` for a FAILED instance.

    Attributes:
        instance_id: The instance that failed.
        details: Why it failed, when the store recorded it.
    """

    def __init__(self, instance_id: str, details: FailureDetails | None) -> None:
        what = f"{details.error_type}: {details.message}" if details else "no details"
        super().__init__(f"orchestration {instance_id!r} failed: {what}")
        self.instance_id = instance_id
        self.details = details


class SerializationError(DurataskError, TypeError):
    """A payload could not be converted to or from JSON."""


class PayloadTooLargeError(DurataskError, ValueError):
    """A serialised payload is larger than the configured maximum.

    Attributes:
        size: The payload's size in bytes, once serialised.
        limit: The configured maximum (``max_payload_bytes``).
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} is {size} bytes once serialised, over the limit of {limit} bytes "
            "(raise max_payload_bytes, or store large data elsewhere and pass a reference)"
        )
        self.size = size
        self.limit = limit


class InvalidTextError(SerializationError, ValueError):
    """Text that duratask cannot store: it is not valid Unicode (a lone surrogate, say
    ``"\\ud800"``, which no UTF-8 reader can decode). Raised where the text comes in, naming
    the field; a :class:`SerializationError` and a ``ValueError``."""

    def __init__(self, what: str, problem: str) -> None:
        super().__init__(
            f"{what} is not valid Unicode text: {problem}; duratask stores only text that "
            "can be written as UTF-8"
        )
        self.what = what
        self.problem = problem


class InvalidInstanceIdError(DurataskError, ValueError):
    """An instance id is empty, too long (over 256 characters) or contains control
    characters or lone surrogates."""


class LeaseLostError(DurataskError):
    """A work item's lease was lost (expired and taken by another worker): its commit is refused."""


class ActivityTimeoutError(DurataskError, TimeoutError):
    """An activity ran past its ``timeout`` (start to close) or went longer than its
    ``heartbeat_timeout`` without a heartbeat. Its task fails with this error (retried by a
    retry policy like any failure); the activity's code may still be running: an ``async``
    activity is cancelled, a plain function's thread cannot be stopped and runs on until it
    returns, its result discarded."""


class InstanceBusyError(DurataskError):
    """An episode a worker ran on its own copy of an instance was not committed: another
    worker holds the instance, its history moved on, or a message waits for it. Nothing was
    written; the worker hands the activity's result over the usual way instead."""


class TaskHubNotFoundError(DurataskError, LookupError):
    """There is no task hub where the store URL points (and the store was told not to
    create one)."""


class PoisonWorkError(DurataskError):
    """Work that was delivered too many times without completing (its worker crashed, hung
    or failed each time) was given up: an orchestration is marked FAILED, an activity's
    task fails with this error."""


class StoreError(DurataskError):
    """The task hub's storage failed or is unreachable."""


class OrchestrationWaitTimeoutError(DurataskError, TimeoutError):
    """A client wait (start or completion) ran out of time."""


class InvalidOperationError(DurataskError, RuntimeError):
    """The operation does not apply to the instance in its current state
    (e.g. purging a running instance)."""


class InvalidScheduleError(DurataskError, ValueError):
    """A schedule's definition cannot work (an invalid cron expression, an unknown time zone,
    an end before the start, a zero interval...); nothing was stored."""


class ScheduleNotFoundError(DurataskError, LookupError):
    """No schedule with this id exists in the task hub.

    Attributes:
        schedule_id: The id looked for.
    """

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule {schedule_id!r} in the task hub")
        self.schedule_id = schedule_id


class ScheduleAlreadyExistsError(DurataskError):
    """A schedule with this id already exists; nothing was changed.

    Attributes:
        schedule_id: The id that is taken.
    """

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule {schedule_id!r} already exists")
        self.schedule_id = schedule_id
