"""The worker reports a full disk once per interval, without a traceback, whatever the
site that met it; other errors pass as they are."""

from __future__ import annotations

import logging
import sys

import duratask as dt
from duratask.worker._store_full import StoreFullFilter


def record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        info = sys.exc_info()
    return logging.LogRecord("duratask.worker", logging.ERROR, __file__, 1, "failed", (), info)


def test_a_full_disk_is_one_warning_per_interval() -> None:
    only = StoreFullFilter(interval=3600)
    full = dt.StoreFullError("SQLite store 'hub.db': database or disk is full")
    first = record(full)
    assert only.filter(first)
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert getattr(first, "event", None) == "duratask.store.full"
    assert "the task hub's disk is full" in first.getMessage()
    assert not any(only.filter(record(full)) for _ in range(50))
    wrapped = dt.StoreError("commit failed")
    wrapped.__cause__ = full
    assert not only.filter(record(wrapped)), "a full disk behind another error counts too"
    other = record(dt.StoreError("database is locked"))
    assert only.filter(other) and other.exc_info is not None, "other errors pass unchanged"

    again = StoreFullFilter(interval=0)
    assert again.filter(record(full)) and again.filter(record(full))
    assert "(0 more failures" in record_message(again, full)


def record_message(only: StoreFullFilter, exc: BaseException) -> str:
    shown = record(exc)
    assert only.filter(shown)
    return shown.getMessage()


def test_a_full_disk_named_in_the_message_is_folded_in_too() -> None:
    """A heartbeat that fails logs the exception as an argument, not a traceback."""
    only = StoreFullFilter(interval=3600)
    full = dt.StoreFullError("SQLite store 'hub.db': database or disk is full")
    beats = [
        logging.LogRecord(
            "duratask.worker", logging.WARNING, __file__, 1, "heartbeat: %s", ("w1", full), None
        )
        for _ in range(5)
    ]
    assert [only.filter(beat) for beat in beats] == [True, False, False, False, False]
    assert "the task hub's disk is full" in beats[0].getMessage()
    outage = logging.LogRecord(
        "duratask.worker",
        logging.WARNING,
        __file__,
        1,
        "heartbeat: %s",
        (dt.StoreError("x"),),
        None,
    )
    assert only.filter(outage) and outage.getMessage() == "heartbeat: x"
