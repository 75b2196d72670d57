"""The server's record of what it last committed for each running instance."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from duratask import history as h
from duratask.backends.base import OrchestrationCommit
from duratask.serve.known_histories import KnownHistories
from duratask.serve.protocol import event_to_pb
from duratask.state import OrchestrationState, OrchestrationStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def state(
    iid: str = "i", status: OrchestrationStatus = OrchestrationStatus.RUNNING
) -> OrchestrationState:
    return OrchestrationState(
        instance_id=iid,
        name="o",
        version=None,
        runtime_status=status,
        created_at=T0,
        last_updated_at=T0,
        execution_id="e1",
    )


def started() -> list[h.HistoryEvent]:
    return [
        h.OrchestratorStarted(timestamp=T0),
        h.ExecutionStarted(timestamp=T0, name="o", instance_id="i", execution_id="e1"),
    ]


def step(task_id: int) -> list[h.HistoryEvent]:
    return [
        h.TaskScheduled(event_id=task_id, timestamp=T0, name="a"),
        h.OrchestratorCompleted(timestamp=T0),
    ]


def test_a_running_instance_is_known_as_committed() -> None:
    known = KnownHistories()
    history = started()
    new = step(0)
    after = replace(state(), last_updated_at=datetime(2026, 1, 2, tzinfo=UTC))
    known.committed(state(), history, len(history), OrchestrationCommit(after, new_events=new))
    entry = known.get("i")
    assert entry is not None
    assert entry.state is after
    assert entry.history == [*history, *new]


def test_a_commit_that_leaves_the_row_keeps_the_leased_row() -> None:
    known = KnownHistories()
    history = started()
    leased = state()
    known.committed(leased, history, len(history), OrchestrationCommit(replace(leased, name="x")))
    entry = known.get("i")
    assert entry is not None and entry.state is leased and entry.history == history


def test_ended_reset_or_partly_read_instances_are_forgotten() -> None:
    known = KnownHistories()
    history = started()
    known.committed(state(), history, 2, OrchestrationCommit(state(), new_events=step(0)))
    assert known.get("i") is not None
    ended = state(status=OrchestrationStatus.COMPLETED)
    known.committed(state(), history, 2, OrchestrationCommit(ended, new_events=step(1)))
    assert known.get("i") is None

    known.committed(state(), history, 2, OrchestrationCommit(state(), new_events=step(0)))
    known.committed(
        state(), history, 2, OrchestrationCommit(state(), new_events=started(), reset_history=True)
    )
    assert known.get("i") is None

    # The store gave the episode part of a longer history: nothing is known of the rest.
    known.committed(state(), history, 7, OrchestrationCommit(state(), new_events=step(0)))
    assert known.get("i") is None


def test_least_recently_used_instances_go_first_within_both_bounds() -> None:
    known = KnownHistories(max_instances=2, max_events=9)
    for iid in ("a", "b"):
        known.committed(state(iid), started(), 2, OrchestrationCommit(state(iid), step(0)))
    assert known.get("a") is not None  # "b" is now the least recently used
    known.committed(state("c"), started(), 2, OrchestrationCommit(state("c"), step(0)))
    assert (known.get("a") is not None, known.get("b"), known.get("c") is not None) == (
        True,
        None,
        True,
    )
    # Four events each: a third instance passes nine events, so one more goes.
    known.committed(state("d"), started(), 2, OrchestrationCommit(state("d"), step(0)))
    assert len(known) == 2


def test_protocol_events_are_converted_once_for_the_known_history() -> None:
    known = KnownHistories()
    history = started()
    known.committed(state(), history, 2, OrchestrationCommit(state(), new_events=step(0)))
    entry = known.get("i")
    assert entry is not None
    first = known.to_pb("i", entry.history)
    assert first == [event_to_pb(e) for e in entry.history]
    again = known.to_pb("i", entry.history)
    assert all(a is b for a, b in zip(first, again, strict=True))
    # An event that is not the known one (a rewound view's copy, say) is converted anew.
    copy = replace(entry.history[1])
    mixed = known.to_pb("i", [entry.history[0], copy])
    assert mixed[0] is first[0] and mixed[1] is not first[1] and mixed[1] == first[1]
    # A later commit on the known history keeps the conversions of its prefix.
    known.committed(entry.state, entry.history, 4, OrchestrationCommit(state(), step(1)))
    longer = known.get("i")
    assert longer is not None
    assert known.to_pb("i", longer.history)[0] is first[0]
    assert known.to_pb("i", [history[0]]) == [event_to_pb(history[0])]
