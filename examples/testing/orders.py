"""The app examples/testing/test_orders.py tests (README.md, "Testing your handlers")."""

from streamflow import App, Message, Reject, Retry

app = App()
billed: list[int] = []  # stands in for the real side effect (a database, an API call)


@app.handler("orders", group="billing", retry=Retry(max_attempts=3, backoff=0.05))
async def bill(msg: Message) -> None:
    order = msg.payload
    if order["amount"] <= 0:
        raise Reject(f"order {order['order_id']}: nothing to bill")  # dead-lettered at once
    billed.append(order["order_id"])
