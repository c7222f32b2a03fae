"""The Python examples of docs/jobs.md run, against a private server.

An example is a ```python block preceded by a ``<!-- tested -->`` line; every Python block
of the page must be one, or be preceded by ``<!-- untested: why -->``. The code up to a line
starting with ``# with a worker running`` defines an ``App`` named ``app`` and its tasks; it
runs as a module of its own. The rest runs while a worker serves that app (top-level
``await`` allowed; without one it runs in a plain thread, as sync code in a web view
would). A block without that line only defines (its tasks are checked at definition).
Examples assert what they show, so a wrong page fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from streamflow import App
from streamflow.testing import running_worker

pytestmark = pytest.mark.anyio

PAGE = Path(__file__).resolve().parents[1] / "docs" / "jobs.md"
BLOCK_RE = re.compile(r"^(?P<marker><!-- (?:tested|untested:[^>]*) -->\n)?```python\n(?P<code>.*?)^```$",
                      re.MULTILINE | re.DOTALL)
WORKER_LINE = re.compile(r"^# with a worker running.*$", re.MULTILINE)


def _blocks() -> list[tuple[int, str]]:
    """(line number, code) of every tested block; fails on a Python block with no marker."""
    text = PAGE.read_text()
    out = []
    for m in BLOCK_RE.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        marker = m["marker"] or ""
        assert marker, f"docs/jobs.md:{line}: mark the block <!-- tested --> or <!-- untested: why -->"
        if "untested" not in marker:
            out.append((line, m["code"]))
    return out


BLOCKS = _blocks()


def test_the_page_has_its_examples() -> None:
    """Dropping the markers (or the examples) does not make this file pass vacuously."""
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize(("line", "code"), BLOCKS, ids=[f"line{n}" for n, _ in BLOCKS])
async def test_example(line: int, code: str, redis_url: str) -> None:
    name = f"docs_jobs_line{line}"
    parts = WORKER_LINE.split(code, maxsplit=1)
    setup = parts[0]
    module = types.ModuleType(name)
    module.__file__ = f"{PAGE}:{line}"
    sys.modules[name] = module
    try:
        # Line numbers of errors point into the page.
        exec(compile("\n" * (line - 1) + setup, str(PAGE), "exec"), module.__dict__)
        app = module.__dict__.get("app")
        assert isinstance(app, App), "an example defines an App named app"
        app.redis_url = redis_url
        if len(parts) == 1:
            await app.aclose()
            return
        offset = line - 1 + setup.count("\n")  # parts[1] starts at the end of the worker line
        usage = compile("\n" * offset + parts[1], str(PAGE), "exec",
                        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        async with running_worker(app, redis_url, timeout=60):
            with anyio.fail_after(45):
                if usage.co_flags & inspect.CO_COROUTINE:  # top-level await: on the loop
                    await eval(usage, module.__dict__)
                else:  # sync code: off the event loop, as in a web view
                    await anyio.to_thread.run_sync(exec, usage, module.__dict__)
    finally:
        sys.modules.pop(name, None)
