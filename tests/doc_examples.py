"""Running the Python examples of a docs page, so that a wrong page fails a test.

Every ```python block of a page is preceded by a marker line saying how it is checked:

``<!-- tested -->``
    An example of an app. The code up to a line starting with ``# with a worker running``
    defines an ``App`` named ``app`` (and its handlers or tasks); it runs as a module of its
    own (``docs_<page>_line<N>``). The rest runs while a worker serves that app
    (:func:`streamflow.testing.running_worker`, on a private server): top-level ``await``
    allowed, and there ``worker`` is that worker, so ``await wait_finished(worker, 3)``
    waits for three entries. Without any ``await`` it runs in a plain thread instead, as
    sync code in a web view would. An optional line starting with ``# once the worker has
    stopped`` begins a last part, run after the worker drained and stopped (shutdown hooks
    ran, ``worker.stats()`` is final). A block with neither line only defines (the
    decorators check their options). ``STREAMFLOW_REDIS_URL`` names the private server
    while the block runs, so ``App()`` and ``python -m streamflow ...`` subprocesses reach
    it as they would reach a deployment's server.
``<!-- tested: pytest -->``
    A test module, run by pytest in a subprocess (in a fresh directory, with the streamflow
    plugin and its fixtures as an app's own test suite gets them). Its file name is taken
    from a first line ``# test_name.py``, else ``test_<page>_line<N>.py``. Every test of it
    must pass (skips are allowed, at least one test must pass), and pytest must collect at
    least as many tests as the block defines.
``<!-- tested: module -->``
    A module the page's test modules import (``# name.py`` on its first line names it). It
    is written beside them; it passes when a test module importing it passed.
``<!-- untested: why -->``
    Not run; the reason is required.

A Python block without a marker fails the page. The pytest blocks of one page run in one
pytest session (started on the first of them), so their servers start once.

A test module applies this to its pages::

    BLOCKS = doc_examples.blocks(DOCS / "handlers.md", minimum=8)

    @pytest.mark.parametrize("block", BLOCKS, ids=doc_examples.ids(BLOCKS))
    async def test_example(block, redis_url, tmp_path_factory):
        await doc_examples.check(block, redis_url, tmp_path_factory)

Line numbers of errors point into the page: each code part is compiled (and each file
written) with the blank lines that put its first line where it is on the page.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from streamflow import App
from streamflow.testing import running_worker

__all__ = ["DOCS", "Block", "blocks", "check", "ids"]

DOCS = Path(__file__).resolve().parents[1] / "docs"

BLOCK_RE = re.compile(
    r"^(?:<!-- (?P<marker>[^>]*?) -->\n)?```python\n(?P<code>.*?)^```$", re.MULTILINE | re.DOTALL
)
WORKER_LINE = re.compile(r"^# with a worker running.*$", re.MULTILINE)
STOPPED_LINE = re.compile(r"^# once the worker has stopped.*$", re.MULTILINE)
FILE_LINE = re.compile(r"^# (?:[\w./-]*/)?(?P<name>\w+\.py)\b")
TEST_DEF = re.compile(r"^(?:async )?def test_\w+\(", re.MULTILINE)
KINDS = {"tested": "run", "tested: pytest": "pytest", "tested: module": "module"}

USAGE_TIMEOUT = 30.0  # seconds the part with a worker running may take
PYTEST_TIMEOUT = 120.0  # seconds a page's pytest session may take


@dataclass(frozen=True)
class Block:
    """One checked Python block of a page."""

    page: Path
    line: int  # page line of the block's first code line
    kind: str  # "run", "pytest" or "module"
    code: str

    @property
    def where(self) -> str:
        """``docs/handlers.md:42``."""
        return f"docs/{self.page.name}:{self.line}"

    @property
    def filename(self) -> str:
        """The file a pytest or module block is written to."""
        m = FILE_LINE.match(self.code)
        if m is not None:
            return m["name"]
        assert self.kind != "module", f"{self.where}: a module block starts with '# name.py'"
        return f"test_{self.page.stem}_line{self.line}.py"

    @property
    def module(self) -> str:
        return self.filename.removesuffix(".py")


def blocks(page: Path, *, minimum: int) -> list[Block]:
    """The checked blocks of ``page``, in page order.

    Fails on a Python block without a marker (or with an unknown one, or an untested one
    without a reason), and when fewer than ``minimum`` blocks are checked: dropping the
    markers, or the examples, does not make a page pass vacuously.
    """
    text = page.read_text()
    out: list[Block] = []
    for m in BLOCK_RE.finditer(text):
        line = text.count("\n", 0, m.start("code")) + 1
        where = f"docs/{page.name}:{line}"
        marker = (m["marker"] or "").strip()
        if marker.startswith("untested"):
            reason = marker.removeprefix("untested").lstrip(":").strip()
            assert reason, f"{where}: say why a block is untested: <!-- untested: why -->"
            continue
        assert marker in KINDS, (
            f"{where}: mark the block <!-- tested -->, <!-- tested: pytest -->, "
            f"<!-- tested: module --> or <!-- untested: why --> (found {marker!r})")
        out.append(Block(page, line, KINDS[marker], m["code"]))
    names = [b.filename for b in out if b.kind != "run"]
    assert len(names) == len(set(names)), f"docs/{page.name}: two blocks name one file: {names}"
    assert len(out) >= minimum, f"docs/{page.name}: {len(out)} tested examples, expected {minimum}+"
    return out


def ids(found: Sequence[Block]) -> list[str]:
    """Test ids: ``handlers.md:42``."""
    return [f"{b.page.name}:{b.line}" for b in found]


async def check(block: Block, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run ``block`` as its marker says (see the module docstring); fail if it fails."""
    if block.kind == "run":
        await run_example(block, redis_url)
    else:
        await anyio.to_thread.run_sync(_check_pytest, block, tmp_path_factory)


# -- <!-- tested -->: an app, a worker serving it ------------------------------------------


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _compile(code: str, block: Block, offset: int, *, awaits: bool = True) -> types.CodeType:
    """``code`` (which starts ``offset`` lines into the block) compiled with page line
    numbers; ``awaits``: top-level ``await`` allowed."""
    return compile("\n" * (block.line - 1 + offset) + code, str(block.page), "exec",
                   flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if awaits else 0)


async def _run_part(code: types.CodeType, namespace: dict[str, Any]) -> None:
    with anyio.fail_after(USAGE_TIMEOUT):
        if code.co_flags & inspect.CO_COROUTINE:  # top-level await: on the event loop
            await eval(code, namespace)
        else:  # sync code: off the event loop, as in a web view
            await anyio.to_thread.run_sync(exec, code, namespace)


async def run_example(block: Block, redis_url: str) -> None:
    """Define the block's app as a module, then run its usage while a worker serves it."""
    name = f"docs_{block.page.stem}_line{block.line}"
    setup, usage, after = block.code, None, None
    parts = WORKER_LINE.split(setup, maxsplit=1)
    if len(parts) == 2:
        setup, usage = parts
        later = STOPPED_LINE.split(usage, maxsplit=1)
        if len(later) == 2:
            usage, after = later
    module = types.ModuleType(name)
    module.__file__ = f"{block.page}:{block.line}"
    namespace = module.__dict__
    sys.modules[name] = module
    try:
        with _env("STREAMFLOW_REDIS_URL", redis_url):
            exec(_compile(setup, block, 0, awaits=False), namespace)
            app = namespace.get("app")
            assert isinstance(app, App), f"{block.where}: an example defines an App named app"
            app.redis_url = redis_url
            if usage is None:
                await app.aclose()
                return
            offset = setup.count("\n")  # the usage starts at the end of the worker line
            async with running_worker(app, redis_url, timeout=USAGE_TIMEOUT + 30) as worker:
                namespace["worker"] = worker
                await _run_part(_compile(usage, block, offset), namespace)
            if after is not None:
                await _run_part(_compile(after, block, offset + usage.count("\n")), namespace)
                await app.aclose()
    finally:
        sys.modules.pop(name, None)


# -- <!-- tested: pytest / module -->: an app's own test suite -----------------------------


@dataclass
class _Outcome:
    passed: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def cases(self) -> int:
        return self.passed + self.failed + self.skipped


@dataclass
class _Session:
    """One pytest run over a page's test modules: outcomes per module, and its output."""

    outcomes: dict[str, _Outcome]
    output: str
    returncode: int


_SESSIONS: dict[Path, _Session] = {}


def _session(page: Path, tmp_path_factory: pytest.TempPathFactory) -> _Session:
    """The page's pytest run, started the first time one of its blocks is checked."""
    if page not in _SESSIONS:
        found = [b for b in blocks(page, minimum=0) if b.kind in ("pytest", "module")]
        where = tmp_path_factory.mktemp(f"docs-{page.stem}")
        for b in found:
            (where / b.filename).write_text("\n" * (b.line - 1) + b.code)
        tests = [b.filename for b in found if b.kind == "pytest"]
        report = where / "report.xml"
        # no STREAMFLOW_* settings of this session (the server binary is not a setting)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("STREAMFLOW_") or k == "STREAMFLOW_SERVER_BINARY"}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", *tests],
            cwd=where, env=env, capture_output=True, text=True, timeout=PYTEST_TIMEOUT,
            check=False,
        )
        outcomes: dict[str, _Outcome] = {}
        if report.exists():
            for case in ET.parse(report).getroot().iter("testcase"):
                module = case.get("classname", "").split(".")[0]
                outcome = outcomes.setdefault(module, _Outcome())
                if case.find("failure") is not None or case.find("error") is not None:
                    outcome.failed += 1
                elif case.find("skipped") is not None:
                    outcome.skipped += 1
                else:
                    outcome.passed += 1
        _SESSIONS[page] = _Session(outcomes, done.stdout + done.stderr, done.returncode)
    return _SESSIONS[page]


def _check_pytest(block: Block, tmp_path_factory: pytest.TempPathFactory) -> None:
    session = _session(block.page, tmp_path_factory)
    if block.kind == "module":
        users = [b for b in blocks(block.page, minimum=0) if b.kind == "pytest"
                 and re.search(rf"^\s*(from {block.module} import|import {block.module}\b)",
                               b.code, re.MULTILINE)]
        assert users, f"{block.where}: no test module of the page imports {block.module}"
    else:
        users = [block]
    for b in users:
        outcome = session.outcomes.get(b.module, _Outcome())
        defined = len(TEST_DEF.findall(b.code))
        assert outcome.failed == 0 and outcome.passed >= 1 and outcome.cases >= max(defined, 1), (
            f"{b.where}: {b.filename}: {outcome} (defines {defined} tests); pytest said:\n"
            f"{session.output}")
