"""Reading recorded histories for replay: JSON text, files, directories or event lists."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from duratask import history as h
from duratask.errors import DurataskError

HistorySource = str | Path | Sequence[h.HistoryEvent]

_EXPORT_HINT = "as `duratask history ID --output json` writes it"
_JSON_TYPES = {dict: "an object", str: "a string", int: "a number", float: "a number"}


class InvalidHistoryError(DurataskError, ValueError):
    """What was given to replay is not a recorded history.

    Attributes:
        source: The file (or the text) given.
        problem: What is wrong with it: empty, not JSON, not an array, an invalid event,
            no ``ExecutionStarted``...
    """

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


def load_history(history: HistorySource, label: str | None) -> tuple[list[h.HistoryEvent], str]:
    """The events of ``history`` and the label that names it in errors;
    :class:`InvalidHistoryError` if it is not a history. A str is JSON text, never a file
    name (pass a Path for a file)."""
    if isinstance(history, Path):
        label = label or str(history)
        try:
            text = history.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidHistoryError(
                label, f"the file is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        except OSError as exc:
            raise InvalidHistoryError(
                label, f"cannot read the history file: {exc.strerror or exc}"
            ) from exc
        return _parse(text, label, file=True), label
    label = label or "history"
    if isinstance(history, str):
        return _parse(history, label, file=False), label
    events = list(history)
    for position, event in enumerate(events):
        if not isinstance(event, h.HistoryEvent):
            raise InvalidHistoryError(
                label, f"item #{position} is a {type(event).__qualname__}, not a HistoryEvent"
            )
    if not events:
        raise InvalidHistoryError(label, "the history has no events")
    return events, label


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), f"a {type(value).__name__}")


def _parse(text: str, label: str, *, file: bool) -> list[h.HistoryEvent]:
    what = "the file" if file else "the history text"
    if not text.strip():
        raise InvalidHistoryError(
            label, f"{what} is empty; expected a JSON array of history events, {_EXPORT_HINT}"
        )
    try:
        data = json.loads(text)
    except RecursionError:
        raise InvalidHistoryError(label, f"{what} is JSON nested too deeply to read") from None
    except ValueError as exc:
        hint = ""
        if not file and not text.lstrip().startswith(("[", "{")):
            hint = " (pass a pathlib.Path to read a file)"
        raise InvalidHistoryError(label, f"{what} is not JSON text{hint}: {exc}") from exc
    if not isinstance(data, list):
        raise InvalidHistoryError(
            label,
            f"expected a JSON array of history events, got {_json_type(data)} ({_EXPORT_HINT})",
        )
    if not data:
        raise InvalidHistoryError(
            label,
            f"{what} holds an empty JSON array: a history has at least its ExecutionStarted event",
        )
    events: list[h.HistoryEvent] = []
    for position, item in enumerate(data):
        try:
            if not isinstance(item, dict):
                raise TypeError(f"expected an object, got {_json_type(item)}")
            events.append(h.event_from_dict(item))
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InvalidHistoryError(
                label, f"history event #{position} is not valid: {problem}"
            ) from exc
    return events


def require_start(events: list[h.HistoryEvent], label: str) -> h.ExecutionStarted:
    """The history's ExecutionStarted event; :class:`InvalidHistoryError` if it has none."""
    started = next((e for e in events if isinstance(e, h.ExecutionStarted)), None)
    if started is None:
        raise InvalidHistoryError(
            label,
            f"the history has no ExecutionStarted event, so it is not the record of an "
            f"orchestration run ({len(events)} events, starting with "
            f"{type(events[0]).__name__})",
        )
    return started


def history_sources(histories: str | Path | Iterable[HistorySource]) -> list[HistorySource]:
    """A directory's ``*.json`` files by name, or the given histories as a list."""
    if isinstance(histories, str | Path):
        directory = Path(histories)
        if not directory.is_dir():
            raise InvalidHistoryError(str(directory), "is not a directory of history files")
        files: list[HistorySource] = [*sorted(directory.glob("*.json"))]
        return files
    return list(histories)
