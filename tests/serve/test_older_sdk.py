"""An older release of the Python SDK (1.9, an older protocol) against ``duratask serve``.

It cannot share this environment with the newest one: ``make test`` makes it a virtual
environment of its own (``.venv-sdk-1.9``) and names its Python in
``DURATASK_TEST_OLDER_SDK_PYTHON``; by hand::

    python -m venv /tmp/sdk19 && /tmp/sdk19/bin/pip install 'durabletask==1.9.*'
    DURATASK_TEST_OLDER_SDK_PYTHON=/tmp/sdk19/bin/python pytest tests/serve/test_older_sdk.py
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import duratask as dt
from tests.serve.harness import serving

SCRIPT = Path(__file__).with_name("older_sdk_run.py")


def test_an_older_sdk_runs_its_orchestrations(tmp_path: Path) -> None:
    python = os.environ.get("DURATASK_TEST_OLDER_SDK_PYTHON")
    if not python:
        pytest.skip(
            "set DURATASK_TEST_OLDER_SDK_PYTHON to a Python with durabletask 1.9 (make test does)"
        )
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    with serving(url) as server, dt.TaskHubClient(url) as client:
        done = subprocess.run(
            [python, str(SCRIPT), server.address], capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["status"] == "COMPLETED"
        assert result["output"] == {"greet": ["Hello a!", "Hello b!"], "sum": 30, "event": 1}
        state = client.get_orchestration_state(result["id"])
        assert state is not None and state.runtime_status is dt.OrchestrationStatus.COMPLETED
