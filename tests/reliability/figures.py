"""Figures the reliability suite reports at the end of a run (inputs tried, faults injected...).

Tests add to :data:`FIGURES`; ``conftest.py`` prints them in pytest's terminal summary, so
they show with or without ``-s``.
"""

from __future__ import annotations

import threading
from collections import Counter

FIGURES: Counter[str] = Counter()
_LOCK = threading.Lock()


def count(name: str, n: int = 1) -> None:
    """Add ``n`` to the figure called ``name``."""
    with _LOCK:
        FIGURES[name] += n
