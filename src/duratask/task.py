"""Durable tasks: what an orchestration awaits.

A task is created by the :class:`OrchestrationContext` (activity, timer, external event,
sub-orchestration) or by :func:`when_all` / :func:`when_any`. Awaiting (or, in a generator
orchestration, yielding) a task suspends the orchestration until the history says the task
completed. Awaiting a task that already completed returns its result at once.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Task(Generic[T]):
    """A durable unit of work the orchestration can await."""

    def __init__(self) -> None:
        self._complete = False
        self._result: Any = None
        self._exception: BaseException | None = None
        self._callbacks: list[Callable[[Task[Any]], None]] = []

    @property
    def is_complete(self) -> bool:
        """True once the task has a result or an error."""
        return self._complete

    @property
    def is_failed(self) -> bool:
        """True if the task completed with an error."""
        return self._exception is not None

    def get_result(self) -> T:
        """The result; raises the task's error if it failed, ValueError if not complete."""
        if not self._complete:
            raise ValueError("the task has not completed yet")
        if self._exception is not None:
            raise self._exception
        return self._result  # type: ignore[no-any-return]

    def get_exception(self) -> BaseException | None:
        """The error the task failed with, if any."""
        return self._exception

    def __await__(self) -> Generator[Task[Any], Any, T]:
        if self._complete:
            return self.get_result()
        # The engine resumes the orchestration with send(result) or throw(error).
        result: T = yield self
        return result

    # -- completion (called by the engine) ------------------------------------------------
    def _add_callback(self, callback: Callable[[Task[Any]], None]) -> None:
        self._callbacks.append(callback)

    def _set_result(self, result: Any) -> None:
        if self._complete:
            return
        self._complete = True
        self._result = result
        self._notify()

    def _set_exception(self, exc: BaseException) -> None:
        if self._complete:
            return
        self._complete = True
        self._exception = exc
        self._notify()

    def _notify(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


class CompletableTask(Task[T]):
    """A task completed by one history event (activity, timer, event, sub-orchestration)."""


class WhenAllTask(Task[list[Any]]):
    """Completes when every child completed (results in the children's order); fails as soon
    as one child fails, with that child's error."""

    def __init__(self, tasks: Sequence[Task[Any]]) -> None:
        super().__init__()
        self._tasks = list(tasks)
        self._remaining = 0
        for task in self._tasks:
            if task.is_failed:
                self._set_exception(task.get_exception())  # type: ignore[arg-type]
                return
            if not task.is_complete:
                self._remaining += 1
                task._add_callback(self._on_child_done)
        if self._remaining == 0:
            self._set_result([t.get_result() for t in self._tasks])

    def _on_child_done(self, child: Task[Any]) -> None:
        if self._complete:
            return
        if child.is_failed:
            self._set_exception(child.get_exception())  # type: ignore[arg-type]
            return
        self._remaining -= 1
        if self._remaining == 0:
            self._set_result([t.get_result() for t in self._tasks])


class WhenAnyTask(Task[Task[Any]]):
    """Completes when the first child completes (successfully or not); its result is that child."""

    def __init__(self, tasks: Sequence[Task[Any]]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("when_any needs at least one task")
        self._tasks = list(tasks)
        for task in self._tasks:
            if task.is_complete:
                self._set_result(task)
                return
        for task in self._tasks:
            task._add_callback(self._on_child_done)

    def _on_child_done(self, child: Task[Any]) -> None:
        self._set_result(child)


def when_all(tasks: Sequence[Task[T]]) -> Task[list[T]]:
    """A task completing with the list of results, in order, once all tasks completed."""
    return WhenAllTask(tasks)


def when_any(tasks: Sequence[Task[Any]]) -> Task[Task[Any]]:
    """A task completing with the first of ``tasks`` to complete."""
    return WhenAnyTask(tasks)
