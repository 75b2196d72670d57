"""Fixtures for ``duratask serve``: a fresh hub per store kind (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conformance.conftest import _postgres_url, drop_schema

SERVE_STORES = ["sqlite", "postgres"]


def fresh_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return _postgres_url(tmp_path)


def cleanup(kind: str, url: str) -> None:
    if kind == "postgres":
        drop_schema(parse_qs(urlsplit(url).query)["schema"][0])


@pytest.fixture(params=SERVE_STORES)
def hub_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh task hub's URL, once per store kind."""
    url = fresh_url(request.param, tmp_path)
    yield url
    cleanup(request.param, url)
