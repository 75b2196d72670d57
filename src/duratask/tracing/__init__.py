"""OpenTelemetry tracing for duratask (optional: ``pip install 'duratask[otel]'``).

With ``opentelemetry-api`` installed and a tracer provider configured (the global one, or
:func:`set_tracer_provider`), clients and workers emit spans named as the Durable Task
Framework names them, and carry the W3C trace context through the history, so one trace shows
an instance from its scheduling to its end, across worker processes:

- ``create_orchestration:<name>`` (PRODUCER): the client scheduling an instance;
- ``orchestration:<name>`` (SERVER): each episode of an execution that runs its code;
- ``activity:<name>`` (SERVER): an activity run, child of the episode that scheduled it;
- ``orchestration:<name>:timer`` (INTERNAL): a durable timer, from creation until it fired;
- sub-orchestrations' ``orchestration:<child>`` spans, children of the parent's episode.

Without the package, or without a configured provider, all of this is skipped at the cost of
one check per hook. Log events (stdlib ``logging``, ``extra={"event": ...}``) are emitted
either way; ``docs/observability.md`` lists them.
"""

from duratask.tracing._api import OTEL_AVAILABLE, set_tracer_provider

__all__ = ["OTEL_AVAILABLE", "set_tracer_provider"]
