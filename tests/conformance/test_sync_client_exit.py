"""A sync client the program never closes leaves nothing behind at exit: no warning, on
every store (on PostgreSQL its pool's tasks used to be reported destroyed while pending)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    import duratask as dt

    client = dt.TaskHubClient(sys.argv[1])
    instance_id = client.schedule_new_orchestration("never_run")
    client.query_orchestrations()
    print(client.get_orchestration_state(instance_id).runtime_status.value)
    # No close(), no with block: the program just ends.
    """
)


def test_an_unclosed_sync_client_exits_without_a_warning(store_url: str) -> None:
    # -X dev shows ResourceWarnings and asyncio's debug reports, which a plain run hides.
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", SCRIPT, store_url],
        capture_output=True,
        text=True,
        timeout=45,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "PENDING"
    assert done.stderr == "", done.stderr
