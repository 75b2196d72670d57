"""``duratask schedule``: create, list, describe, pause, resume, trigger, backfill, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.cli.conftest import Cli, one_line_error


def test_create_list_and_describe(idle_cli: Cli) -> None:
    created = idle_cli.run(
        "schedule",
        "create",
        "nightly",
        "greet",
        "--cron",
        "0 3 * * *",
        "--tz",
        "Europe/Paris",
        "--input",
        '"Ann"',
        "--run-limit",
        "5",
    )
    assert created.stdout.startswith("Created schedule 'nightly'; next fire time: ")
    idle_cli.run("schedule", "create", "quarter", "greet", "--every", "15m", "--offset", "5m")
    listed = idle_cli.json("schedule", "list")
    assert [s["schedule_id"] for s in listed] == ["nightly", "quarter"]
    assert listed[1]["spec"]["intervals"] == [{"every_s": 900.0, "offset_s": 300.0}]
    table = idle_cli.run("schedule", "list").stdout
    assert "cron '0 3 * * *' in Europe/Paris" in table and "every 0:15:00 +0:05:00" in table
    described = idle_cli.json("schedule", "describe", "nightly", "--next", "3")
    assert described["input"] == "Ann" and described["run_limit"] == 5
    assert described["spec"]["time_zone"] == "Europe/Paris"
    assert len(described["next_fire_times"]) == 3
    for text in described["next_fire_times"]:  # 03:00 in Paris is 02:00Z or 01:00Z
        assert datetime.fromisoformat(text).astimezone(UTC).hour in (1, 2)


def test_pause_resume_trigger_backfill_delete(idle_cli: Cli) -> None:
    idle_cli.run("schedule", "create", "q", "greet", "--every", "1h", "--overlap", "allow_all")
    paused = idle_cli.run("schedule", "pause", "q", "--note", "db upgrade")
    assert paused.stdout == "Paused schedule 'q'.\n"
    described = idle_cli.json("schedule", "describe", "q")
    assert described["paused"] and described["note"] == "db upgrade"
    assert described["next_fire_at"] is None
    assert idle_cli.run("schedule", "resume", "q").stdout.startswith("Resumed schedule 'q'")
    run = idle_cli.run("schedule", "trigger", "q").stdout
    assert run.startswith("Started 'q@") and run.rstrip().endswith("-manual'.")
    now = datetime.now(UTC)
    first = (now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:00")
    last = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:00")
    backfilled = idle_cli.run("schedule", "backfill", "q", "--from", first, "--to", last)
    assert backfilled.stdout.splitlines()[0] == "Started 3 run(s)."
    again = idle_cli.run("schedule", "backfill", "q", "--from", first, "--to", last)
    assert again.stdout.splitlines()[0] == "Started 0 run(s)."
    kinds = [r["kind"] for r in idle_cli.json("schedule", "describe", "q")["recent_runs"]]
    assert kinds == ["backfill", "backfill", "backfill", "triggered"]
    assert idle_cli.run("schedule", "delete", "q", "-y").stdout == "Deleted schedule 'q'.\n"
    assert idle_cli.json("schedule", "list") == []


def test_bad_definitions_and_unknown_ids_are_one_line_errors(idle_cli: Cli) -> None:
    bad_cron = idle_cli.run("schedule", "create", "s", "greet", "--cron", "99 * * * *", code=2)
    assert "invalid cron expression '99 * * * *'" in one_line_error(bad_cron)
    bad_zone = idle_cli.run(
        "schedule", "create", "s", "greet", "--cron", "0 * * * *", "--tz", "Nowhere/City", code=2
    )
    assert "unknown time zone 'Nowhere/City'" in one_line_error(bad_zone)
    bad_every = idle_cli.run("schedule", "create", "s", "greet", "--every", "soon", code=2)
    assert "--every: cannot read 'soon'" in one_line_error(bad_every)
    assert idle_cli.json("schedule", "list") == []
    missing = idle_cli.run("schedule", "describe", "nope", code=1)
    assert "no schedule 'nope'" in one_line_error(missing)
    idle_cli.run("schedule", "create", "s", "greet", "--every", "1h")
    taken = idle_cli.run("schedule", "create", "s", "greet", "--every", "2h", code=1)
    assert "schedule 's' already exists" in one_line_error(taken)
