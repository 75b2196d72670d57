"""Reading request values (statuses, times, numbers, flags, JSON) and writing payloads.

Status names follow Durable Functions (``Running``, ``ContinuedAsNew``...) on the way out;
on the way in any case and either spelling is accepted (``running``, ``CONTINUED_AS_NEW``).
Times are ISO 8601; a time without an offset is taken as UTC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from duratask.dashboard.errors import HttpError, bad_request
from duratask.state import OrchestrationStatus

STATUS_NAMES: dict[OrchestrationStatus, str] = {
    OrchestrationStatus.PENDING: "Pending",
    OrchestrationStatus.RUNNING: "Running",
    OrchestrationStatus.SUSPENDED: "Suspended",
    OrchestrationStatus.COMPLETED: "Completed",
    OrchestrationStatus.FAILED: "Failed",
    OrchestrationStatus.TERMINATED: "Terminated",
    OrchestrationStatus.CONTINUED_AS_NEW: "ContinuedAsNew",
}
ACCEPTED_STATUS_NAMES: list[str] = [
    *STATUS_NAMES.values(),
    *(s.value for s in STATUS_NAMES),
]
_BY_KEY = {name.replace("_", "").lower(): status for status, name in STATUS_NAMES.items()}

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def status_name(status: OrchestrationStatus) -> str:
    """The API's name for a status (``Running``, ``ContinuedAsNew``...)."""
    return STATUS_NAMES[status]


def parse_status(text: str, what: str) -> OrchestrationStatus:
    """One status from its name in any spelling; 400 naming the valid ones otherwise."""
    status = _BY_KEY.get(text.strip().replace("_", "").lower())
    if status is None:
        raise bad_request(
            f"{what}: unknown status {text!r}; use one of {', '.join(STATUS_NAMES.values())}"
        )
    return status


def parse_statuses(values: Iterable[str], what: str) -> list[OrchestrationStatus] | None:
    """Statuses given repeatedly and/or as comma lists; None when none are given."""
    found: list[OrchestrationStatus] = []
    for value in values:
        for part in value.split(","):
            if not part.strip():
                raise bad_request(f"{what}: empty status name in {value!r}")
            status = parse_status(part, what)
            if status not in found:
                found.append(status)
    return found or None


def parse_time(text: str, what: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text (no offset means UTC)."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise bad_request(
            f"{what}: cannot read {text[:80]!r} as an ISO 8601 time "
            "(e.g. 2024-05-01T12:00:00Z or 2024-05-01T14:00:00+02:00)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise bad_request(
            f"{what}: the time {text[:80]!r} is out of range: in UTC it falls outside years 1-9999"
        ) from None


def parse_int(text: str, what: str, *, minimum: int, maximum: int) -> int:
    """An integer within bounds."""
    try:
        value = int(text.strip())
    except ValueError:
        raise bad_request(f"{what}: expected an integer, got {text[:40]!r}") from None
    if not minimum <= value <= maximum:
        raise bad_request(f"{what}: must be between {minimum} and {maximum}, got {value}")
    return value


def parse_bool(text: str, what: str) -> bool:
    """A flag: true/false, 1/0, yes/no, on/off (any case)."""
    key = text.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise bad_request(f"{what}: expected true or false, got {text[:40]!r}")


def json_string_hint(text: str, error: json.JSONDecodeError) -> str:
    """A hint for text that was meant as a JSON string but lacks its quotes (``alice``)."""
    bare = text.strip()
    if error.msg != "Expecting value" or not bare or bare[0] in '[{"-0123456789':
        return ""
    if len(bare) > 40 or "\n" in bare:
        return "; a JSON string needs double quotes around it"
    return f"; a JSON string needs double quotes: {json.dumps(bare, ensure_ascii=False)}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes, what: str) -> Any:
    """The JSON value of a request body; an empty body is null."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request(f"{what} is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise HttpError(
            400,
            "invalid_json",
            f"{what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            f"{json_string_hint(text, exc)}",
        ) from None
    except (ValueError, RecursionError) as exc:
        message = "it is nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise HttpError(400, "invalid_json", f"{what} is not usable JSON: {message}") from None


def payload_value(text: str | None) -> Any:
    """A stored JSON payload as a JSON value (text that is not JSON is kept as a string)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def pretty_payload(text: str | None, limit: int = 200_000) -> str:
    """A stored JSON payload indented for reading (cut at ``limit`` characters)."""
    if text is None:
        return "null"
    value = payload_value(text)
    shown = (
        json.dumps(value, indent=2, ensure_ascii=False)
        if not isinstance(value, str) or value != text
        else text
    )
    if len(shown) > limit:
        return shown[:limit] + f"\n… ({len(shown) - limit} more characters)"
    return shown


def iso(value: datetime | None) -> str | None:
    """ISO 8601 text of a time, or None."""
    return None if value is None else value.isoformat()
