"""Reading recorded histories for replay: JSON text, files, directories or event lists."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from duratask import history as h

HistorySource = str | Path | Sequence[h.HistoryEvent]


def load_history(history: HistorySource, label: str | None) -> tuple[list[h.HistoryEvent], str]:
    """The events of ``history`` and the label that names it in errors; ValueError if it is
    not a history. A str is JSON text, never a file name (pass a Path for a file)."""
    if isinstance(history, Path):
        label = label or str(history)
        try:
            text = history.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{label}: cannot read the history file: {exc}") from exc
        return _parse(text, label), label
    label = label or "history"
    if isinstance(history, str):
        return _parse(history, label), label
    events = list(history)
    for position, event in enumerate(events):
        if not isinstance(event, h.HistoryEvent):
            raise ValueError(
                f"{label}: item #{position} is a {type(event).__qualname__}, not a HistoryEvent"
            )
    return events, label


def _parse(text: str, label: str) -> list[h.HistoryEvent]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        hint = " (pass a pathlib.Path to read a file)" if not text.lstrip().startswith("[") else ""
        raise ValueError(f"{label}: not JSON text{hint}: {exc}") from exc
    if not isinstance(data, list):
        raise ValueError(
            f"{label}: expected a JSON array of history events, got a {type(data).__name__}"
        )
    events: list[h.HistoryEvent] = []
    for position, item in enumerate(data):
        try:
            if not isinstance(item, dict):
                raise TypeError(f"expected an object, got a {type(item).__name__}")
            events.append(h.event_from_dict(item))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{label}: history event #{position} is not valid: {exc}") from exc
    return events


def history_sources(histories: str | Path | Iterable[HistorySource]) -> list[HistorySource]:
    """A directory's ``*.json`` files by name, or the given histories as a list."""
    if isinstance(histories, str | Path):
        directory = Path(histories)
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a directory of history files")
        files: list[HistorySource] = [*sorted(directory.glob("*.json"))]
        return files
    return list(histories)
