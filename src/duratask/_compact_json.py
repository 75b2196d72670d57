"""Compact JSON text (no spaces), built by the standard library's C encoder, and read back
by its C scanner.

``json.dumps`` with options, or ``JSONEncoder.encode``, builds a new C encoder at every
call, which costs more than encoding a small event or payload; here it is built once. There
is no check for circular references: the values encoded are history events and payloads
already made plain by pydantic, which refuses cycles itself.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
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


_scan_once = getattr(json.scanner, "c_make_scanner", None)
_scan_once = _scan_once(json.JSONDecoder()) if _scan_once is not None else None


def loads(text: str) -> Any:
    """``json.loads(text)``: the same value, or the same error, with less work per call.

    ``json.loads`` runs a Python method and two regular expressions (for white space)
    around the C scanner, which costs more than scanning a small payload. Text the scanner
    takes whole from its first character is done here; anything else (white space around
    the value, errors) goes to ``json.loads``."""
    if _scan_once is not None:
        try:
            value, end = _scan_once(text, 0)
        except StopIteration:  # not a value at position 0: json.loads says why
            pass
        else:
            if end == len(text):
                return value
    return json.loads(text)
