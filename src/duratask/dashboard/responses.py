"""Responses that can always be written out, whatever text the task hub holds.

Text is refused at the door when it cannot be written as UTF-8 (a lone surrogate), but a hub
may hold such text from before that check, or from an exception message recorded as a
failure. These responses write it with U+FFFD in place of each lone surrogate instead of
failing the request.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse

from duratask.converter import replace_lone_surrogates


class SafeJSONResponse(JSONResponse):
    """A JSON response (compact, UTF-8) that never fails on a lone surrogate."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
        )
        return _utf8(text)


class SafeHTMLResponse(HTMLResponse):
    """An HTML response that never fails on a lone surrogate."""

    def render(self, content: Any) -> bytes | memoryview:
        if isinstance(content, str):
            return _utf8(content)
        return super().render(content)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return replace_lone_surrogates(text).encode("utf-8")


__all__ = ["SafeHTMLResponse", "SafeJSONResponse"]
