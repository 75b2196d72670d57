"""The errors duratask raises, each a subclass of :class:`DurataskError`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from duratask.state import FailureDetails, OrchestrationStatus


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
    """No orchestration (or version) is registered under this name. A worker fails an
    instance with it only when created with ``unknown_work="fail"``; by default it leaves
    such work to a worker that registered it."""


class ActivityNotRegisteredError(DurataskError):
    """No activity is registered under this name. A worker fails a task with it only when
    created with ``unknown_work="fail"``; by default it leaves such work to a worker that
    registered it."""


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


class NotATaskHubError(StoreError):
    """The store URL points at a SQLite file or PostgreSQL schema that holds something other
    than a duratask task hub (another application's tables). duratask neither creates a hub
    there, nor reads, changes or deletes anything in it.

    Attributes:
        location: The file or schema, as the store describes it.
        foreign: Some of the objects found there that are not duratask's.
    """

    def __init__(self, location: str, foreign: list[str]) -> None:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        super().__init__(
            f"{location} is not a duratask task hub: it holds other tables ({shown}); "
            "duratask creates a hub only where there is none, in a new or empty file or "
            "schema (point the store URL at one)"
        )
        self.location = location
        self.foreign = list(foreign)


class SchemaVersionError(StoreError):
    """The task hub's schema is at a version this duratask cannot use: newer than it knows
    (upgrade duratask), or not what its version record says (a damaged hub).

    Attributes:
        found: The version the hub records (0 where it records none).
        supported: The newest version this duratask knows.
    """

    def __init__(self, location: str, found: int, supported: int, problem: str = "") -> None:
        if problem:
            what = f"{location} records schema version {found}, but {problem}"
        else:
            what = (
                f"{location} has schema version {found}, newer than this duratask supports "
                f"({supported}): upgrade duratask to use it"
            )
        super().__init__(what)
        self.found = found
        self.supported = supported


class StoreFullError(StoreError):
    """The task hub's disk is full (SQLite: ``database or disk is full``). Nothing was
    written by the call that raised it, and nothing committed before is lost; once space is
    freed the store recovers by itself."""


class FeatureNotSupportedError(DurataskError, NotImplementedError):
    """The task hub's store does not offer a feature asked of it (for example durable
    entities on a store kind that does not keep them yet). The message names the feature
    and the stores that have it."""


class InvalidStoreUrlError(DurataskError, ValueError):
    """A store URL that duratask cannot use as written: malformed, of an unknown kind, or
    naming what cannot hold a task hub. The message shows the right form."""


class OrchestrationWaitTimeoutError(DurataskError, TimeoutError):
    """A client wait (start or completion) ran out of time."""


class InvalidOperationError(DurataskError, RuntimeError):
    """The operation does not apply to the instance in its current state
    (e.g. purging a running instance)."""


class OrchestrationFinishedError(InvalidOperationError):
    """An event, terminate, suspend or resume was sent to an instance that has already
    finished (COMPLETED, FAILED or TERMINATED): no worker would act on it, so the client
    refuses it and nothing is stored. An :class:`InvalidOperationError`.

    Attributes:
        instance_id: The instance that has finished.
        status: Its status (an :class:`~duratask.OrchestrationStatus`).
    """

    def __init__(self, instance_id: str, status: OrchestrationStatus, action: str) -> None:
        super().__init__(
            f"cannot {action} orchestration {instance_id!r}: it has already finished "
            f"({status.value})"
        )
        self.instance_id = instance_id
        self.status = status


class EntityOperationFailedError(TaskFailedError):
    """An entity operation an orchestration called raised; raised where it awaited
    ``call_entity``. The entity rolled back that operation's state change and went on.

    Attributes:
        entity_id: The entity (``@name@key``).
        operation: The operation that failed.
    """

    def __init__(
        self,
        message: str,
        details: FailureDetails,
        *,
        entity_id: str,
        operation: str,
        task_id: int = -1,
    ) -> None:
        super().__init__(message, details, task_id=task_id)
        self.entity_id = entity_id
        self.operation = operation


class EntityLockError(DurataskError, RuntimeError):
    """A critical section was misused: nested ``lock_entities``, a call inside a section to
    an entity it did not lock, or a lock on no entities."""


class EntityNotRegisteredError(DurataskError):
    """An entity operation reached a worker where no entity of that name is registered."""


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
