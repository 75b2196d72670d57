"""Typed payloads (dataclasses, pydantic models), a custom converter and the size limit."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date
from enum import Enum
from typing import Any

import pydantic

import duratask as dt


# --8<-- [start:types]
class Shipping(Enum):
    STANDARD = "standard"
    EXPRESS = "express"


@dataclass
class Order:
    order_id: str
    quantities: dict[str, int]
    shipping: Shipping
    deliver_by: date


class Invoice(pydantic.BaseModel):
    order_id: str
    total_cents: int
    express: bool


def price(ctx: dt.ActivityContext, order: Order) -> Invoice:
    # `order` arrives as an Order (decoded by the annotation), not as a dict.
    total = sum(count * 250 for count in order.quantities.values())
    express = order.shipping is Shipping.EXPRESS
    return Invoice(order_id=order.order_id, total_cents=total + 900 * express, express=express)


async def invoice_order(ctx: dt.OrchestrationContext, order: Order) -> Invoice:
    invoice = await ctx.call_activity(price, input=order)
    assert isinstance(invoice, Invoice)  # decoded by price's return annotation
    return invoice


# --8<-- [end:types]


# --8<-- [start:converter]
class ScramblingConverter:
    """Wraps every payload in base64: a stand-in for encrypting payloads at rest.

    What it stores is still JSON (a string), so the history, the CLI and the dashboard keep
    working; they show the scrambled text instead of the payload.
    """

    def __init__(self) -> None:
        self._json = dt.JsonDataConverter()

    def serialize(self, value: Any) -> str | None:
        text = self._json.serialize(value)
        if text is None:
            return None
        return json.dumps(base64.b64encode(text.encode()).decode())

    def deserialize(self, text: str | None, type_hint: Any = None) -> Any:
        if text is None:
            return None
        plain = base64.b64decode(json.loads(text)).decode()
        return self._json.deserialize(plain, type_hint)


# --8<-- [end:converter]


# --8<-- [start:main]
def main(store: str = "memory://payloads") -> dict:
    converter = ScramblingConverter()  # the worker and every client need the same one
    worker = dt.TaskHubWorker(store, data_converter=converter)
    worker.add_orchestration(invoice_order)
    worker.add_activity(price)
    order = Order("o-1", {"tea": 2, "cups": 4}, Shipping.EXPRESS, date(2030, 1, 31))
    with worker, dt.TaskHubClient(store, data_converter=converter) as client:
        iid = client.schedule_new_orchestration(invoice_order, input=order)
        state = client.wait_for_orchestration_completion(iid, timeout=30)
        invoice = Invoice.model_validate(state.output)  # the client sees plain JSON values

        # Payloads are limited (1 MiB by default): an oversized input is refused before
        # anything is stored. Keep large data elsewhere and pass a reference to it.
        refused = "nothing"
        with dt.TaskHubClient(store, max_payload_bytes=1024) as small:
            try:
                small.schedule_new_orchestration(invoice_order, input={"blob": "x" * 2000})
            except dt.PayloadTooLargeError as error:
                refused = f"{error.size} > {error.limit} bytes"
    return {"invoice": invoice, "stored input": state.serialized_input, "refused": refused}


# --8<-- [end:main]

if __name__ == "__main__":
    print(main())
