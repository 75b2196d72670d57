"""``raise-event``, ``terminate``, ``suspend``/``resume``, ``purge``, ``rewind`` and
``restart`` against a worker on SQLite."""

from __future__ import annotations

import duratask as dt
from tests.cli import app
from tests.cli.conftest import Cli, one_line_error, wait_for_status


def test_raise_event_delivers_its_data(cli: Cli) -> None:
    iid = cli.start("await_approval", None, "--id", "ev-1")
    result = cli.run("raise-event", iid, "approval", "--data", '{"who": "Hal"}')
    assert result.stdout == "Raised event 'approval' for 'ev-1'.\n"
    state = cli.wait(iid)
    assert state["output"] == {"approved_by": {"who": "Hal"}}
    assert state["custom_status"] == {"stage": "approved"}


def test_raise_event_refuses_bad_data_and_finished_instances(cli: Cli) -> None:
    iid = cli.start("greet", "Ike")
    cli.wait(iid)
    bad = cli.run("raise-event", iid, "approval", "--data", "{oops}", code=2)
    assert "invalid JSON in --data" in one_line_error(bad)
    finished = cli.run("raise-event", iid, "approval", code=1)
    assert "has already finished (COMPLETED)" in one_line_error(finished)
    missing = cli.run("raise-event", "nobody", "approval", code=1)
    assert "no orchestration instance with id 'nobody'" in one_line_error(missing)


def test_terminate_keeps_the_reason_as_output(cli: Cli) -> None:
    iid = cli.start("await_approval", None, "--id", "term-1")
    assert cli.run("terminate", iid, "--reason", "no longer needed").stdout == (
        "Asked 'term-1' to terminate.\n"
    )
    state = cli.wait(iid, code=3)
    assert state["runtime_status"] == "TERMINATED"
    assert state["output"] == "no longer needed"
    again = cli.run("terminate", iid, code=1)
    assert "already finished (TERMINATED)" in one_line_error(again)


def test_suspend_and_resume(cli: Cli) -> None:
    iid = cli.start("await_approval", None, "--id", "sus-1")
    cli.run("suspend", iid, "--reason", "maintenance")
    # Resume only once the worker has applied the suspension, then finish the instance.
    cli.run("raise-event", iid, "approval", "--data", '"Ivy"')
    wait_for_status(cli.url, iid, dt.OrchestrationStatus.SUSPENDED)
    state = cli.json("status", iid)
    assert state["runtime_status"] == "SUSPENDED"
    assert state["output"] is None  # the event waits while suspended
    cli.run("resume", iid, "--reason", "done")
    assert cli.wait(iid)["output"] == {"approved_by": "Ivy"}
    history = cli.run("history", iid).stdout
    assert "ExecutionSuspended" in history and "maintenance" in history
    assert "ExecutionResumed" in history


def test_purge_one_instance_with_its_children(cli: Cli) -> None:
    iid = cli.start("parent", ["a"], "--id", "fam")
    cli.wait(iid)
    assert cli.json("list")["total"] == 2
    assert cli.run("purge", iid).stdout == "Purged 2 instances.\n"
    assert cli.json("list")["total"] == 0
    cli.run("status", iid, code=1)


def test_purge_refuses_a_running_instance(cli: Cli) -> None:
    iid = cli.start("await_approval")
    result = cli.run("purge", iid, code=1)
    assert "only finished instances can be purged" in one_line_error(result)
    missing = cli.run("purge", "nope", code=1)
    assert "no orchestration instance with id 'nope'" in one_line_error(missing)


def test_purge_completed_before_asks_for_confirmation(cli: Cli) -> None:
    done = [cli.start("greet", n) for n in ("a", "b")]
    for iid in done:
        cli.wait(iid)
    cli.wait(cli.start("fail", "x"), code=3)
    running = cli.start("await_approval")

    declined = cli.run("purge", "--completed-before", "now", input="n\n", code=1)
    assert "Purge every finished instance completed before" in declined.stderr
    assert cli.json("list")["total"] == 4

    only_failed = cli.run("purge", "--completed-before", "+1m", "--status", "failed", input="y\n")
    assert "Purge every FAILED instance" in only_failed.stderr
    assert only_failed.stdout == "Purged 1 instance.\n"

    assert cli.json("purge", "--completed-before", "-1d", "--yes") == {"purged": 0}
    assert cli.json("purge", "--completed-before", "now", "--yes") == {"purged": 2}
    remaining = cli.json("list")
    assert [s["instance_id"] for s in remaining["instances"]] == [running]


def test_purge_usage_errors(idle_cli: Cli) -> None:
    neither = idle_cli.run("purge", code=2)
    assert "give either an instance ID or --completed-before" in one_line_error(neither)
    both = idle_cli.run("purge", "x", "--completed-before", "now", code=2)
    assert "not both" in one_line_error(both)
    status_alone = idle_cli.run("purge", "x", "--status", "FAILED", code=2)
    assert "--status applies only with --completed-before" in one_line_error(status_alone)
    live_status = idle_cli.run(
        "purge", "--completed-before", "now", "--status", "RUNNING", "--yes", code=2
    )
    assert "RUNNING" in one_line_error(live_status)
    bad_time = idle_cli.run("purge", "--completed-before", "last week", "--yes", code=2)
    assert "--completed-before: cannot read 'last week'" in one_line_error(bad_time)


def test_rewind_reruns_a_failed_instance(cli: Cli) -> None:
    iid = cli.start("rewindable", 21, "--id", "rw-1")
    assert cli.wait(iid, code=3)["runtime_status"] == "FAILED"
    app.FLAKY["fail"] = False
    assert cli.run("rewind", iid, "--reason", "fixed").stdout == "Asked 'rw-1' to rewind.\n"
    state = cli.wait(iid)
    assert state["output"] == 42
    refused = cli.run("rewind", iid, code=1)
    assert "only FAILED instances can be rewound" in one_line_error(refused)


def test_restart_with_the_same_or_a_new_id(cli: Cli) -> None:
    iid = cli.start("greet", "Jo", "--id", "rs-1")
    cli.wait(iid)
    assert cli.run("restart", iid).stdout == "rs-1\n"
    assert cli.wait(iid)["output"] == "Hello, Jo!"

    fresh = cli.json("restart", iid, "--new-id")["instance_id"]
    assert fresh != iid
    state = cli.wait(fresh)
    assert (state["name"], state["input"], state["output"]) == ("greet", "Jo", "Hello, Jo!")

    running = cli.start("await_approval", None, "--id", "rs-live")
    refused = cli.run("restart", running, code=1)
    assert "cannot restart orchestration 'rs-live'" in one_line_error(refused)
