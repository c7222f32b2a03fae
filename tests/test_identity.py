"""Consumer names and their leases: stable default names, restarts that take their own pending
entries back at once, refusal of a name a live process holds, release at shutdown, outages
longer than the lease, and the start-up report of stopped consumers' work.

Everything runs against private servers; worker subprocesses are ``python -m streamflow run``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from chaos.proxy import ChaosProxy
from failapps.support import pending_count, raw_client
from structlog.testing import capture_logs

from streamflow import App, ConfigError, ConsumerNameInUse, Message, Worker, scripts
from streamflow.embedded import ServerProcess
from streamflow.keys import consumer_leases_key, host_label
from streamflow.name_lease import parse_holder
from streamflow.testing import fast_settings, serving, wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
HOST = host_label()
LEASES = consumer_leases_key("jobs", "g")
#: Holder JSON of a worker on another machine: this process cannot judge whether it lives.
FOREIGN = json.dumps({"host": "elsewhere", "pid": 1, "boot": "another-boot", "pidns": "pid:[1]",
                      "start": 1})


async def _publish(client: Any, n: int, stream: str = "jobs") -> list[str]:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("XADD", stream, "*", "i", i)
    return [r.decode() for r in await pipe.execute()]


async def _foreign_lease(client: Any, name: str, ttl_ms: int, replace: bytes = b"") -> bytes:
    """Store a lease on ``name`` as a worker on another machine would; return its value."""
    reply = await client.eval(scripts.NAME_TAKE, 1, LEASES, name, "f0f0", FOREIGN, ttl_ms, replace)
    assert int(reply[0]) == 1, reply
    return bytes(await client.hget(LEASES, name))


def _app(url: str, seen: list[tuple[str, int]], *, block: anyio.Event | None = None) -> App:
    app = App(redis_url=url)

    @app.handler("jobs", group="g", start_id="0")
    async def work(msg: Message) -> None:
        seen.append((msg.id, msg.attempt))
        if block is not None and msg.attempt == 1:
            await block.wait()

    return app


async def test_restart_under_the_default_name_takes_back_its_pending_entries_at_once(
    any_redis_url: str,
) -> None:
    """A worker stopped with handlers cut off by the grace period comes back under the same
    default name ``<host>-0`` and runs its pending entries again within seconds, not after the
    30 s visibility timeout."""
    seen: list[tuple[str, int]] = []
    async with raw_client(any_redis_url) as client:
        ids = await _publish(client, 5)
        app = _app(any_redis_url, seen, block=anyio.Event())
        first = Worker(app, fast_settings(app, any_redis_url, visibility_timeout=30,
                                          grace_period=0.2), handle_signals=False)
        async with serving(first):
            await wait_until(lambda: len(seen) == 5, what="five handlers running")
        assert await pending_count(client, "jobs", "g") == 5  # cut off: still pending

        seen.clear()
        app2 = _app(any_redis_url, seen)
        second = Worker(app2, fast_settings(app2, any_redis_url, visibility_timeout=30),
                        handle_signals=False)
        t0 = time.monotonic()
        async with serving(second):
            await wait_until(lambda: len(seen) == 5, timeout=10, what="the pending entries again")
            took = time.monotonic() - t0
    assert first.name == second.name == f"{HOST}-0"
    assert sorted(seen) == sorted((i, 2) for i in ids)
    assert took < 5, f"took {took:.1f}s: the own pending entries must not wait for reclaiming"


async def test_restart_after_kill9_takes_the_dead_process_name_at_once(
    redis_url: str, tmp_path: Path
) -> None:
    """After SIGKILL of a ``streamflow run`` worker (its corpse not even reaped yet), a worker
    started on the same host finds the dead process's lease still unexpired, proves the process
    gone, takes its name and runs its entries as attempt 2 within seconds (visibility timeout
    30 s)."""
    async with raw_client(redis_url) as client:
        ids = await _publish(client, 30)
        env = {**os.environ, "STREAMFLOW_BLOCK_MS": "100", "FAILAPP_DELAY": "2",
               "FAILAPP_STREAM": "jobs", "PYTHONPATH": str(ROOT)}
        log = (tmp_path / "worker.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "run", "tests.failapps.killapp:app",
             "--redis-url", redis_url, "--visibility-timeout", "30", "--log-format", "json"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            async def running() -> bool:
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()
                return int(await client.llen("ledger:start")) >= 8
            await wait_until(running, timeout=20, what="the subprocess running 8 handlers")
            proc.send_signal(signal.SIGKILL)

            def zombie() -> bool:
                stat = Path(f"/proc/{proc.pid}/stat")
                return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
            await wait_until(zombie, what="the killed process to die")
            leases = consumer_leases_key("jobs", "kill-test")
            (dead_name,) = [k.decode() for k in await client.hkeys(leases)]
            assert dead_name == f"{HOST}-0"  # the lease outlived the process (ttl 15 s)
            orphans = [i.decode() for i in await client.lrange("ledger:start", 0, -1)]

            seen: list[tuple[str, int]] = []
            async with App(redis_url=redis_url) as app:

                @app.handler("jobs", group="kill-test", start_id="0")
                async def work(msg: Message) -> None:
                    seen.append((msg.id, msg.attempt))

                w = Worker(app, fast_settings(app, redis_url, visibility_timeout=30),
                           handle_signals=False)
                t0 = time.monotonic()
                async with serving(w):
                    await wait_until(lambda: {i for i, _ in seen} >= set(orphans), timeout=10,
                                what="the dead process's entries")
                    took = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            log.close()
    assert w.name == dead_name
    attempts = dict(seen)
    assert all(attempts[i] == 2 for i in orphans)
    assert set(attempts) <= set(ids)
    assert took < 5, f"took {took:.1f}s"


async def test_workers_started_together_on_one_host_get_distinct_slot_names(
    any_redis_url: str,
) -> None:
    """Three workers started at once on one host take slots 0, 1 and 2, each holding its own
    live lease."""
    seen: list[tuple[str, int]] = []
    apps = [_app(any_redis_url, seen) for _ in range(3)]
    workers = [Worker(a, fast_settings(a, any_redis_url), handle_signals=False) for a in apps]
    async with raw_client(any_redis_url) as client, serving(*workers):
        leases = {k.decode(): parse_holder(v) for k, v in (await client.hgetall(LEASES)).items()}
    names = sorted(w.name for w in workers)
    assert names == [f"{HOST}-0", f"{HOST}-1", f"{HOST}-2"]
    assert sorted(leases) == names
    assert all(h is not None and h.pid == os.getpid() for h in leases.values())


async def test_a_fixed_name_held_by_a_live_worker_is_refused(redis_url: str) -> None:
    """A second worker started with the consumer name a live worker holds stops at start-up with
    ConsumerNameInUse naming the name and the live holder; the first keeps its lease."""
    seen: list[tuple[str, int]] = []
    app1, app2 = _app(redis_url, seen), _app(redis_url, seen)
    first = Worker(app1, fast_settings(app1, redis_url, consumer_name="fixed"),
                   handle_signals=False)
    second = Worker(app2, fast_settings(app2, redis_url, consumer_name="fixed"),
                    handle_signals=False)
    async with raw_client(redis_url) as client, serving(first):
        with anyio.fail_after(5), pytest.raises(ConsumerNameInUse) as info:
            await second.serve()
        holder = parse_holder(await client.hget(LEASES, "fixed"))
    message = str(info.value)
    assert "'fixed'" in message and "another live process" in message
    assert f"pid {os.getpid()}" in message
    assert not second.ready.is_set()
    assert holder is not None and first._identity is not None
    assert holder.token == first._identity.token


async def test_cli_worker_with_a_name_a_live_process_holds_exits_with_one_line(
    redis_url: str, tmp_path: Path
) -> None:
    """``streamflow run --consumer-name fixed`` while another live process runs as ``fixed``
    exits 2 with one stderr line saying another live process holds the name."""
    (tmp_path / "nameapp.py").write_text(
        "from streamflow import App\napp = App()\n\n"
        "@app.handler('jobs', group='g')\nasync def handle(msg):\n    pass\n"
    )
    seen: list[tuple[str, int]] = []
    app = _app(redis_url, seen)
    w = Worker(app, fast_settings(app, redis_url, consumer_name="fixed"), handle_signals=False)
    async with serving(w):
        with anyio.fail_after(30):
            proc = await anyio.run_process(
                [sys.executable, "-m", "streamflow", "run", "nameapp:app", "--consumer-name",
                 "fixed", "--redis-url", redis_url, "--log-format", "json", "--log-level", "error"],
                cwd=tmp_path, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
    stderr = proc.stderr.decode()
    assert proc.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "consumer name 'fixed' is in use: another live process holds its lease" in lines[0]


async def test_a_fixed_name_of_a_foreign_holder_that_renews_is_refused(redis_url: str) -> None:
    """A fixed name leased by a process on another machine (which this one cannot judge) is
    refused once that holder is seen renewing its lease."""
    seen: list[tuple[str, int]] = []
    app = _app(redis_url, seen)
    w = Worker(app, fast_settings(app, redis_url, consumer_name="fixed"), handle_signals=False)
    w.lease_ttl = 1.0
    async with raw_client(redis_url) as client:
        await _foreign_lease(client, "fixed", 1000)

        async def renew() -> None:
            while True:
                await anyio.sleep(0.2)
                await client.eval(scripts.NAME_RENEW, 1, LEASES, "fixed", "f0f0", FOREIGN, 1000)

        async with anyio.create_task_group() as tg:
            tg.start_soon(renew)
            with anyio.fail_after(5), pytest.raises(ConsumerNameInUse) as info:
                await w.serve()
            tg.cancel_scope.cancel()
    assert "pid 1 on elsewhere" in str(info.value)


async def test_a_fixed_name_of_a_foreign_holder_that_stopped_renewing_is_waited_out(
    redis_url: str,
) -> None:
    """A fixed name leased by a process on another machine that no longer renews is taken once
    its lease expires, and the worker runs under it."""
    seen: list[tuple[str, int]] = []
    app = _app(redis_url, seen)
    w = Worker(app, fast_settings(app, redis_url, consumer_name="fixed"), handle_signals=False)
    async with raw_client(redis_url) as client:
        await _foreign_lease(client, "fixed", 1500)
        t0 = time.monotonic()
        with capture_logs() as logs:
            async with serving(w):
                waited = time.monotonic() - t0
                holder = parse_holder(await client.hget(LEASES, "fixed"))
    assert 1.0 <= waited < 5, waited
    assert holder is not None and holder.pid == os.getpid()
    assert [e["event"] for e in logs if e["event"] == "consumer_name_held"] == ["consumer_name_held"]


async def test_the_lease_is_released_at_a_clean_shutdown(any_redis_url: str) -> None:
    """A serving worker's lease is stored under its name in its group's lease hash, and is gone
    once the worker stopped cleanly."""
    seen: list[tuple[str, int]] = []
    app = _app(any_redis_url, seen)
    w = Worker(app, fast_settings(app, any_redis_url), handle_signals=False)
    async with raw_client(any_redis_url) as client:
        async with serving(w):
            while_serving = parse_holder(await client.hget(LEASES, w.name))
        after = await client.exists(LEASES)
    assert while_serving is not None and w._identity is not None
    assert while_serving.token == w._identity.token
    assert after == 0


async def test_stopped_consumers_pending_entries_are_logged_at_start(redis_url: str) -> None:
    """At start-up the worker logs, per group, the stopped consumers that hold pending entries,
    how many, and in how many seconds they will be reclaimed."""
    async with raw_client(redis_url) as client:
        await client.execute_command("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        await _publish(client, 3)
        await client.execute_command("XREADGROUP", "GROUP", "g", "old-worker", "COUNT", 3,
                                     "STREAMS", "jobs", ">")
        await anyio.sleep(0.5)
        seen: list[tuple[str, int]] = []
        app = _app(redis_url, seen)
        w = Worker(app, fast_settings(app, redis_url, visibility_timeout=30), handle_signals=False)
        with capture_logs() as logs:
            async with serving(w):
                pass
    (event,) = [e for e in logs if e["event"] == "stopped_consumers_pending"]
    assert event["stream"] == "jobs" and event["group"] == "g"
    assert event["consumers"] == ["old-worker"] and event["entries"] == 3
    assert event["visibility_timeout"] == 30
    assert 28 <= event["reclaim_in_s"] <= 29.6 and event["idle_s"] >= 0.4


async def test_the_lease_is_taken_again_after_an_outage_longer_than_its_ttl(
    redis_server: ServerProcess, redis_url: str
) -> None:
    """When the server is unreachable for longer than the lease's ttl, the worker logs the
    expiry, renews the lease as its own once the server answers, and keeps working."""
    proxy = ChaosProxy(redis_server.port).start()
    seen: list[tuple[str, int]] = []
    app = _app(proxy.url, seen)
    w = Worker(app, fast_settings(app, proxy.url, socket_timeout=1.0, consumer_name="fixed"),
               handle_signals=False)
    w.lease_ttl = 1.0
    try:
        async with raw_client(redis_url) as client:
            with capture_logs() as logs:
                async with serving(w):
                    proxy.blackhole()
                    await anyio.sleep(2.0)
                    proxy.heal()
                    await wait_until(lambda: any(e["event"] == "consumer_lease_recovered" for e in logs),
                                timeout=10, what="the lease renewed after the outage")
                    holder = parse_holder(await client.hget(LEASES, "fixed"))
                    await _publish(client, 1)
                    await wait_until(lambda: len(seen) == 1, what="an entry handled after the outage")
    finally:
        proxy.stop()
    events = [e["event"] for e in logs if e["event"].startswith("consumer_lease")]
    assert events[:2] == ["consumer_lease_renew_failed", "consumer_lease_expired"], events
    assert "consumer_lease_recovered" in events and "consumer_lease_lost" not in events
    assert holder is not None and w._identity is not None and holder.token == w._identity.token


async def test_a_name_taken_over_during_an_outage_stops_the_worker(
    redis_server: ServerProcess, redis_url: str
) -> None:
    """If another process took the name while the worker could not renew its lease, the worker
    stops gracefully once the server answers and serve() raises ConsumerNameInUse; the new
    holder keeps the name."""
    proxy = ChaosProxy(redis_server.port).start()
    seen: list[tuple[str, int]] = []
    app = _app(proxy.url, seen)
    w = Worker(app, fast_settings(app, proxy.url, socket_timeout=1.0, consumer_name="fixed"),
               handle_signals=False)
    w.lease_ttl = 1.0
    errors: list[BaseException] = []

    async def serve() -> None:
        try:
            await w.serve()
        except ConsumerNameInUse as exc:
            errors.append(exc)

    try:
        async with raw_client(redis_url) as client:
            with capture_logs() as logs, anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(serve)
                    await w.ready.wait()
                    proxy.blackhole()
                    await anyio.sleep(1.5)  # the worker's lease expired
                    ours = bytes(await client.hget(LEASES, "fixed"))
                    theirs = await _foreign_lease(client, "fixed", 60_000, replace=ours)
                    proxy.heal()
                    await wait_until(lambda: errors, timeout=15, what="serve() to raise")
            left = await client.hget(LEASES, "fixed")
    finally:
        proxy.stop()
    assert "taken over by another process (pid 1 on elsewhere)" in str(errors[0])
    assert w.exit_reason == "consumer_lease_lost"
    assert [e for e in logs if e["event"] == "consumer_lease_lost"]
    assert left == theirs


async def test_worker_slot_from_the_environment_fixes_the_default_name(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``STREAMFLOW_WORKER_SLOT=3`` (how a supervisor passes each child its slot) makes the worker
    ``<host>-3`` even though lower slots are free; combined with a consumer name it is refused."""
    monkeypatch.setenv("STREAMFLOW_WORKER_SLOT", "3")
    seen: list[tuple[str, int]] = []
    app = _app(redis_url, seen)
    w = Worker(app, fast_settings(app, redis_url), handle_signals=False)
    async with raw_client(redis_url) as client, serving(w):
        names = [k.decode() for k in await client.hkeys(LEASES)]
    assert w.name == f"{HOST}-3" and names == [w.name]
    with pytest.raises(ConfigError) as info:
        fast_settings(app, redis_url, consumer_name="fixed")
    assert info.value.setting == "worker_slot"
