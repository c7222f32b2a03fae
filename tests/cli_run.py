"""Running ``python -m streamflow`` from tests: a subprocess with no STREAMFLOW_ variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parents[1]


async def sf(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m streamflow ARGS --redis-url URL`` and capture its output as text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    proc = await anyio.run_process([sys.executable, "-m", "streamflow", *args, "--redis-url", url],
                                   check=False, cwd=ROOT, env=env)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


async def sf_json(url: str, *args: str) -> Any:
    """``sf(... --json)`` as a document (the command must succeed)."""
    result = await sf(url, *args, "--json")
    assert result.returncode == 0, (args, result.stderr)
    return json.loads(result.stdout)
