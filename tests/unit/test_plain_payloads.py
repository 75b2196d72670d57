"""Plain payloads (int, str, bool) skip pydantic: the text and values are what it gives."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pydantic_core
import pytest

from duratask.converter import JsonDataConverter

PLAIN: list[Any] = [0, -7, 2**70, "", "plain", 'q"\\/\n\x00\x7f', "naïve ☃ \U0001f600", True, False]


@pytest.mark.parametrize("value", PLAIN)
def test_a_plain_value_is_written_as_through_pydantic(value: Any) -> None:
    through_pydantic = json.dumps(
        pydantic_core.to_jsonable_python(value), separators=(",", ":"), allow_nan=False
    )
    assert JsonDataConverter().serialize(value) == through_pydantic


@pytest.mark.parametrize("value", PLAIN)
def test_a_plain_value_read_as_its_own_type_is_what_validation_gives(value: Any) -> None:
    converter = JsonDataConverter()
    text = converter.serialize(value)
    assert text is not None
    hint = type(value)
    read = converter.deserialize(text, hint)
    assert read == pydantic.TypeAdapter(hint).validate_python(json.loads(text))
    assert type(read) is hint


def test_other_hints_still_validate() -> None:
    converter = JsonDataConverter()
    assert converter.deserialize("3", float) == 3.0
    assert type(converter.deserialize("3", float)) is float
    assert converter.deserialize('"3"', int) == 3
    assert converter.serialize(1.5) == "1.5"
