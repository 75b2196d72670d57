"""The benchmark's CPU accounting helpers (benchmarks/cpu.py): pure functions, no timing."""

from __future__ import annotations

import os

import pytest
from benchmarks.cpu import CpuLedger, cpu_figures, parse_proc_stat_cpu, per_thousand


def stat_line(comm: str, utime: int, stime: int) -> str:
    """A /proc/<pid>/stat line with the given command name and CPU ticks."""
    before = ["S", "1", "42", "42", "0", "-1", "4194560", "100", "0", "0", "0"]
    after = ["3", "4", "20", "0", "1", "0", "12345", "1000", "200"]
    return " ".join(["4242", f"({comm})", *before, str(utime), str(stime), *after]) + "\n"


def test_proc_stat_cpu_is_user_plus_system_time_in_seconds() -> None:
    assert parse_proc_stat_cpu(stat_line("postgres", 150, 50), 100.0) == pytest.approx(2.0)


def test_proc_stat_command_names_with_spaces_and_parentheses() -> None:
    text = stat_line("postgres: 15/main: a) b (c", 7, 3)
    assert parse_proc_stat_cpu(text, 100.0) == pytest.approx(0.1)


def test_proc_stat_of_this_process_parses() -> None:
    with open(f"/proc/{os.getpid()}/stat") as handle:
        assert parse_proc_stat_cpu(handle.read()) >= 0.0


def test_ledger_counts_from_the_start_sample() -> None:
    ledger = CpuLedger()
    ledger.start({1: 10.0, 2: 5.0})
    ledger.observe({1: 11.5, 2: 5.25})
    ledger.observe({1: 12.0, 2: 5.5})
    assert ledger.total() == pytest.approx(2.5)


def test_ledger_counts_a_process_born_after_the_start_from_zero() -> None:
    ledger = CpuLedger()
    ledger.start({1: 10.0})
    ledger.observe({1: 10.0, 3: 0.75})
    assert ledger.total() == pytest.approx(0.75)
    assert ledger.processes == 2


def test_ledger_keeps_what_an_ended_process_used_until_its_last_sample() -> None:
    ledger = CpuLedger()
    ledger.start({1: 1.0, 2: 2.0})
    ledger.observe({1: 1.5, 2: 2.25})
    ledger.observe({2: 3.0})  # process 1 is gone
    assert ledger.total() == pytest.approx(0.5 + 1.0)


def test_ledger_treats_a_falling_cpu_time_as_a_new_process_with_the_same_pid() -> None:
    ledger = CpuLedger()
    ledger.start({7: 4.0})
    ledger.observe({7: 5.0})  # the first process used 1.0, then ended
    ledger.observe({7: 0.25})  # a new process reuses the pid
    assert ledger.total() == pytest.approx(1.25)


def test_ledger_must_start_before_it_observes() -> None:
    with pytest.raises(RuntimeError):
        CpuLedger().observe({1: 1.0})


def test_per_thousand() -> None:
    assert per_thousand(1.5, 500) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        per_thousand(1.0, 0)


def test_cpu_figures_with_both_sides() -> None:
    figures = cpu_figures(2.0, 0.5, 4000)
    assert figures == pytest.approx(
        {
            "worker_cpu_s": 2.0,
            "worker_cpu_s_per_1k": 0.5,
            "pg_cpu_s": 0.5,
            "pg_cpu_s_per_1k": 0.125,
            "workers_per_pg_core": 4.0,
        }
    )


def test_cpu_figures_without_a_server_or_without_server_cpu() -> None:
    assert cpu_figures(1.0, None, 1000) == pytest.approx(
        {"worker_cpu_s": 1.0, "worker_cpu_s_per_1k": 1.0}
    )
    assert "workers_per_pg_core" not in cpu_figures(1.0, 0.0, 1000)
    assert cpu_figures(None, None, 1000) == {}
