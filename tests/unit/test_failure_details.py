"""FailureDetails: the chain of causes, is_caused_by, and failures stored before either."""

from __future__ import annotations

import json

from duratask import history as h
from duratask.errors import TaskFailedError
from duratask.state import FailureDetails


class Declined(ValueError):
    pass


def _raise_chained() -> FailureDetails:
    try:
        try:
            raise KeyError("card")
        except KeyError as missing:
            raise Declined("card declined") from missing
    except Declined as exc:
        return FailureDetails.from_exception(exc)


def test_a_cause_is_the_inner_failure_with_its_own_traceback() -> None:
    failure = _raise_chained()
    assert [link.error_type for link in failure.chain()] == ["Declined", "KeyError"]
    assert failure.error_types == ("Declined", "ValueError", "Exception", "BaseException")
    assert failure.stack_trace is not None and "KeyError" not in failure.stack_trace
    assert failure.inner_failure is not None
    assert "raise KeyError" in (failure.inner_failure.stack_trace or "")


def test_a_task_failure_chains_to_the_tasks_own_failure() -> None:
    activity = _raise_chained()
    try:
        raise TaskFailedError("activity 'charge' failed", activity)
    except TaskFailedError as exc:
        failure = FailureDetails.from_exception(exc)
    assert failure.inner_failure == activity
    assert failure.is_caused_by(TaskFailedError)
    assert failure.is_caused_by(ValueError) and failure.is_caused_by(KeyError)
    assert failure.is_caused_by(LookupError)  # KeyError's base
    assert not failure.is_caused_by(TypeError)


def test_an_exception_raised_while_handling_another_chains_to_it() -> None:
    try:
        try:
            raise KeyError("x")
        except KeyError:
            raise RuntimeError("context suppressed") from None
    except RuntimeError as exc:
        assert FailureDetails.from_exception(exc).inner_failure is None  # suppressed
    try:
        try:
            raise KeyError("x")
        except KeyError:
            raise RuntimeError("while handling")
    except RuntimeError as exc:
        inner = FailureDetails.from_exception(exc).inner_failure
        assert inner is not None and inner.error_type == "KeyError"


def test_a_failure_stored_before_the_chain_fields_still_loads() -> None:
    old = {
        "error_type": "Declined",
        "message": "card declined",
        "stack_trace": "Traceback ...",
        "inner_failure": None,
        "is_non_retriable": False,
    }
    failure = FailureDetails.from_dict(old)
    assert failure.error_types == ()
    assert failure.is_caused_by(Declined)  # matched by its own type name
    assert not failure.is_caused_by(ValueError)  # its bases were not recorded
    event = h.event_from_json(
        json.dumps(
            {
                "type": "TASK_FAILED",
                "event_id": -1,
                "timestamp": "2024-01-01T00:00:00+00:00",
                "task_scheduled_id": 3,
                "failure_details": old,
            }
        )
    )
    assert isinstance(event, h.TaskFailed) and event.failure_details == failure
    assert FailureDetails.from_json(failure.to_json()) == failure


def test_the_chain_is_bounded() -> None:
    exc: BaseException = ValueError("root")
    for i in range(30):
        try:
            raise RuntimeError(f"level {i}") from exc
        except RuntimeError as raised:
            exc = raised
    assert len(FailureDetails.from_exception(exc).chain()) == 10
