"""The JavaScript SDK (``@microsoft/durabletask-js`` from npm, on this machine's Node.js)
against ``duratask serve``: a sequence, a fan-out, an external event, and entities.

Its packages are installed on first run into ``tests/serve/js`` (``npm ci``, pinned by the
lock file); without Node.js or npm the test is skipped, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import duratask as dt
from tests.serve.harness import serving

JS = Path(__file__).with_name("js")
pytestmark = pytest.mark.timeout(180)


def _node_packages() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed for the JavaScript SDK test")
    if (JS / "node_modules" / "@microsoft" / "durabletask-js").is_dir():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=150,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot install the JavaScript SDK: {done.stderr.strip()[-500:]}")


def test_javascript_sdk_sequence_fan_out_and_event(tmp_path: Path) -> None:
    _node_packages()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with serving(url) as server, dt.TaskHubClient(url) as client:
        done = subprocess.run(
            ["node", "scenario.js", server.address],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout.strip().splitlines()[-1])
        assert results["sequence"]["output"] == ["Hello Tokyo!", "Hello Oslo!"]
        assert results["fanOut"]["output"] == sum(i * i for i in range(10))
        assert results["approval"]["output"] == {"approved": "yes"}
        # The same instances, read by duratask's own client.
        state = client.get_orchestration_state(results["sequence"]["id"])
        assert state is not None and state.output == ["Hello Tokyo!", "Hello Oslo!"]
        assert state.runtime_status is dt.OrchestrationStatus.COMPLETED


def test_javascript_sdk_entities(tmp_path: Path) -> None:
    _node_packages()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with serving(url) as server, dt.TaskHubClient(url) as client:
        done = subprocess.run(
            ["node", "entities.js", server.address],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout.strip().splitlines()[-1])
        # The orchestration's signal (1) is applied before its call (2) returns: one sender's
        # messages reach an entity in order.
        assert results["flow"] == {"id": results["flow"]["id"], "status": "COMPLETED", "output": 3}
        assert results["signalled"] == 5
        # The same entities, read by duratask's own client.
        counted = client.get_entity("@counter@js1")
        assert counted is not None and counted.state == 3
        signalled = client.get_entity("@counter@js2")
        assert signalled is not None and signalled.state == 5
