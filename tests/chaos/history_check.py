"""A validator for one instance's history: what the chaos tests require of every instance.

:func:`history_problems` lists everything wrong with a history (an empty list: valid):

- one ``ExecutionStarted``, the first event of the first episode;
- episodes well formed: ``OrchestratorStarted`` and ``OrchestratorCompleted`` alternate, and
  every other event lies inside an episode;
- no two scheduling events (``TaskScheduled``, ``TimerCreated``,
  ``SubOrchestrationInstanceCreated``, ``EventSent``) with the same task id;
- at most one result per task id, and only for an earlier scheduling event of its kind;
- nothing after ``ExecutionCompleted`` but the ``OrchestratorCompleted`` closing its episode,
  and at most one ``ExecutionCompleted``.

With ``finished`` the history must end the execution; with ``all_answered`` every scheduled
task, timer and sub-orchestration must have its result (orchestrations that await all they
start end only then).
"""

from __future__ import annotations

from collections.abc import Sequence

from duratask import history as h

SCHEDULING: tuple[type[h.HistoryEvent], ...] = (
    h.TaskScheduled,
    h.TimerCreated,
    h.SubOrchestrationInstanceCreated,
    h.EventSent,
)
# Each kind of result, and the kind of scheduling event it answers.
ANSWERS: dict[type[h.HistoryEvent], type[h.HistoryEvent]] = {
    h.TaskCompleted: h.TaskScheduled,
    h.TaskFailed: h.TaskScheduled,
    h.TimerFired: h.TimerCreated,
    h.SubOrchestrationInstanceCompleted: h.SubOrchestrationInstanceCreated,
    h.SubOrchestrationInstanceFailed: h.SubOrchestrationInstanceCreated,
}


def answered_id(event: h.HistoryEvent) -> int:
    """The task id a result event answers."""
    if isinstance(event, h.TimerFired):
        return event.timer_id
    task_id = getattr(event, "task_scheduled_id", None)
    if not isinstance(task_id, int):
        raise TypeError(f"{type(event).__name__} answers no task")
    return task_id


def history_problems(
    events: Sequence[h.HistoryEvent], *, finished: bool = True, all_answered: bool = False
) -> list[str]:
    """Everything wrong with ``events`` as one execution's history; empty when valid."""
    if not events:
        return ["empty history"]
    problems: list[str] = []

    def at(i: int, problem: str) -> None:
        problems.append(f"#{i} {type(events[i]).__name__}: {problem}")

    starts = [i for i, e in enumerate(events) if isinstance(e, h.ExecutionStarted)]
    if starts != [1]:
        problems.append(f"ExecutionStarted at {starts}, expected exactly at #1")
    ends = [i for i, e in enumerate(events) if isinstance(e, h.ExecutionCompleted)]
    if len(ends) > 1:
        problems.append(f"{len(ends)} ExecutionCompleted events, at {ends}")
    if finished and not ends:
        problems.append("no ExecutionCompleted")
    if ends:
        tail = events[ends[0] + 1 :]
        if [type(e) for e in tail] not in ([], [h.OrchestratorCompleted]):
            at(ends[0], f"followed by {[type(e).__name__ for e in tail]}")

    in_episode = False
    for i, event in enumerate(events):
        if isinstance(event, h.OrchestratorStarted):
            if in_episode:
                at(i, "starts an episode inside another")
            in_episode = True
        elif isinstance(event, h.OrchestratorCompleted):
            if not in_episode:
                at(i, "closes no episode")
            in_episode = False
        elif not in_episode:
            at(i, "outside any episode")
    if in_episode:
        problems.append("the last episode is not closed")

    scheduled: dict[int, type[h.HistoryEvent]] = {}
    answered: set[int] = set()
    for i, event in enumerate(events):
        if isinstance(event, SCHEDULING):
            if event.event_id < 0:
                at(i, f"negative task id {event.event_id}")
            elif event.event_id in scheduled:
                at(i, f"task id {event.event_id} scheduled twice")
            else:
                scheduled[event.event_id] = type(event)
        elif type(event) in ANSWERS:
            task_id = answered_id(event)
            wanted = ANSWERS[type(event)]
            if scheduled.get(task_id) is not wanted:
                at(i, f"answers task {task_id}, which is no earlier {wanted.__name__}")
            elif task_id in answered:
                at(i, f"second result for task {task_id}")
            answered.add(task_id)
    if all_answered:
        waiting = sorted(
            task_id
            for task_id, kind in scheduled.items()
            if kind is not h.EventSent and task_id not in answered
        )
        if waiting:
            problems.append(f"tasks without a result: {waiting}")
    return problems


def raised_events(events: Sequence[h.HistoryEvent]) -> dict[str, int]:
    """How many times each external event (by lower-cased name) entered the history."""
    counts: dict[str, int] = {}
    for event in events:
        if isinstance(event, h.EventRaised):
            counts[event.name.lower()] = counts.get(event.name.lower(), 0) + 1
    return counts
