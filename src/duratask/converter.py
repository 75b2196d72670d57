"""Payload conversion: Python values to JSON text and back. Never pickle.

The default :class:`JsonDataConverter` encodes dataclasses, pydantic models, datetimes,
dates, enums, UUIDs, sets and tuples to plain JSON, and decodes to an annotated type when
one is known (the orchestration's or activity's parameter or return annotation), so a
function annotated ``order: Order`` receives an ``Order``, not a dict.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Protocol, runtime_checkable

import pydantic
import pydantic_core

from duratask._compact_json import compact_encoder, loads
from duratask.errors import InvalidTextError, PayloadTooLargeError, SerializationError

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


@runtime_checkable
class DataConverter(Protocol):
    """Turns payloads into JSON text and back.

    Any object with these two methods can be passed as ``data_converter=`` to
    :class:`~duratask.worker.TaskHubWorker` and :class:`~duratask.client.TaskHubClient`
    (give every worker and client of a task hub the same one). Stored payloads are JSON text
    whatever the converter: the dashboard, the CLI and other languages can read them.
    """

    def serialize(self, value: Any) -> str | None:
        """JSON text for ``value`` (None stays None); :class:`SerializationError` if impossible."""
        ...

    def deserialize(self, text: str | None, type_hint: Any = None) -> Any:
        """Decode JSON text, converting to ``type_hint`` when given."""
        ...


_compact = compact_encoder(allow_nan=False)
# The types JSON text decodes to that pydantic hands back unchanged when asked for them.
_JSON_SCALARS = frozenset({int, str, bool, float})


@functools.lru_cache(maxsize=512)
def _adapter(type_hint: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(type_hint)


class JsonDataConverter:
    """The default converter: compact JSON, typed decoding through pydantic."""

    def serialize(self, value: Any) -> str | None:
        """Compact JSON text for ``value`` (None stays None).

        Dataclasses, pydantic models, datetimes, dates, enums, UUIDs, sets and tuples become
        plain JSON values. Anything else that JSON cannot hold (and NaN or infinite floats)
        raises :class:`~duratask.errors.SerializationError`.
        """
        if value is None:
            return None
        if type(value) in _JSON_SCALARS and type(value) is not float:
            return _compact(value)  # already a JSON value: nothing for pydantic to convert
        try:
            return _compact(pydantic_core.to_jsonable_python(value))
        except UnicodeEncodeError as exc:  # pydantic writes dict keys as UTF-8
            surrogate = exc.object[exc.start : exc.end]
            raise InvalidTextError(
                f"a value of type {type(value).__qualname__}", f"a lone surrogate {surrogate!r}"
            ) from exc
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot serialise a value of type {type(value).__qualname__} to JSON: {exc}"
            ) from exc

    def deserialize(self, text: str | None, type_hint: Any = None) -> Any:
        """Decode JSON text; with a ``type_hint``, validate and convert it to that type.

        Without one (or with ``Any``) the result is plain JSON values: dicts, lists, strings,
        numbers, booleans and None. Text that is not JSON, or does not fit the type, raises
        :class:`~duratask.errors.SerializationError`.
        """
        if text is None:
            return None
        try:
            plain = loads(text)
        except ValueError as exc:
            raise SerializationError(f"stored payload is not valid JSON: {exc}") from exc
        if type_hint is None or type_hint is Any:
            return plain
        if type(plain) is type_hint and type_hint in _JSON_SCALARS:
            return plain  # what validating it would return
        try:
            return _adapter(type_hint).validate_python(plain)
        except (pydantic.ValidationError, pydantic.PydanticSchemaGenerationError) as exc:
            raise SerializationError(
                f"cannot decode payload as {getattr(type_hint, '__qualname__', type_hint)}: {exc}"
            ) from exc


# In JSON text: an escaped backslash, an escaped surrogate pair, or an escaped surrogate
# alone. Scanning from the left consumes escaped backslashes whole, so a backslash followed
# by the letters "ud800" is not taken for an escape.
_SURROGATE_ESCAPES = re.compile(
    r"\\(?:\\"
    r"|u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|u[dD][89a-fA-F][0-9a-fA-F]{2})"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> str | None:
    """Where ``text`` (a str) holds a lone surrogate, described; None if it holds none."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"a lone surrogate {text[exc.start]!r} at position {exc.start}"
    return None


def lone_surrogate_in_json(text: str) -> str | None:
    """Where JSON text holds a lone surrogate (raw, or escaped as ``\\ud800``), described;
    None if it holds none. Such text decodes to a str that cannot be written as UTF-8."""
    raw = lone_surrogate(text)
    if raw is not None:
        return raw
    if "\\u" not in text:
        return None
    for match in _SURROGATE_ESCAPES.finditer(text):
        if len(match.group()) == 6:
            return f"a lone surrogate {match.group()} at position {match.start()} of its JSON"
    return None


def check_text(value: str | None, what: str) -> str | None:
    """``value`` if it can be stored (valid Unicode), else :class:`InvalidTextError`."""
    if isinstance(value, str):
        problem = lone_surrogate(value)
        if problem is not None:
            raise InvalidTextError(what, problem)
    return value


def replace_lone_surrogates(text: str) -> str:
    """``text`` with any lone surrogate replaced by U+FFFD, so that it can be written out
    (for readers of data stored before such text was refused)."""
    if text.isascii() or lone_surrogate(text) is None:
        return text
    return _SURROGATE.sub("\ufffd", text)


class PayloadCodec:
    """A converter plus the payload size limit: what the runtime uses at every call site."""

    def __init__(
        self,
        converter: DataConverter | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.converter: DataConverter = converter or JsonDataConverter()
        self.max_payload_bytes = max_payload_bytes

    def encode(self, value: Any, what: str) -> str | None:
        """Serialise ``value``, naming ``what`` in errors (e.g. "input of activity 'charge'")."""
        try:
            text = self.converter.serialize(value)
        except InvalidTextError as exc:
            raise InvalidTextError(what, exc.problem) from exc
        except SerializationError as exc:
            raise SerializationError(f"{what}: {exc}") from exc
        if text is not None:
            if text.isascii() and "\\u" not in text:  # the usual case: nothing to look for
                size = len(text)
            else:
                # A lone surrogate would be stored, then break every reader that writes it
                # out as UTF-8 (JSON output, pages, terminals): refuse it here, naming the
                # call site.
                problem = lone_surrogate_in_json(text)
                if problem is not None:
                    raise InvalidTextError(what, problem)
                size = len(text) if text.isascii() else len(text.encode())
            if size > self.max_payload_bytes:
                raise PayloadTooLargeError(what, size, self.max_payload_bytes)
        return text

    def decode(self, text: str | None, type_hint: Any = None) -> Any:
        return self.converter.deserialize(text, type_hint)
