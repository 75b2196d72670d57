"""Payload conversion: Python values to JSON text and back. Never pickle.

The default :class:`JsonDataConverter` encodes dataclasses, pydantic models, datetimes,
dates, enums, UUIDs, sets and tuples to plain JSON, and decodes to an annotated type when
one is known (the orchestration's or activity's parameter or return annotation), so a
function annotated ``order: Order`` receives an ``Order``, not a dict.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Protocol, runtime_checkable

import pydantic
import pydantic_core

from duratask._compact_json import compact_encoder
from duratask.errors import PayloadTooLargeError, SerializationError

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
        try:
            return _compact(pydantic_core.to_jsonable_python(value))
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
            plain = json.loads(text)
        except ValueError as exc:
            raise SerializationError(f"stored payload is not valid JSON: {exc}") from exc
        if type_hint is None or type_hint is Any:
            return plain
        try:
            return _adapter(type_hint).validate_python(plain)
        except (pydantic.ValidationError, pydantic.PydanticSchemaGenerationError) as exc:
            raise SerializationError(
                f"cannot decode payload as {getattr(type_hint, '__qualname__', type_hint)}: {exc}"
            ) from exc


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
        except SerializationError as exc:
            raise SerializationError(f"{what}: {exc}") from exc
        if text is not None:
            size = len(text) if text.isascii() else len(text.encode())
            if size > self.max_payload_bytes:
                raise PayloadTooLargeError(what, size, self.max_payload_bytes)
        return text

    def decode(self, text: str | None, type_hint: Any = None) -> Any:
        return self.converter.deserialize(text, type_hint)
