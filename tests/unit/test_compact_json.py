"""Compact JSON text: the same text json.dumps gives, from an encoder built once."""

from __future__ import annotations

import json
import math

import pytest

from duratask._compact_json import compact_encoder

VALUES: list[object] = [
    None,
    "plain",
    'quote " and \\ and \n',
    "naïve ☃ \U0001f600",
    0,
    -7,
    2**70,
    1.5,
    True,
    [],
    {},
    {"b": [1, {"c": None}], "a": "x"},
]


@pytest.mark.parametrize("value", VALUES)
def test_the_text_is_what_json_dumps_gives(value: object) -> None:
    assert compact_encoder()(value) == json.dumps(value, separators=(",", ":"))


def test_nan_is_refused_when_asked() -> None:
    assert compact_encoder()(math.nan) == "NaN"
    with pytest.raises(ValueError, match="not JSON compliant"):
        compact_encoder(allow_nan=False)({"x": math.inf})


def test_a_value_json_cannot_encode_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        compact_encoder()({"x": object()})
