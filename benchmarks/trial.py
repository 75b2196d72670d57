"""One trial (one workload, one store, one system, one repetition) in a process of its own.

``python -m benchmarks.trial SPEC.json RESULT.json``: the runner writes the spec, starts
this process in a session of its own (so a timeout kills it with everything it started), and
reads the result: ``{"metrics": {...}}`` or ``{"error": "...", "traceback": "..."}``.
A fresh process per trial keeps trials apart: W5's memory figure is not inflated by earlier
workloads, and a peer library's global state starts clean.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks.hubs import HubPlace
from benchmarks.measure import Progress


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    place = HubPlace.from_json(spec["place"])
    params: dict[str, Any] = spec["params"]
    progress = Progress(spec.get("progress"))
    workload: str = spec["workload"]
    if workload == "L":
        from benchmarks import storage_limit

        return storage_limit.measure(place, params)
    system: str = spec["system"]
    if system != "duratask":
        from benchmarks.peers import run_peer

        return run_peer(system, workload, place, params, progress)
    from benchmarks import workloads

    pg = None
    if place.store == "postgresql":
        pg = workloads.PgTarget(place.pg_url, place.application_name)
    url = place.duratask_url()
    return dict(asyncio.run(workloads.run(workload, url, params, progress, pg)))


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = json.loads(Path(spec_path).read_text())
    try:
        result: dict[str, Any] = {"metrics": run_trial(spec)}
    except BaseException as exc:
        result = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    Path(result_path).write_text(json.dumps(result))
    return 0 if "metrics" in result else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
