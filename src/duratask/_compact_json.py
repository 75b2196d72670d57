"""Compact JSON text (no spaces), built by the standard library's C encoder.

``json.dumps`` with options, or ``JSONEncoder.encode``, builds a new C encoder at every
call, which costs more than encoding a small event or payload; here it is built once. There
is no check for circular references: the values encoded are history events and payloads
already made plain by pydantic, which refuses cycles itself.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any


def compact_encoder(*, allow_nan: bool = True) -> Callable[[Any], str]:
    """A function turning a JSON-ready value into compact JSON text (ASCII only)."""
    fallback = json.JSONEncoder(separators=(",", ":"), allow_nan=allow_nan)
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:  # a Python built without the _json accelerator
        return fallback.encode
    encode_chunks = make_encoder(
        None,  # no circular reference check
        fallback.default,
        json.encoder.encode_basestring_ascii,
        None,  # no indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        allow_nan,
    )

    def encode(value: Any) -> str:
        return "".join(encode_chunks(value, 0))

    return encode
