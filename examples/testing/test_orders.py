"""Tests of the orders app: one calls the handler directly, one runs the app on a server."""

import pytest
from orders import app, bill, billed

from streamflow import Reject
from streamflow.testing import make_message, run_until

pytestmark = pytest.mark.anyio


async def test_an_order_without_amount_is_rejected() -> None:
    with pytest.raises(Reject, match="nothing to bill"):
        await bill(make_message({"order_id": 7, "amount": 0}, stream="orders"))


async def test_orders_are_billed_or_dead_lettered(any_redis_url: str) -> None:
    billed.clear()
    orders = [{"order_id": 1, "amount": 5}, {"order_id": 2, "amount": 0}, {"order_id": 3, "amount": 9}]
    stats = await run_until(app, any_redis_url, finished=3,
                            feed=lambda: app.publish_many("orders", orders))
    assert (stats.handled, stats.dead_lettered) == (2, 1)
    assert sorted(billed) == [1, 3]
