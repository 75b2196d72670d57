"""Push wake-ups: "work may be available" and "this instance changed", without polling.

A :class:`WakeUps` belongs to one store object. It remembers work notifications per kind
until a waiter consumes them (so one that arrives while the worker is busy is not lost), and
wakes the :class:`InstanceWatch` objects of an instance when its row changes. Setting is
thread-safe; waiting happens on the waiter's own event loop.

In-process stores (memory, SQLite) deliver to every store object on the same hub in this
process through :func:`hub_wakeups`; PostgreSQL feeds the same object from LISTEN/NOTIFY, so
it reaches other processes and machines too.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Iterable
from types import TracebackType

ORCHESTRATION = "orchestration"
ACTIVITY = "activity"
ENTITY = "entity"
SCHEDULE = "schedule"


_WorkWaiter = tuple[str | None, asyncio.AbstractEventLoop, "asyncio.Future[None]"]


class InstanceWatch:
    """Interest in one instance's changes; use ``async with`` around the check-then-wait loop."""

    def __init__(self, wakeups: WakeUps, instance_id: str) -> None:
        self._wakeups = wakeups
        self.instance_id = instance_id
        self._changed = False
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    async def __aenter__(self) -> InstanceWatch:
        self._wakeups._add_watch(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._wakeups._remove_watch(self)

    async def changed(self, timeout: float) -> bool:
        """Wait until the instance changed since the last call (or since entering)."""
        loop = asyncio.get_running_loop()
        with self._wakeups._lock:
            if self._changed:
                self._changed = False
                return True
            future: asyncio.Future[None] = loop.create_future()
            self._waiter = (loop, future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        with self._wakeups._lock:
            self._waiter = None
            changed, self._changed = self._changed, False
        return changed

    def _signal(self) -> None:  # called with the WakeUps lock held
        self._changed = True
        if self._waiter is not None:
            loop, future = self._waiter
            _resolve_soon(loop, future)


class WakeUps:
    """Remembered work notifications and instance watches of one store object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._work_waiters: list[_WorkWaiter] = []
        self._watches: dict[str, set[InstanceWatch]] = {}

    def work(self, kinds: Iterable[str]) -> None:
        """Note that work of these kinds may be available, waking whoever waits for it."""
        with self._lock:
            for kind in kinds:
                self._pending.add(kind)
            waiters = self._work_waiters
            woken = [w for w in waiters if w[0] is None or w[0] in self._pending]
            if not woken:
                return
            # A woken waiter is woken once: a busy hub notifies on every commit.
            self._work_waiters = [w for w in waiters if w not in woken]
            for _, loop, future in woken:
                _resolve_soon(loop, future)

    def instances_changed(self, instance_ids: Iterable[str]) -> None:
        """Wake the watches of these instances."""
        with self._lock:
            for instance_id in instance_ids:
                for watch in self._watches.get(instance_id, ()):
                    watch._signal()

    def everything_changed(self) -> None:
        """After missed notifications (a reconnect): wake every waiter and every watch."""
        with self._lock:
            watches = [w for ws in self._watches.values() for w in ws]
            for watch in watches:
                watch._signal()
        self.work((ORCHESTRATION, ACTIVITY, ENTITY, SCHEDULE))

    async def wait_for_work(self, timeout: float, kind: str | None = None) -> bool:
        """Wait up to ``timeout`` s for work of ``kind`` (None: any); True if notified."""
        if self._consume(kind):
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (kind, loop, future)
        with self._lock:
            self._work_waiters.append(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                if entry in self._work_waiters:
                    self._work_waiters.remove(entry)
        return self._consume(kind)

    def watch(self, instance_id: str) -> InstanceWatch:
        return InstanceWatch(self, instance_id)

    def _consume(self, kind: str | None) -> bool:
        with self._lock:
            if kind is None:
                found = bool(self._pending)
                self._pending.clear()
                return found
            if kind in self._pending:
                self._pending.discard(kind)
                return True
            return False

    def _add_watch(self, watch: InstanceWatch) -> None:
        with self._lock:
            self._watches.setdefault(watch.instance_id, set()).add(watch)

    def _remove_watch(self, watch: InstanceWatch) -> None:
        with self._lock:
            watches = self._watches.get(watch.instance_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[watch.instance_id]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _resolve_soon(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    """Resolve ``future`` on its loop; from that loop's own thread without waking its
    selector through the self-pipe, which ``call_soon_threadsafe`` always writes to."""
    try:
        here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # a thread with no loop (a worker thread, a sync caller)
        here = None
    if here is loop:
        loop.call_soon(_resolve, future)
    else:
        loop.call_soon_threadsafe(_resolve, future)


class HubWakeUps:
    """Every store object of one hub in this process: a notification reaches them all."""

    def __init__(self) -> None:
        # Weak: a store object that is dropped leaves the hub (its reference is pruned at
        # the next join; no weakref callback, which could run inside the lock during a
        # garbage collection). Replaced whole, never changed, so notifying (on every commit)
        # reads it without taking the lock.
        self._members: tuple[weakref.ref[WakeUps], ...] = ()
        self._lock = threading.Lock()

    def join(self, wakeups: WakeUps) -> None:
        with self._lock:
            live = tuple(ref for ref in self._members if ref() is not None)
            if all(ref() is not wakeups for ref in live):
                live = (*live, weakref.ref(wakeups))
            self._members = live

    def work(self, kinds: Iterable[str]) -> None:
        kinds = tuple(kinds)
        for ref in self._members:
            member = ref()
            if member is not None:
                member.work(kinds)

    def instances_changed(self, instance_ids: Iterable[str]) -> None:
        ids = tuple(instance_ids)
        for ref in self._members:
            member = ref()
            if member is not None:
                member.instances_changed(ids)


_HUBS: weakref.WeakValueDictionary[str, HubWakeUps] = weakref.WeakValueDictionary()
_HUBS_LOCK = threading.Lock()


def hub_wakeups(key: str) -> HubWakeUps:
    """The process-wide wake-up group of the hub named ``key`` (e.g. a database file path)."""
    with _HUBS_LOCK:
        hub = _HUBS.get(key)
        if hub is None:
            hub = _HUBS[key] = HubWakeUps()
        return hub
