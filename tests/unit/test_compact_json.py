"""Compact JSON text: the same text json.dumps gives, from an encoder built once."""

from __future__ import annotations

import json
import math

import pytest

from duratask._compact_json import compact_encoder, loads

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


TEXTS = [
    "1",
    '"a"',
    '{"a":[1,2,{"b":null}],"c":"\\u00e9"}',
    "-Infinity",
    "1.5e3",
    "true",
    " 1",
    "1 ",
    "\n[1, 2]\n",
    '"\\ud800"',
]
BAD_TEXTS = ["", " ", '{"a":}', "[1,2", "1 2", '{"a":1}x', '"unterminated', "nope"]


@pytest.mark.parametrize("text", TEXTS)
def test_loads_reads_what_json_loads_reads(text: str) -> None:
    assert loads(text) == json.loads(text)


def test_loads_reads_nan() -> None:
    assert math.isnan(loads("NaN"))


@pytest.mark.parametrize("text", BAD_TEXTS)
def test_loads_refuses_what_json_loads_refuses_with_the_same_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        loads(text)
    assert (got.value.msg, got.value.pos) == (expected.value.msg, expected.value.pos)
