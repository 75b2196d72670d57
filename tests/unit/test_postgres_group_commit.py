"""Group commit of the PostgreSQL store: batching, order, and errors kept per commit."""

from __future__ import annotations

import asyncio
import json

import pytest

from duratask.backends.postgres._group_commit import GroupCommit, Row


class FakeServer:
    """Stands in for the functions: echoes each document; ``hold`` keeps calls in flight."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.many_fails = False
        self.poisoned: set[str] = set()
        self.resent: list[bool] = []

    async def one(self, document: str, resent: bool) -> Row:
        self.calls.append([document])
        self.resent.append(resent)
        await self.hold.wait()
        if document in self.poisoned:
            raise RuntimeError(f"cannot commit {document}")
        return {"echo": document}

    async def many(self, documents: list[str]) -> list[Row]:
        self.calls.append(list(documents))
        await self.hold.wait()
        if self.many_fails or self.poisoned & set(documents):
            raise RuntimeError("the batch failed")
        return [{"echo": document} for document in documents]


def docs(n: int) -> list[str]:
    return [json.dumps({"n": i}) for i in range(n)]


async def until(condition: object, what: str) -> None:
    """Let the event loop run until ``condition()`` holds (bounded)."""
    for _ in range(1000):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


async def test_a_lone_commit_leaves_at_once_on_its_own() -> None:
    server = FakeServer()
    commits = GroupCommit(server.one, server.many)
    assert await commits.send("a") == {"echo": "a"}
    assert server.calls == [["a"]]
    assert server.resent == [False]


async def test_commits_queued_behind_calls_in_flight_go_together_in_order() -> None:
    server = FakeServer()
    server.hold.clear()
    commits = GroupCommit(server.one, server.many, max_in_flight=1)
    first = asyncio.create_task(commits.send("first"))
    await until(lambda: server.calls, "the first call left")
    rest = [asyncio.create_task(commits.send(d)) for d in docs(5)]
    await asyncio.sleep(0)
    server.hold.set()
    assert await first == {"echo": "first"}
    assert [await task for task in rest] == [{"echo": d} for d in docs(5)]
    assert server.calls == [["first"], docs(5)]


async def test_a_batch_is_never_larger_than_max_batch() -> None:
    server = FakeServer()
    server.hold.clear()
    commits = GroupCommit(server.one, server.many, max_batch=2, max_in_flight=1)
    first = asyncio.create_task(commits.send("first"))
    await until(lambda: server.calls, "the first call left")
    rest = [asyncio.create_task(commits.send(d)) for d in docs(5)]
    server.hold.set()
    await asyncio.gather(first, *rest)
    assert [len(call) for call in server.calls] == [1, 2, 2, 1]


async def test_calls_in_flight_are_bounded_and_each_takes_what_is_queued() -> None:
    server = FakeServer()
    server.hold.clear()
    commits = GroupCommit(server.one, server.many, max_in_flight=2)
    d = docs(6)
    tasks = [asyncio.create_task(commits.send(d[0]))]
    await until(lambda: len(server.calls) == 1, "one call in flight")
    tasks.append(asyncio.create_task(commits.send(d[1])))
    await until(lambda: len(server.calls) == 2, "a second call in flight")
    tasks += [asyncio.create_task(commits.send(x)) for x in d[2:]]
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(server.calls) == 2, "no third call while two are out"
    server.hold.set()
    assert [await task for task in tasks] == [{"echo": x} for x in d]
    assert server.calls == [[d[0]], [d[1]], d[2:]]


async def test_one_bad_commit_fails_alone_when_its_batch_fails() -> None:
    server = FakeServer()
    server.hold.clear()
    server.poisoned = {"bad"}
    commits = GroupCommit(server.one, server.many, max_in_flight=1)
    first = asyncio.create_task(commits.send("first"))
    await until(lambda: server.calls, "the first call left")
    good = asyncio.create_task(commits.send("good"))
    bad = asyncio.create_task(commits.send("bad"))
    later = asyncio.create_task(commits.send("later"))
    server.hold.set()
    assert await first == {"echo": "first"}
    assert await good == {"echo": "good"}
    assert await later == {"echo": "later"}
    with pytest.raises(RuntimeError, match="cannot commit bad"):
        await bad
    # The failed batch was sent again one commit at a time, each marked as sent again
    # (the failed call may have committed).
    assert server.calls[1] == ["good", "bad", "later"]
    assert server.calls[2:] == [["good"], ["bad"], ["later"]]
    assert server.resent == [False, True, True, True]


async def test_a_commit_from_another_event_loop_goes_on_its_own() -> None:
    server = FakeServer()
    commits = GroupCommit(server.one, server.many)
    assert await commits.send("here") == {"echo": "here"}

    def elsewhere() -> Row:
        return asyncio.run(commits.send("there"))

    assert await asyncio.to_thread(elsewhere) == {"echo": "there"}
    assert server.calls == [["here"], ["there"]]
