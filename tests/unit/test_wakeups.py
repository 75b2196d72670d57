"""Push wake-ups: remembered work notifications and per-instance watches."""

from __future__ import annotations

import asyncio
import gc
import threading

from duratask.backends._wakeups import ACTIVITY, ORCHESTRATION, WakeUps, hub_wakeups


async def test_a_notification_is_remembered_until_consumed() -> None:
    wakeups = WakeUps()
    wakeups.work([ORCHESTRATION])
    assert await wakeups.wait_for_work(0.01, ACTIVITY) is False
    assert await wakeups.wait_for_work(0.01, ORCHESTRATION) is True
    assert await wakeups.wait_for_work(0.01, ORCHESTRATION) is False


async def test_a_waiter_is_woken_from_another_thread() -> None:
    wakeups = WakeUps()
    waiting = asyncio.create_task(wakeups.wait_for_work(30, ACTIVITY))
    await asyncio.sleep(0)
    threading.Thread(target=wakeups.work, args=([ACTIVITY],)).start()
    assert await asyncio.wait_for(waiting, 10) is True


async def test_watch_sees_changes_of_its_instance_only() -> None:
    wakeups = WakeUps()
    async with wakeups.watch("a") as watch:
        wakeups.instances_changed(["b"])
        assert await watch.changed(0.01) is False
        wakeups.instances_changed(["a"])  # before the wait: remembered
        assert await watch.changed(0.01) is True
        waiting = asyncio.create_task(watch.changed(30))
        await asyncio.sleep(0)
        wakeups.instances_changed(["a"])
        assert await asyncio.wait_for(waiting, 10) is True
    wakeups.instances_changed(["a"])  # no watch left: nothing to wake, nothing breaks


async def test_hub_group_reaches_every_member() -> None:
    group = hub_wakeups("test-hub-group")
    first, second = WakeUps(), WakeUps()
    group.join(first)
    group.join(second)
    group.work([ORCHESTRATION])
    assert await first.wait_for_work(0.01, ORCHESTRATION)
    assert await second.wait_for_work(0.01, ORCHESTRATION)


async def test_a_dropped_member_leaves_the_hub_group_and_a_waiter_is_woken_once() -> None:
    group = hub_wakeups("test-hub-leave")
    kept, dropped = WakeUps(), WakeUps()
    group.join(kept)
    group.join(kept)  # joining twice is joining once
    group.join(dropped)
    del dropped
    gc.collect()
    group.join(WakeUps())  # a join prunes the members that are gone
    assert len(group._members) == 2
    waiter = asyncio.ensure_future(kept.wait_for_work(10, ORCHESTRATION))
    await asyncio.sleep(0)
    group.work([ORCHESTRATION])
    group.work([ORCHESTRATION])  # already woken: not resolved again
    assert kept._work_waiters == []
    assert await asyncio.wait_for(waiter, 10) is True


async def test_everything_changed_wakes_watches_and_work() -> None:
    wakeups = WakeUps()
    async with wakeups.watch("x") as watch:
        wakeups.everything_changed()
        assert await watch.changed(0.01)
        assert await wakeups.wait_for_work(0.01, ACTIVITY)
