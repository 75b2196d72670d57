"""Failures by type, retries with back-off, and compensation of the steps already done."""

from __future__ import annotations

from datetime import timedelta

import duratask as dt
from duratask.testing import SyncTimeSkippingHub

HOTEL_CALLS: list[str] = []


# --8<-- [start:activities]
class CardDeclined(Exception):
    """The payment provider refused the card: retrying will not help."""


def book_flight(ctx: dt.ActivityContext, trip: dict) -> str:
    return f"flight F-{trip['id']}"


def book_hotel(ctx: dt.ActivityContext, trip: dict) -> str:
    HOTEL_CALLS.append(trip["id"])
    if len(HOTEL_CALLS) < 3:
        raise ConnectionError("hotel service unavailable")  # transient: worth retrying
    return f"hotel H-{trip['id']}"


def charge_card(ctx: dt.ActivityContext, trip: dict) -> str:
    if trip["card"] == "expired":
        raise CardDeclined(f"card for trip {trip['id']} was declined")
    return "paid"


def cancel(ctx: dt.ActivityContext, booking: str) -> str:
    return f"cancelled {booking}"


# --8<-- [end:activities]


# --8<-- [start:orchestration]
def transient(failure: dt.TaskFailedError) -> bool:
    """A failure worth retrying: a connection or a timeout problem (or a subclass)."""
    return failure.details.is_caused_by(ConnectionError) or failure.details.is_caused_by(
        TimeoutError
    )


RETRY_TRANSIENT = dt.RetryPolicy(
    first_retry_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,  # 5 s, then 10 s, then 20 s...
    max_retry_interval=timedelta(minutes=1),
    max_number_of_attempts=5,
    # Retry only what may succeed next time; a declined card fails the task at once.
    handle=transient,
)


async def book_trip(ctx: dt.OrchestrationContext, trip: dict) -> dict:
    done: list[str] = []  # what to undo if a later step fails
    try:
        for step in (book_flight, book_hotel):
            done.append(await ctx.call_activity(step, input=trip, retry_policy=RETRY_TRANSIENT))
        await ctx.call_activity(charge_card, input=trip, retry_policy=RETRY_TRANSIENT)
    except dt.TaskFailedError as failure:
        if not failure.details.is_caused_by(CardDeclined):
            raise  # anything else fails the instance, for an operator to look at
        # Compensate: undo the bookings, the last one first.
        undone = [await ctx.call_activity(cancel, input=booking) for booking in reversed(done)]
        return {"status": "declined", "undone": undone}
    return {"status": "booked", "bookings": done}


# --8<-- [end:orchestration]


# --8<-- [start:main]
def main() -> dict:
    HOTEL_CALLS.clear()
    # The test hub's virtual clock lets the 5 s and 10 s back-offs pass at once.
    with SyncTimeSkippingHub() as hub:
        hub.register(book_trip, activities=(book_flight, book_hotel, charge_card, cancel))
        iid = hub.client.schedule_new_orchestration(book_trip, input={"id": 1, "card": "expired"})
        state = hub.client.wait_for_orchestration_completion(iid)
        return {"hotel attempts": len(HOTEL_CALLS), **state.output}


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
