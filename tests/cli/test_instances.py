"""``duratask start``, ``status``, ``list`` and ``history`` against a worker on SQLite."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import duratask as dt
from duratask.cli import listing
from duratask.history import history_to_json
from duratask.testing import replay
from tests.cli import app
from tests.cli.conftest import Cli, one_line_error, wait_for_status

STATE_KEYS = {
    "instance_id",
    "name",
    "version",
    "runtime_status",
    "created_at",
    "last_updated_at",
    "completed_at",
    "input",
    "output",
    "custom_status",
    "failure_details",
    "parent_instance_id",
    "scheduled_start_at",
    "task_queue",
    "waiting",
    "round",
}


def _history(url: str, instance_id: str) -> list[dt.HistoryEvent]:
    async def read() -> list[dt.HistoryEvent]:
        async with dt.AsyncTaskHubClient(url) as client:
            return await client.get_orchestration_history(instance_id)

    return asyncio.run(read())


# -- start -------------------------------------------------------------------------------


def test_start_prints_the_id_and_the_instance_completes(cli: Cli) -> None:
    result = cli.run("start", "greet", "--input", '"Ada"', "--id", "greet-1")
    assert result.stdout == "greet-1\n"

    state = cli.wait("greet-1")
    assert set(state) == STATE_KEYS
    assert state["instance_id"] == "greet-1"
    assert state["name"] == "greet"
    assert state["runtime_status"] == "COMPLETED"
    assert state["input"] == "Ada"
    assert state["output"] == "Hello, Ada!"
    assert state["failure_details"] is None
    assert datetime.fromisoformat(state["completed_at"]) >= datetime.fromisoformat(
        state["created_at"]
    )


def test_start_json_output_and_random_id(cli: Cli) -> None:
    started = cli.json("start", "greet", "--input", '"Bo"')
    assert set(started) == {"instance_id"}
    assert len(started["instance_id"]) == 32
    assert cli.wait(started["instance_id"])["output"] == "Hello, Bo!"


def test_start_reads_input_from_a_file(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "names.json"
    path.write_text(json.dumps(["x", "y"]))
    iid = cli.start("parent", None, "--input", f"@{path}")
    assert cli.wait(iid)["output"] == ["Hello, x!", "Hello, y!"]


def test_start_reads_input_from_stdin(idle_cli: Cli) -> None:
    iid = idle_cli.run("start", "greet", "--input", "@-", input='{"k": [1, 2]}').stdout.strip()
    assert idle_cli.json("status", iid)["input"] == {"k": [1, 2]}


def test_start_rejects_bad_json_naming_the_position(idle_cli: Cli) -> None:
    result = idle_cli.run("start", "greet", "--input", '{"a": 1,}', code=2)
    line = one_line_error(result)
    assert "invalid JSON in --input" in line
    assert "line 1 column 9" in line
    assert idle_cli.json("list")["total"] == 0


def test_start_rejects_a_missing_input_file(idle_cli: Cli, tmp_path: Path) -> None:
    result = idle_cli.run("start", "greet", "--input", f"@{tmp_path / 'nope.json'}", code=2)
    assert "cannot read --input file" in one_line_error(result)


def test_start_rejects_bad_json_in_a_file(idle_cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[1, 2\n")
    result = idle_cli.run("start", "greet", "--input", f"@{path}", code=2)
    assert f"invalid JSON in --input file '{path}'" in one_line_error(result)


def test_start_at_a_relative_time_is_scheduled(idle_cli: Cli) -> None:
    before = datetime.now(UTC)
    iid = idle_cli.start(
        "greet", "Cy", "--start-at", "+2h", "--version", "2", "--task-queue", "payments"
    )
    state = idle_cli.json("status", iid)
    assert state["task_queue"] == "payments"
    scheduled = datetime.fromisoformat(state["scheduled_start_at"])
    assert before + timedelta(hours=2) <= scheduled <= datetime.now(UTC) + timedelta(hours=2)
    assert state["version"] == "2"


def test_start_rejects_a_bad_time_and_a_bad_id(idle_cli: Cli) -> None:
    bad_time = idle_cli.run("start", "greet", "--start-at", "tomorrow", code=2)
    assert "--start-at: cannot read 'tomorrow' as a time" in one_line_error(bad_time)
    bad_id = idle_cli.run("start", "greet", "--id", "a\tb", code=2)
    assert "control character" in one_line_error(bad_id)
    bad_queue = idle_cli.run("start", "greet", "--task-queue", "", code=2)
    assert "invalid task queue name" in one_line_error(bad_queue)


def test_start_refuses_an_id_in_use(idle_cli: Cli) -> None:
    idle_cli.start("greet", "a", "--id", "taken")
    result = idle_cli.run("start", "greet", "--id", "taken", code=1)
    assert "already exists" in one_line_error(result)


# -- status ------------------------------------------------------------------------------


def test_status_table_shows_the_fields(cli: Cli) -> None:
    iid = cli.start("greet", "Di", "--id", "status-table")
    cli.wait(iid)
    out = cli.run("status", iid).stdout
    assert "Instance ID" in out and "status-table" in out
    assert "COMPLETED" in out
    assert '"Hello, Di!"' in out


def test_status_of_an_unknown_instance_exits_1(idle_cli: Cli) -> None:
    result = idle_cli.run("status", "missing", code=1)
    assert one_line_error(result) == "Error: no orchestration instance with id 'missing'"
    assert idle_cli.run("status", "missing", "--wait", "--timeout", "1", code=1).stdout == ""


def test_status_wait_exit_codes(cli: Cli) -> None:
    failed = cli.start("fail", "kaput")
    state = cli.wait(failed, code=3)
    assert state["runtime_status"] == "FAILED"
    assert state["failure_details"]["error_type"] == "TaskFailedError"
    assert "kaput" in state["failure_details"]["message"]

    table = cli.run("status", failed, "--wait", "--timeout", "30", code=3).stdout
    assert "FAILED" in table and "kaput" in table

    waiting = cli.start("await_approval")
    timed_out = cli.run("status", waiting, "--wait", "--timeout", "0.2", code=4)
    assert "timed out" in one_line_error(timed_out)

    cli.run("terminate", waiting, "--reason", "stop")
    assert cli.wait(waiting, code=3)["runtime_status"] == "TERMINATED"


def test_status_shows_the_failure_chain_down_to_the_activitys_traceback(cli: Cli) -> None:
    failed = cli.start("fail", "kaput")
    inner = cli.wait(failed, code=3)["failure_details"]["inner_failure"]
    assert inner["error_type"] == "ValueError" and inner["message"] == "kaput"
    assert "in explode" in inner["stack_trace"]
    assert inner["error_types"][:2] == ["ValueError", "Exception"]
    table = cli.run("status", failed, code=0).stdout
    assert "Caused by" in table and "ValueError: kaput" in table
    # The activity's own frame, under the orchestration's stack trace.
    assert table.index("in fail") < table.index("Caused by") < table.index("in explode")


def test_status_timeout_needs_wait(idle_cli: Cli) -> None:
    result = idle_cli.run("status", "x", "--timeout", "3", code=2)
    assert "--timeout applies only with --wait" in one_line_error(result)


# -- list --------------------------------------------------------------------------------


def test_list_filters_and_counts(cli: Cli) -> None:
    for i in range(3):
        cli.wait(cli.start("greet", f"g{i}", "--id", f"g-{i}"))
    cli.wait(cli.start("fail", "no", "--id", "f-0"), code=3)

    listing = cli.json("list")
    assert [s["instance_id"] for s in listing["instances"]] == ["g-0", "g-1", "g-2", "f-0"]
    assert listing["total"] == 4
    assert listing["shown"] == 4
    assert listing["more"] is False
    assert listing["counts"]["COMPLETED"] == 3
    assert listing["counts"]["FAILED"] == 1

    failed = cli.json("list", "--status", "failed")
    assert [s["instance_id"] for s in failed["instances"]] == ["f-0"]
    assert failed["counts"] == {"FAILED": 1}

    both = cli.json("list", "--status", "FAILED,completed", "--prefix", "g-")
    assert [s["instance_id"] for s in both["instances"]] == ["g-0", "g-1", "g-2"]
    assert both["total"] == 3

    assert cli.json("list", "--name", "fail")["total"] == 1
    assert cli.json("list", "--since", "-1h")["total"] == 4
    assert cli.json("list", "--until", "-1h")["total"] == 0
    assert cli.json("list", "--since", "now")["total"] == 0

    table = cli.run("list", "--status", "COMPLETED").stdout
    assert "g-1" in table and "f-0" not in table
    assert "3 of 3 matching instances shown (COMPLETED 3)" in table


def test_list_pages_up_to_the_limit(idle_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)  # so that 7 instances take 4 pages
    ids = [idle_cli.start("greet", i, "--id", f"p-{i:02d}") for i in range(7)]
    page = idle_cli.json("list", "--limit", "5")
    assert [s["instance_id"] for s in page["instances"]] == ids[:5]
    assert page["total"] == 7
    assert page["more"] is True
    assert (
        "5 of 7 matching instances shown (PENDING 7)" in idle_cli.run("list", "--limit", "5").stdout
    )
    everything = idle_cli.json("list", "--limit", "100")
    assert [s["instance_id"] for s in everything["instances"]] == ids
    assert everything["more"] is False
    assert [s["instance_id"] for s in idle_cli.json("list", "--limit", "3")["instances"]] == ids[:3]
    empty = idle_cli.run("list", "--prefix", "zzz").stdout
    assert "No matching instances." in empty


def test_list_by_parent(cli: Cli) -> None:
    iid = cli.start("parent", ["a", "b"], "--id", "fam")
    cli.wait(iid)
    children = cli.json("list", "--parent", "fam")
    assert [s["instance_id"] for s in children["instances"]] == ["fam:child-0", "fam:child-1"]
    assert all(s["parent_instance_id"] == "fam" for s in children["instances"])
    assert children["total"] is None
    assert children["more"] is False
    assert "2 instances shown" in cli.run("list", "--parent", "fam").stdout


def test_list_rejects_bad_filters(idle_cli: Cli) -> None:
    bad_status = idle_cli.run("list", "--status", "DONE", code=2)
    assert "unknown status 'DONE'" in one_line_error(bad_status)
    bad_time = idle_cli.run("list", "--since", "2024-13-45", code=2)
    assert "--since: cannot read '2024-13-45'" in one_line_error(bad_time)
    bad_limit = idle_cli.run("list", "--limit", "0", code=2)
    assert "--limit" in one_line_error(bad_limit)


# -- history -----------------------------------------------------------------------------


def test_history_json_is_the_export_format(cli: Cli, hub_url: str) -> None:
    iid = cli.start("timed", "Eve", "--id", "hist-json")
    cli.wait(iid)
    out = cli.run("history", iid, "--output", "json").stdout
    assert out == history_to_json(_history(hub_url, iid)) + "\n"
    types = [e["type"] for e in json.loads(out)]
    assert types[0] == "OrchestratorStarted"
    assert "TimerFired" in types and "TaskCompleted" in types


def test_status_and_history_show_the_earlier_executions(cli: Cli) -> None:
    iid = cli.start("countdown", 3, "--id", "countdown")
    assert cli.wait(iid)["round"] == 4
    shown = cli.run("status", iid).stdout
    assert (
        "Round" in shown and "4 (earlier rounds: duratask history countdown --executions)" in shown
    )
    records = cli.json("history", iid, "--executions")
    assert [(r["generation"], r["status"]) for r in records] == [
        (1, "CONTINUED_AS_NEW"),
        (2, "CONTINUED_AS_NEW"),
        (3, "CONTINUED_AS_NEW"),
    ]
    assert [(r["input_summary"], r["output_summary"]) for r in records] == [
        ("3", "2"),
        ("2", "1"),
        ("1", "0"),
    ]
    table = cli.run("history", iid, "--executions").stdout.splitlines()
    assert table[1].split()[:2] == ["Round", "Execution"]
    assert [line.split()[0] for line in table[2:]] == ["1", "2", "3", "4"]
    assert "COMPLETED" in table[-1]

    once = cli.start("greet", "Ann", "--id", "once")
    assert cli.wait(once)["round"] == 1
    assert "Round" not in cli.run("status", once).stdout
    assert cli.json("history", once, "--executions") == []
    assert "no earlier executions" in cli.run("history", once, "--executions").stdout


def test_history_json_replays_with_the_testing_tools(cli: Cli) -> None:
    iid = cli.start("timed", "Kim", "--id", "hist-replay")
    cli.wait(iid)
    exported = cli.run("history", iid, "-o", "json").stdout
    result = replay(app.timed, exported, activities=app.ACTIVITIES)
    assert result.status is dt.OrchestrationStatus.COMPLETED
    assert result.output == "Hello, Kim!"


def test_history_table_pairs_completions_with_their_schedule(cli: Cli) -> None:
    iid = cli.start("timed", "Fay", "--id", "hist-table")
    cli.wait(iid)
    lines = cli.run("history", iid).stdout.splitlines()
    assert lines[0].split()[:4] == ["hist-table", "timed", "COMPLETED", "started"]
    assert lines[1].split()[:4] == ["Time", "(UTC)", "Offset", "Event"]
    by_event = {line.split()[2]: line for line in lines[2:]}
    assert "OrchestratorStarted" not in by_event
    assert "#0 timer" in by_event["TimerCreated"]
    # The timer waited 20 ms at least; its duration is on the TimerFired row.
    fired = by_event["TimerFired"].split()
    assert fired[-1] in ("ms", "s")
    assert float(fired[-2]) >= (20 if fired[-1] == "ms" else 0.02)
    assert "#1 say_hello" in by_event["TaskScheduled"]
    assert '"Hello, Fay!"' in by_event["TaskCompleted"]
    assert by_event["ExecutionCompleted"].split()[3] == "COMPLETED"
    assert "fires after 20 ms" in by_event["TimerCreated"]


def test_history_shows_the_wait_for_an_event(cli: Cli) -> None:
    iid = cli.start("await_approval", None, "--id", "hist-event")
    # Raised once the instance waits for it, so the wait has a duration to show.
    wait_for_status(cli.url, iid, dt.OrchestrationStatus.RUNNING)
    cli.run("raise-event", iid, "approval", "--data", '"Gil"')
    cli.wait(iid)
    raised = [line for line in cli.run("history", iid).stdout.splitlines() if "EventRaised" in line]
    assert len(raised) == 1
    assert "approval" in raised[0] and '"Gil"' in raised[0]
    assert raised[0].split()[-1] in ("ms", "s")


def test_history_of_an_unknown_instance_exits_1(idle_cli: Cli) -> None:
    assert "no orchestration instance" in one_line_error(idle_cli.run("history", "x", code=1))


def test_history_of_a_pending_instance(idle_cli: Cli) -> None:
    iid = idle_cli.start("greet", "x")
    assert "no history yet" in idle_cli.run("history", iid).stdout
    assert idle_cli.run("history", iid, "-o", "json").stdout == "[]\n"


def test_status_and_list_say_when_no_connected_worker_registered_the_orchestration(
    cli: Cli,
) -> None:
    cli.start("nobody_runs_this", None, "--id", "orphan")
    reason = "no connected worker has registered orchestration 'nobody_runs_this'"
    assert reason in cli.run("status", "orphan").stdout
    assert reason in cli.json("status", "orphan")["waiting"]
    listing = cli.run("list").stdout
    assert f"1 PENDING instance(s) shown: {reason}" in listing
    (shown,) = cli.json("list")["instances"]
    assert reason in shown["waiting"]
    greeted = cli.start("greet", "ada", "--id", "greeted")
    assert cli.wait(greeted)["waiting"] is None


def test_list_sorts_and_filters_top_level_and_custom_status(cli: Cli) -> None:
    family = cli.start("parent", ["a"], "--id", "fam")
    cli.wait(family)
    for iid in ("w-b", "w-a"):
        cli.start("await_approval", None, "--id", iid)
    for iid in ("w-b", "w-a"):
        wait_for_status(cli.url, iid, dt.OrchestrationStatus.RUNNING)

    newest_first = cli.json("list", "--sort", "created", "--desc")
    assert [s["instance_id"] for s in newest_first["instances"]] == [
        "w-a",
        "w-b",
        "fam:child-0",
        "fam",
    ]
    by_name = cli.json("list", "--sort", "name", "--top-level")
    assert [s["instance_id"] for s in by_name["instances"]] == ["w-a", "w-b", "fam"]
    assert by_name["total"] == 3
    waiting = cli.json("list", "--custom-status", '"waiting"')
    assert sorted(s["instance_id"] for s in waiting["instances"]) == ["w-a", "w-b"]
    assert waiting["total"] == 2
    bad = cli.run("list", "--sort", "colour", code=2)
    assert "colour" in bad.stderr


def test_workers_shows_the_connected_worker_and_the_backlog(cli: Cli) -> None:
    iid = cli.start("greet", "x")
    cli.wait(iid)

    def seen() -> dict[str, Any]:
        report: dict[str, Any] = cli.json("workers")
        return report

    report = seen()
    (me,) = report["workers"]
    assert me["pid"] == os.getpid()
    assert {"name": "greet", "version": None} in me["orchestrations"]
    assert "say_hello" in me["activities"]
    assert me["task_queues"] == ["default"]
    assert me["seconds_since_heartbeat"] < 30
    assert report["backlog"] == []
    text = cli.run("workers").stdout
    assert "Workers" in text and "Nothing waiting." in text
