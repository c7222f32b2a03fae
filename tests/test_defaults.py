"""Safe defaults: where a new group starts, and how default group names are formed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from streamflow import App, Message
from streamflow.app import default_group
from streamflow.testing import running_worker, wait_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]



async def test_entries_written_before_the_first_worker_are_handled(any_redis_url: str) -> None:
    """With the default start_id, a new group starts at the beginning of the stream: entries a
    producer wrote before any worker ran are all handled, and group creation logs how many."""
    producer = App(any_redis_url)
    ids = await producer.publish_many("tasks", range(7))
    await producer.aclose()

    app = App(any_redis_url)
    seen: list[str] = []

    @app.handler("tasks", group="late")
    async def work(msg: Message) -> None:
        seen.append(msg.id)

    with capture_logs() as logs:
        async with running_worker(app, any_redis_url):
            await wait_until(lambda: len(seen) == 7, what="the 7 entries written before the start")
    assert sorted(seen) == sorted(ids)
    created = [e for e in logs if e["event"] == "group_created"]
    assert created and created[0]["start_id"] == "0"
    assert created[0]["entries_to_read"] in (7, None)  # None: a server without XINFO lag


async def test_explicit_dollar_start_skips_what_was_there(redis_url: str) -> None:
    """start_id="$" stays available for "only new events": earlier entries are not handled."""
    producer = App(redis_url)
    await producer.publish_many("events", range(5))
    await producer.aclose()
    app = App(redis_url)
    seen: list[object] = []

    @app.handler("events", group="live", start_id="$")
    async def work(msg: Message) -> None:
        seen.append(msg.payload)

    async with running_worker(app, redis_url) as worker:
        await app.publish("events", "new")
        await wait_until(lambda: worker.stats().handled == 1, what="the new entry")
    assert seen == ["new"]


def _module(name: str, source: str) -> types.ModuleType:
    module = types.ModuleType(name)
    exec(compile(textwrap.dedent(source), f"{name}.py", "exec"), module.__dict__)
    return module


async def test_two_services_with_the_same_handler_name_do_not_share_a_group(redis_url: str) -> None:
    """Two modules that each define `async def handle` on `orders` get different default groups,
    so each service handles every entry instead of splitting the stream."""
    source = """
        from streamflow import App, Message
        app = App()
        seen = []

        @app.handler("orders")
        async def handle(msg: Message) -> None:
            seen.append(msg.id)
    """
    billing = _module("billing_service", source)
    email = _module("email_service", source)
    assert billing.app.handlers[0].group == "billing_service.handle"
    assert email.app.handlers[0].group == "email_service.handle"
    async with running_worker(billing.app, redis_url), running_worker(email.app, redis_url):
        ids = await billing.app.publish_many("orders", range(10))
        await wait_until(lambda: len(billing.seen) == 10 and len(email.seen) == 10, what="both services")
    assert sorted(billing.seen) == sorted(email.seen) == sorted(ids)


def test_default_group_is_the_same_run_as_script_module_or_import(tmp_path: Path) -> None:
    """The default group of a handler is the same whether its module runs as a script, with
    python -m, or is imported (as streamflow run imports it)."""
    pkg = tmp_path / "svc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "app.py").write_text(textwrap.dedent("""
        from streamflow import App, Message
        app = App()

        @app.handler("orders")
        async def handle(msg: Message) -> None:
            pass

        if __name__ == "__main__":
            print(app.handlers[0].group, app.handlers[0].name)
    """))
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}

    def run(*args: str) -> str:
        out = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, check=True,
                             capture_output=True, text=True, timeout=60)
        return out.stdout.strip()

    as_script = run("svc/app.py")
    as_module = run("-m", "svc.app")
    imported = run("-c", "import svc.app as m; h = m.app.handlers[0]; print(h.group, h.name)")
    assert as_script == as_module == imported == "svc.app.handle svc.app.handle"


def test_default_group_cleans_local_names() -> None:
    """Handlers defined inside functions get a valid group name (brackets replaced)."""

    async def inner(msg: Message) -> None:
        pass

    group = default_group(inner)
    assert group.endswith("test_default_group_cleans_local_names._locals_.inner")
