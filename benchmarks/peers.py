"""Optional peers: FastStream (Redis StreamSub, per-message and batch) and taskiq-redis.

Each peer is measured only when importable (``pip install 'faststream[redis]' taskiq-redis``);
:func:`peer_impls` returns the specs of those that are installed and the reasons the
others were skipped. Entries are preloaded in each peer's own wire format (FastStream's
``__data__`` field with its binary envelope; taskiq's ``data`` field with a
``TaskiqMessage``), carrying the same ~130-byte JSON payload as the streamflow entries.

Peers run with their defaults except where noted: FastStream per-message subscriber
``StreamSub(max_records=100)`` (``max_workers=1000`` for the sleep scenario), batch
subscriber ``max_records=1000``; taskiq ``Receiver(max_async_tasks=100)`` (1000 for the
sleep scenario), like ``taskiq worker``'s default. Their own logging stays at its
default (FastStream logs every message at INFO; the child's output goes to a file);
``throughput.py --peers-quiet`` builds FastStream's broker with ``logger=None`` instead.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from benchmarks.common import GROUP, cpu_work, payload_obj, wait_group_done

PEERS = ("faststream", "faststream-batch", "taskiq")
TASK_NAME = "bench_task"


def _importable(*modules: str) -> str | None:
    """None if every module imports, else the error."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # ImportError, or a broken install
            return f"{name}: {type(exc).__name__}: {exc}"
    return None


class Counter:
    """Counts handled messages; ``done`` is set when ``n`` were handled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.count = 0
        self.done = asyncio.Event()

    def add(self, k: int = 1) -> None:
        self.count += k
        if self.count >= self.n:
            self.done.set()


# --------------------------------------------------------------------------- entries


def faststream_entries(n: int) -> Callable[[int], Sequence[bytes]]:
    """``__data__`` entries in FastStream's default (binary v1) format."""
    from faststream.redis.parser import BinaryMessageFormatV1

    async def build() -> list[bytes]:
        return [
            await BinaryMessageFormatV1.encode(
                message=payload_obj(i), reply_to=None, headers=None, correlation_id=str(uuid.uuid4())
            )
            for i in range(n)
        ]

    data = asyncio.run(build())
    return lambda i: (b"__data__", data[i])


def taskiq_entries(n: int) -> Callable[[int], Sequence[bytes]]:
    """``data`` entries holding a TaskiqMessage that calls ``bench_task(payload)``."""
    from taskiq.formatters.json_formatter import JSONFormatter
    from taskiq.message import TaskiqMessage

    fmt = JSONFormatter()
    data = [
        fmt.dumps(TaskiqMessage(task_id=uuid.uuid4().hex, task_name=TASK_NAME, labels={},
                                args=[payload_obj(i)], kwargs={})).message
        for i in range(n)
    ]
    return lambda i: (b"data", data[i])


# --------------------------------------------------------------------------- consumers


async def consume_faststream(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: consume with a FastStream RedisBroker subscriber (per message or batch)."""
    from faststream.redis import RedisBroker, StreamSub

    url, stream, group, n = params["url"], params["stream"], params.get("group", GROUP), params["n"]
    scenario, batch = params["scenario"], bool(params["batch"])
    counter = Counter(n)
    broker = RedisBroker(url, logger=None) if params.get("quiet") else RedisBroker(url)
    if batch:
        sub = StreamSub(stream, group=group, consumer="fs-0", batch=True, max_records=1000)

        if scenario == "noop":
            async def handler(bodies: list[Any]) -> None:
                counter.add(len(bodies))
        elif scenario == "json":
            async def handler(bodies: list[Any]) -> None:
                for body in bodies:
                    cpu_work(body)
                counter.add(len(bodies))
        else:
            async def one(_body: Any) -> None:
                await anyio.sleep(0.001)

            async def handler(bodies: list[Any]) -> None:
                await asyncio.gather(*[one(b) for b in bodies])
                counter.add(len(bodies))

        broker.subscriber(stream=sub)(handler)
    else:
        sub = StreamSub(stream, group=group, consumer="fs-0", max_records=100)
        if scenario == "noop":
            async def handler(body: Any) -> None:
                counter.add()
        elif scenario == "json":
            async def handler(body: Any) -> None:
                cpu_work(body)
                counter.add()
        else:
            async def handler(body: Any) -> None:
                await anyio.sleep(0.001)
                counter.add()

        if scenario == "sleep":
            broker.subscriber(stream=sub, max_workers=1000)(handler)
        else:
            broker.subscriber(stream=sub)(handler)

    t0 = time.perf_counter()
    await broker.start()
    await counter.done.wait()
    t_handled = time.perf_counter()
    acked = await wait_group_done(url, stream, group)
    t_acked = time.perf_counter()
    await broker.stop()
    return {"handled": counter.count, "seconds": t_acked - t0, "handled_seconds": t_handled - t0,
            "acked": acked}


async def consume_taskiq(params: dict[str, Any]) -> dict[str, Any]:
    """Child process: consume with taskiq-redis RedisStreamBroker and taskiq's Receiver."""
    from taskiq.receiver import Receiver
    from taskiq_redis import RedisStreamBroker

    url, stream, group, n = params["url"], params["stream"], params.get("group", GROUP), params["n"]
    scenario = params["scenario"]
    counter = Counter(n)
    broker = RedisStreamBroker(url, queue_name=stream, consumer_group_name=group)

    if scenario == "noop":
        async def bench_task(payload: dict[str, Any]) -> None:
            counter.add()
    elif scenario == "json":
        async def bench_task(payload: dict[str, Any]) -> None:
            cpu_work(payload)
            counter.add()
    else:
        async def bench_task(payload: dict[str, Any]) -> None:
            await anyio.sleep(0.001)
            counter.add()

    broker.task(task_name=TASK_NAME)(bench_task)
    broker.is_worker_process = True
    receiver = Receiver(broker, max_async_tasks=1000 if scenario == "sleep" else 100)
    finish = asyncio.Event()
    t0 = time.perf_counter()
    listener = asyncio.create_task(receiver.listen(finish))
    await counter.done.wait()
    t_handled = time.perf_counter()
    acked = await wait_group_done(url, stream, group)
    t_acked = time.perf_counter()
    finish.set()
    try:
        await asyncio.wait_for(listener, 5)
    except (TimeoutError, asyncio.CancelledError):
        listener.cancel()
    await broker.shutdown()
    return {"handled": counter.count, "seconds": t_acked - t0, "handled_seconds": t_handled - t0,
            "acked": acked}


# --------------------------------------------------------------------------- specs


def peer_impls(wanted: Sequence[str] = PEERS) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Specs of the installed peers among ``wanted``, and ``{peer: why skipped}`` for the rest."""
    impls: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for name in wanted:
        if name.startswith("faststream"):
            err = _importable("faststream.redis")
            if err:
                skipped[name] = err
                continue
            impls.append({"impl": name, "target": "benchmarks.peers:consume_faststream",
                          "params": {"batch": name == "faststream-batch"},
                          "entries": faststream_entries, "peer": True})
        elif name == "taskiq":
            err = _importable("taskiq", "taskiq_redis")
            if err:
                skipped[name] = err
                continue
            impls.append({"impl": name, "target": "benchmarks.peers:consume_taskiq", "params": {},
                          "entries": taskiq_entries, "peer": True})
        else:
            skipped[name] = "unknown peer"
    return impls, skipped
