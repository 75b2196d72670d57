"""Retry policies for activities and sub-orchestrations.

Retries happen inside the orchestration: after a failed attempt the engine schedules a
durable timer (recorded in history) and then the next attempt, so retries survive restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from duratask.errors import TaskFailedError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how quickly to retry a failed task.

    The delay before attempt ``n + 1`` is ``first_retry_interval * backoff_coefficient ** (n - 1)``,
    capped at ``max_retry_interval``. Retrying stops after ``max_number_of_attempts`` attempts,
    once ``retry_timeout`` has passed since the first attempt, when ``handle`` returns False for
    the failure, or when the failure is marked non-retriable.

    Attributes:
        first_retry_interval: The delay before the second attempt (greater than zero).
        max_number_of_attempts: How many attempts at most, the first one included.
        backoff_coefficient: The factor each delay is multiplied by for the next (1.0 or
            more; 1.0 keeps the delay constant).
        max_retry_interval: The longest delay between two attempts, if any.
        retry_timeout: How long after the first attempt no new attempt is started, if any.
        handle: Decides, from the failure of an attempt, whether to retry it (True) or to
            fail the task now (False). It runs inside the orchestration, so it must be
            deterministic, like orchestration code; if it raises, the task fails with
            that error.
    """

    first_retry_interval: timedelta
    max_number_of_attempts: int
    backoff_coefficient: float = 1.0
    max_retry_interval: timedelta | None = None
    retry_timeout: timedelta | None = None
    handle: Callable[[TaskFailedError], bool] | None = None

    def __post_init__(self) -> None:
        if self.first_retry_interval <= timedelta(0):
            raise ValueError("RetryPolicy.first_retry_interval must be greater than zero")
        if self.max_number_of_attempts < 1:
            raise ValueError("RetryPolicy.max_number_of_attempts must be at least 1")
        if self.backoff_coefficient < 1.0:
            raise ValueError("RetryPolicy.backoff_coefficient must be at least 1.0")
        if self.max_retry_interval is not None and self.max_retry_interval <= timedelta(0):
            raise ValueError("RetryPolicy.max_retry_interval must be greater than zero")

    def next_delay(
        self,
        attempts_made: int,
        first_attempt_at: datetime,
        now: datetime,
        failure: TaskFailedError,
    ) -> timedelta | None:
        """The delay before the next attempt, or None to stop retrying and fail."""
        if attempts_made >= self.max_number_of_attempts:
            return None
        if failure.details.is_non_retriable:
            return None
        if self.handle is not None and not self.handle(failure):
            return None
        seconds = self.first_retry_interval.total_seconds() * (
            self.backoff_coefficient ** (attempts_made - 1)
        )
        delay = timedelta(seconds=seconds)
        if self.max_retry_interval is not None:
            delay = min(delay, self.max_retry_interval)
        if self.retry_timeout is not None and now + delay > first_attempt_at + self.retry_timeout:
            return None
        return delay
