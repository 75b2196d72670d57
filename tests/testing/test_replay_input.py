"""``replay`` given something that is not a history says what is wrong with it, as a typed
error (:class:`InvalidHistoryError`, a ValueError) naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

import duratask as dt
from duratask.testing import InvalidHistoryError, replay, replay_many


async def noop(ctx: dt.OrchestrationContext, _: object) -> None:
    return None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "the file is empty; expected a JSON array of history events"),
        ("  \n", "the file is empty"),
        ("[]", "the file holds an empty JSON array"),
        ("[ ]\n", "the file holds an empty JSON array"),
        ("{}", "expected a JSON array of history events, got an object"),
        ("null", "expected a JSON array of history events, got null"),
        ('"history"', "got a string"),
        ("[1, 2]", "history event #0 is not valid: expected an object, got a number"),
        ('[{"name": "x"}]', "history event #0 is not valid: missing field 'type'"),
        ("not json", "the file is not JSON text: Expecting value"),
        ("[" * 100_000, "nested too deeply"),
        (
            '[{"type": "OrchestratorStarted", "timestamp": "2024-05-01T12:00:00+00:00"}]',
            "the history has no ExecutionStarted event",
        ),
    ],
)
def test_a_file_that_is_not_a_history_names_its_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "order-42.json"
    path.write_text(content)
    with pytest.raises(InvalidHistoryError) as caught:
        replay(noop, path)
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, dt.DurataskError)
    assert error.source == str(path)
    assert problem in error.problem, error.problem
    assert str(error).startswith(f"{path}: ")
    assert "pass a pathlib.Path" not in str(error)  # it was a Path


def test_empty_input_of_every_kind_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidHistoryError, match="the history text is empty"):
        replay(noop, "")
    with pytest.raises(InvalidHistoryError, match="the history has no events"):
        replay(noop, [])
    with pytest.raises(InvalidHistoryError, match="not UTF-8 text"):
        (tmp_path / "binary.json").write_bytes(b"\xff\xfe[")
        replay(noop, tmp_path / "binary.json")
    with pytest.raises(InvalidHistoryError, match="cannot read the history file"):
        replay(noop, tmp_path / "missing.json")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "a-empty.json").write_text("")
    with pytest.raises(InvalidHistoryError, match=r"a-empty\.json: the file is empty"):
        replay_many(noop, tmp_path / "dir")
