"""One OpenTelemetry SDK provider for the session, handed to duratask per test.

The global tracer provider can be set only once per process, so these tests never touch it:
each test gives duratask the session's provider with ``set_tracer_provider`` and takes it
back afterwards, and the in-memory exporter is emptied before each test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from duratask.tracing import set_tracer_provider
from duratask.tracing._scheduled import SCHEDULED
from tests.conformance.e2e_hub import TaskHub


class Spans:
    """What the exporter received, with lookups by name."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self._exporter = exporter

    def all(self) -> list[ReadableSpan]:
        return list(self._exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.all() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one {name!r} span, got {[s.name for s in self.all()]}"
        return found[0]


@pytest.fixture(scope="session")
def tracing_session() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def provider(tracing_session: tuple[TracerProvider, InMemorySpanExporter]) -> TracerProvider:
    return tracing_session[0]


@pytest.fixture(autouse=True)
def spans(tracing_session: tuple[TracerProvider, InMemorySpanExporter]) -> Iterator[Spans]:
    provider, exporter = tracing_session
    exporter.clear()
    SCHEDULED.clear()
    set_tracer_provider(provider)
    try:
        yield Spans(exporter)
    finally:
        set_tracer_provider(None)
        exporter.clear()


@pytest.fixture
def hub_url() -> str:
    return f"memory://tracing-{uuid.uuid4().hex}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.db'}"


@pytest.fixture
async def hub(hub_url: str) -> AsyncIterator[TaskHub]:
    task_hub = TaskHub(hub_url)
    try:
        yield task_hub
    finally:
        await task_hub.stop()
