"""Parsing command-line values: times, JSON arguments and status names.

Every parser raises :class:`~duratask.cli.errors.CliError` (exit code 2) naming the option
and what is wrong with the value.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from duratask.cli.errors import usage_error
from duratask.state import OrchestrationStatus

TIME_FORMATS_HELP = (
    "ISO-8601 (naive means UTC, e.g. 2024-05-01T12:00 or 2024-05-01T12:00+02:00), "
    "'now', or relative to now: -30m, -2h, -7d, +10m, -1h30m (units s, m, h, d, w)"
)

_RELATIVE = re.compile(r"(?P<sign>[+-])(?P<parts>(?:\d+[smhdw])+)")
_PART = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, option: str, *, now: Callable[[], datetime] | None = None) -> datetime:
    """A timezone-aware UTC datetime from ISO-8601, ``now`` or a relative offset."""
    current = (now or (lambda: datetime.now(UTC)))()
    value = text.strip()
    if value.lower() == "now":
        return current
    try:
        relative = _RELATIVE.fullmatch(value.lower())
        if relative is not None:
            delta = timedelta()
            for amount, unit in _PART.findall(relative["parts"]):
                delta += timedelta(**{_UNITS[unit]: int(amount)})
            return current - delta if relative["sign"] == "-" else current + delta
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise usage_error(
                f"{option}: cannot read {text[:80]!r} as a time; use {TIME_FORMATS_HELP}"
            ) from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except OverflowError:
        # e.g. 9999-12-31T23:59:59-14:00 (past the last UTC time) or +99999999w
        raise usage_error(
            f"{option}: the time {text[:80]!r} is out of range: it falls outside years "
            "1-9999 in UTC"
        ) from None


def parse_json_argument(text: str, option: str) -> Any:
    """The JSON value of an option: inline JSON, ``@path`` for a file or ``@-`` for stdin."""
    source = f"{option}"
    if text.startswith("@"):
        path = text[1:]
        if path == "-":
            source = f"{option} (stdin)"
            text = sys.stdin.read()
        else:
            source = f"{option} file {path!r}"
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as exc:
                raise usage_error(f"cannot read {source}: {exc.strerror or exc}") from None
            except UnicodeDecodeError as exc:
                raise usage_error(f"{source} is not UTF-8 text: {exc.reason}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise usage_error(
            f"invalid JSON in {source}: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(character {exc.pos}){_string_hint(text, exc, option)}"
        ) from None
    except RecursionError:
        raise usage_error(
            f"unusable JSON in {source}: it is nested too deeply for Python to read"
        ) from None


def _string_hint(text: str, error: json.JSONDecodeError, option: str) -> str:
    """A hint for a word meant as a JSON string but given without quotes (``--data alice``)."""
    bare = text.strip()
    if error.msg != "Expecting value" or not bare or bare[0] in '[{"-0123456789':
        return ""
    example = bare if len(bare) <= 40 and "'" not in bare and "\n" not in bare else "text"
    return (
        f"; a JSON string needs double quotes, and the shell needs quotes around those: "
        f"""{option} '"{example}"'"""
    )


def parse_statuses(values: Iterable[str], option: str = "--status") -> list[OrchestrationStatus]:
    """Status names (any case, repeated or comma-separated), in the order given."""
    statuses: list[OrchestrationStatus] = []
    for value in values:
        for name in filter(None, (part.strip() for part in value.split(","))):
            try:
                status = OrchestrationStatus[name.upper()]
            except KeyError:
                known = ", ".join(s.name for s in OrchestrationStatus)
                raise usage_error(
                    f"{option}: unknown status {name!r}; use one of {known}"
                ) from None
            if status not in statuses:
                statuses.append(status)
    return statuses
