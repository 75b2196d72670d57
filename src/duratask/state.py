"""What a client sees of an orchestration instance: its status, payloads and failure."""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from duratask.converter import DataConverter


class OrchestrationStatus(Enum):
    """The runtime status of an orchestration instance."""

    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"
    PENDING = "PENDING"
    SUSPENDED = "SUSPENDED"

    @property
    def is_terminal(self) -> bool:
        """True once the instance will never run again (unless restarted or rewound)."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED}
)

DEFAULT_TASK_QUEUE = "default"
"""The task queue of work started or called without naming one, and the one a worker serves
unless told otherwise."""


@dataclass(frozen=True, slots=True)
class FailureDetails:
    """Why a task or an orchestration failed: the error's type, message and stack trace, and
    what caused it.

    Failures form a chain through ``inner_failure``. An orchestration that ends FAILED
    because an awaited activity failed has a ``TaskFailedError`` failure whose inner
    failure is the activity's own exception, with the activity's traceback; through a
    sub-orchestration the chain is one link longer. An exception's ``__cause__`` (or the
    exception it was raised while handling) is its inner failure too.

    Attributes:
        error_type: The qualified name of the exception's class, e.g. ``"CardDeclined"``.
        message: The exception's message (cut to 32 KiB).
        stack_trace: The formatted traceback, where it was raised (its last 32 KiB); the
            tracebacks of its causes are in the inner failures.
        inner_failure: What caused it, if anything: the failure of an awaited task, or of
            the exception's ``__cause__``.
        is_non_retriable: True when retrying cannot help: a
            :class:`~duratask.retry.RetryPolicy` then stops at once.
        error_types: The qualified names of the exception's class and its base classes
            (``object`` left out), recorded when the failure was captured, so that
            :meth:`is_caused_by` can match a base class; empty for failures recorded
            without them (by older versions, or built by hand).
    """

    error_type: str
    message: str
    stack_trace: str | None = None
    inner_failure: FailureDetails | None = None
    is_non_retriable: bool = False
    error_types: tuple[str, ...] = ()

    @classmethod
    def from_exception(cls, exc: BaseException, *, non_retriable: bool = False) -> FailureDetails:
        """Capture an exception (type names, message, formatted traceback) and what caused
        it. The message and the trace are each cut to 32 KiB, and the chain of
        causes to 10 links, so a huge error cannot bloat the history."""
        return _capture(cls, exc, non_retriable, MAX_FAILURE_DEPTH)

    def chain(self) -> list[FailureDetails]:
        """This failure, then its inner failure, and so on to the root cause."""
        links: list[FailureDetails] = []
        link: FailureDetails | None = self
        while link is not None:
            links.append(link)
            link = link.inner_failure
        return links

    def is_caused_by(self, exc_type: type[BaseException]) -> bool:
        """Whether this failure or one in its chain was an ``exc_type`` (or a subclass).

        Classes are matched by qualified name, against the error's class and its base
        classes as recorded when it failed. Use it where an orchestration catches
        :class:`~duratask.errors.TaskFailedError`::

            except TaskFailedError as error:
                if error.details.is_caused_by(ValueError):
                    ...
        """
        wanted = exc_type.__qualname__
        return any(wanted in (link.error_types or (link.error_type,)) for link in self.chain())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (``inner_failure`` nested as a dict)."""
        return {
            "error_type": self.error_type,
            "message": self.message,
            "stack_trace": self.stack_trace,
            "inner_failure": self.inner_failure.to_dict() if self.inner_failure else None,
            "is_non_retriable": self.is_non_retriable,
            "error_types": list(self.error_types),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailureDetails:
        """The inverse of :meth:`to_dict` (fields it lacks, as in failures stored by older
        versions, take their defaults)."""
        inner = data.get("inner_failure")
        return cls(
            error_type=data["error_type"],
            message=data["message"],
            stack_trace=data.get("stack_trace"),
            inner_failure=cls.from_dict(inner) if inner else None,
            is_non_retriable=bool(data.get("is_non_retriable", False)),
            error_types=tuple(data.get("error_types") or ()),
        )

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> FailureDetails:
        """The inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


MAX_FAILURE_DEPTH = 10  # links of a failure chain kept; deeper causes are left out


def type_names(exc_type: type[BaseException]) -> tuple[str, ...]:
    """The qualified names of a class and its bases, ``object`` left out."""
    return tuple(t.__qualname__ for t in exc_type.__mro__ if t is not object)


def _capture(
    cls: type[FailureDetails], exc: BaseException, non_retriable: bool, depth: int
) -> FailureDetails:
    from duratask.errors import TaskFailedError

    inner: FailureDetails | None = None
    cause = exc.__cause__
    if cause is None and not exc.__suppress_context__:
        cause = exc.__context__
    if isinstance(exc, TaskFailedError):
        inner = exc.details  # the task's own failure, with its traceback
    elif cause is not None and depth > 1:
        inner = _capture(cls, cause, False, depth - 1)
    return cls(
        error_type=type(exc).__qualname__,
        message=_bounded(str(exc)),
        stack_trace=_bounded(
            "".join(traceback.format_exception(exc, chain=inner is None)), keep_end=True
        ),
        inner_failure=inner,
        is_non_retriable=non_retriable,
        error_types=type_names(type(exc)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class OrchestrationState:
    """A snapshot of one orchestration instance, as stored.

    ``serialized_*`` fields hold the JSON text exactly as stored; the ``input``, ``output`` and
    ``custom_status`` properties decode it with the client's data converter.

    Attributes:
        instance_id: The instance's id.
        name: The registered name of its orchestration.
        version: The orchestration version the instance is pinned to (None: unversioned).
        runtime_status: Where the instance is in its life.
        created_at: When the instance was created (aware UTC).
        last_updated_at: When its row last changed (aware UTC).
        completed_at: When it reached a terminal status, if it has.
        execution_id: The id of its current execution (new at each continue-as-new); None
            until a worker first runs it.
        serialized_input: The input as stored JSON text.
        serialized_output: The output as stored JSON text (for a TERMINATED instance, the
            output given to terminate).
        serialized_custom_status: The last custom status the orchestration set, as JSON text.
        failure_details: Why the instance FAILED, if it did.
        parent_instance_id: The instance that started this one as a sub-orchestration.
        scheduled_start_at: The delayed start asked for with ``start_at``, if any.
        task_queue: The task queue the instance runs on: only workers serving it lease it.
        converter: The data converter the payload properties decode with (set by the
            client that returned the state; None decodes plain JSON values).
    """

    instance_id: str
    name: str
    version: str | None
    runtime_status: OrchestrationStatus
    created_at: datetime
    last_updated_at: datetime
    completed_at: datetime | None = None
    execution_id: str | None = None
    serialized_input: str | None = None
    serialized_output: str | None = None
    serialized_custom_status: str | None = None
    failure_details: FailureDetails | None = None
    parent_instance_id: str | None = None
    scheduled_start_at: datetime | None = None
    task_queue: str = DEFAULT_TASK_QUEUE
    converter: DataConverter | None = field(default=None, compare=False, repr=False)

    def _decode(self, text: str | None) -> Any:
        return decode_payload(text, self.converter)

    @property
    def input(self) -> Any:
        """The decoded input (plain JSON values)."""
        return self._decode(self.serialized_input)

    @property
    def output(self) -> Any:
        """The decoded output (plain JSON values)."""
        return self._decode(self.serialized_output)

    @property
    def custom_status(self) -> Any:
        """The decoded custom status (plain JSON values)."""
        return self._decode(self.serialized_custom_status)

    def raise_if_failed(self) -> None:
        """Raise :class:`OrchestrationFailedError` if the instance ended FAILED."""
        if self.runtime_status is OrchestrationStatus.FAILED:
            from duratask.errors import OrchestrationFailedError

            raise OrchestrationFailedError(self.instance_id, self.failure_details)


MAX_FAILURE_TEXT = 32 * 1024


def _bounded(text: str, *, keep_end: bool = False) -> str:
    """``text`` cut to MAX_FAILURE_TEXT characters, saying how much was left out (a stack
    trace keeps its end, where the error was raised)."""
    if len(text) <= MAX_FAILURE_TEXT:
        return text
    cut = len(text) - MAX_FAILURE_TEXT
    note = f"[... {cut} characters left out ...]"
    if keep_end:
        return note + text[cut:]
    return text[:MAX_FAILURE_TEXT] + note


def decode_payload(text: str | None, converter: DataConverter | None) -> Any:
    """A stored JSON payload as a value: through ``converter``, or as plain JSON values."""
    if text is None:
        return None
    if converter is None:
        return json.loads(text)
    return converter.deserialize(text)
