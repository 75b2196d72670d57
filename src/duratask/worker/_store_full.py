"""A full disk under the task hub is one condition, not an error per attempt.

While the disk is full every write the worker tries fails: leasing, committing, renewing,
heartbeats. Each site logs its failure, with a traceback or naming the exception; this
filter on the worker's logger turns those caused by :class:`StoreFullError` into one
warning per interval, naming the condition and how many failures it stands for, without a
traceback. The worker retries as it does for any store failure, and goes on once space is
back.
"""

from __future__ import annotations

import logging
import threading
import time

from duratask.errors import StoreFullError

# How often a full disk is reported while it lasts.
REPORT_EVERY_SECONDS = 30.0
EVENT = "duratask.store.full"


def _full_cause(exc: BaseException | None) -> StoreFullError | None:
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, StoreFullError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _exception_arg(record: logging.LogRecord) -> BaseException | None:
    """An exception logged as a message argument (``"... failed: %s", exc``)."""
    args = record.args if isinstance(record.args, tuple) else ()
    return next((arg for arg in args if isinstance(arg, BaseException)), None)


class StoreFullFilter(logging.Filter):
    """Lets through one record per ``interval`` seconds of those a full disk caused, as a
    warning without a traceback; drops the others (counted in the next report)."""

    def __init__(self, interval: float = REPORT_EVERY_SECONDS) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        self._quiet_until = 0.0
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        full = _full_cause(record.exc_info[1] if record.exc_info else _exception_arg(record))
        if full is None:
            return True
        now = time.monotonic()
        with self._lock:
            if now < self._quiet_until:
                self._held_back += 1
                return False
            self._quiet_until = now + self.interval
            held_back, self._held_back = self._held_back, 0
        record.msg = (
            "the task hub's disk is full (%s); the worker retries, and goes on by itself once "
            "space is freed (%d more failures since the last report; next report in %ss)"
        )
        record.args = (full, held_back, int(self.interval))
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.event = EVENT
        return True


FILTER = StoreFullFilter()


def install(logger: logging.Logger) -> None:
    """Put the one filter on ``logger`` (once, however many workers the process runs)."""
    if FILTER not in logger.filters:
        logger.addFilter(FILTER)
