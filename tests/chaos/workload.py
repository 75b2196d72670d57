"""The chaos workload: which orchestrations to start, which events to raise when, and the
output each instance must end with, computed here from the inputs alone.

The expected outputs re-derive every activity result with :func:`f`, which restates what the
``step`` activity computes; nothing of the orchestration code is run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import chaos_app as app

MODULUS = 1_000_003


def f(x: int) -> int:
    """The result of the ``step`` activity for input ``x``."""
    return (x * 31 + 7) % MODULUS


@dataclass(frozen=True)
class Raise:
    """An external event the test raises ``delay`` seconds after scheduling the instance."""

    name: str
    value: int
    delay: float


@dataclass
class Item:
    """One top-level instance of the workload."""

    instance_id: str
    orchestration: Callable[..., Any]
    spec: Any
    expected: Any
    raises: list[Raise] = field(default_factory=list)
    # Sub-orchestration instance ids with their expected outputs.
    children: dict[str, Any] = field(default_factory=dict)
    # How many activities run in the instance and its sub-orchestrations, all told.
    activities: int = 0


def _child(spec: app.Child) -> list[int]:
    first = f(spec.n)
    return [first, f(first)]


def _chain(iid: str, spec: app.Chain) -> Item:
    value = spec.n
    for i in range(spec.length):
        value = f(value + i)
    return Item(iid, app.chain, spec, value, activities=spec.length)


def _fan(iid: str, spec: app.Fan) -> Item:
    values = [f(spec.n * 100 + i) for i in range(spec.width)]
    expected = {"values": values, "total": f(sum(values) % MODULUS)}
    return Item(iid, app.fan, spec, expected, activities=spec.width + 1)


def _timers(iid: str, spec: app.Timers) -> Item:
    value = spec.n
    for _ in spec.delays_ms:
        value = f(value)
    return Item(iid, app.timers, spec, value, activities=len(spec.delays_ms))


def _family(iid: str, spec: app.Family) -> Item:
    children = {
        f"{iid}:c{k}": _child(app.Child(spec.n * 10 + k, spec.timer_ms))
        for k in range(spec.children)
    }
    last = _child(app.Child(spec.n * 10 + spec.children, 50))
    expected = {"together": list(children.values()), "last": last}
    children[f"{iid}:last"] = last
    return Item(
        iid, app.family, spec, expected, children=children, activities=2 * (spec.children + 1)
    )


def _waiter(iid: str, spec: app.Waiter, rng: random.Random) -> Item:
    values = [rng.randrange(1000) for _ in spec.events]
    first = f(spec.n)
    expected = {"received": values, "last": f(first + sum(values))}
    pairs = zip(spec.events, values, strict=True)
    raises = [Raise(name, value, _raise_delay(rng)) for name, value in pairs]
    rng.shuffle(raises)  # raised in any order; the orchestration waits for them in its own
    return Item(iid, app.waiter, spec, expected, raises=raises, activities=2)


def _mixed(iid: str, spec: app.Mixed, rng: random.Random) -> Item:
    first = f(spec.n)
    values = [f(first + i) for i in range(spec.width)]
    sub = _child(app.Child(spec.n, spec.timer_ms))
    go = rng.randrange(1000)
    last = f((sum(values) + sum(sub) + go) % MODULUS)
    expected = {"values": values, "sub": sub, "go": go, "last": last}
    return Item(
        iid,
        app.mixed,
        spec,
        expected,
        raises=[Raise("go", go, _raise_delay(rng))],
        children={f"{iid}:sub": sub},
        activities=spec.width + 4,
    )


def _raise_delay(rng: random.Random) -> float:
    """When to raise an event: a third at once (the instance has not started, so it cannot
    be waiting yet), the others at any moment of the next 2.5 s."""
    return 0.0 if rng.random() < 1 / 3 else round(rng.uniform(0.05, 2.5), 3)


def _timer_ms(rng: random.Random) -> int:
    return rng.randrange(50, 301)


def make_workload(rng: random.Random, count: int) -> list[Item]:
    """``count`` top-level instances, a random mix of the seven orchestrations' shapes."""
    items = []
    for n in range(count):
        kind = rng.choice(("chain", "fan", "timers", "family", "waiter", "mixed"))
        iid = f"{kind}-{n}"
        if kind == "chain":
            items.append(_chain(iid, app.Chain(n, length=rng.randrange(3, 8))))
        elif kind == "fan":
            items.append(_fan(iid, app.Fan(n, width=rng.randrange(8, 13))))
        elif kind == "timers":
            delays = [_timer_ms(rng) for _ in range(rng.randrange(1, 4))]
            items.append(_timers(iid, app.Timers(n, delays)))
        elif kind == "family":
            spec = app.Family(n, children=rng.randrange(2, 5), timer_ms=_timer_ms(rng))
            items.append(_family(iid, spec))
        elif kind == "waiter":
            names = [f"e{k}" for k in range(rng.randrange(1, 4))]
            items.append(_waiter(iid, app.Waiter(n, names), rng))
        else:
            spec_m = app.Mixed(n, width=rng.randrange(8, 13), timer_ms=_timer_ms(rng))
            items.append(_mixed(iid, spec_m, rng))
    return items
