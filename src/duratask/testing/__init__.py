"""Testing tools for code that uses duratask.

- :class:`TimeSkippingHub` (and :class:`SyncTimeSkippingHub`): an in-process task hub on a
  :class:`VirtualClock`, so orchestrations that wait days on timers, event timeouts or retry
  back-offs finish in milliseconds.
- :func:`replay` and :func:`replay_many`: run new orchestration code against recorded
  histories and report non-determinism (:class:`HistoryMismatchError`) before a deploy
  breaks running instances.
"""

from duratask.testing._clock import VirtualClock
from duratask.testing._hub import TimeSkippingHub
from duratask.testing._replay import (
    HistoryMismatchError,
    InvalidHistoryError,
    ReplayFailedError,
    ReplayResult,
    describe_action,
    replay,
    replay_many,
)
from duratask.testing._sync_hub import SyncTimeSkippingHub

__all__ = [
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
