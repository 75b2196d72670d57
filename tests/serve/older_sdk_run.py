"""Run by another Python's Durable Task SDK (an older release, whose protocol is older):
``python older_sdk_run.py HOST:PORT``. A sequence, a fan-out, a timer and an external event;
prints one JSON line with the outcome."""

import json
import sys
from datetime import timedelta

from durabletask import client, task, worker


def greet(ctx, name):  # type: ignore[no-untyped-def]
    return f"Hello {name}!"


def square(ctx, n):  # type: ignore[no-untyped-def]
    return n * n


def flow(ctx, names):  # type: ignore[no-untyped-def]
    out = []
    for name in names:
        out.append((yield ctx.call_activity(greet, input=name)))
    squares = yield task.when_all([ctx.call_activity(square, input=i) for i in range(5)])
    yield ctx.create_timer(timedelta(milliseconds=100))
    event = yield ctx.wait_for_external_event("go")
    return {"greet": out, "sum": sum(squares), "event": event}


if __name__ == "__main__":
    address = sys.argv[1]
    w = worker.TaskHubGrpcWorker(host_address=address)
    w.add_orchestrator(flow)
    w.add_activity(greet)
    w.add_activity(square)
    w.start()  # type: ignore[no-untyped-call]
    c = client.TaskHubGrpcClient(host_address=address)
    iid = c.schedule_new_orchestration(flow, input=["a", "b"])
    c.wait_for_orchestration_start(iid, timeout=30)
    c.raise_orchestration_event(iid, "go", data=1)
    state = c.wait_for_orchestration_completion(iid, timeout=30)
    assert state is not None
    output = json.loads(state.serialized_output or "null")
    print(json.dumps({"id": iid, "status": state.runtime_status.name, "output": output}))
    w.stop()  # type: ignore[no-untyped-call]
