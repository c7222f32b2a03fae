"""Worker settings: defaults, ``STREAMFLOW_*`` environment variables and overrides, validated early."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError

__all__ = [
    "DEFAULT_REDIS_URL", "LOOPS", "OTHER_ENV_VARS", "Settings", "env_var", "unknown_env_vars",
    "use_uvloop", "uvloop_available", "validate_name",
]

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
ENV_PREFIX = "STREAMFLOW_"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-{}/@]+$")


def validate_name(kind: str, name: str) -> str:
    """Check a stream, group or consumer name: 1-200 printable chars without spaces or glob chars."""
    if not isinstance(name, str) or not name:
        raise ConfigError(kind, f"must be a non-empty string, got {name!r}")
    if len(name) > 200:
        raise ConfigError(kind, f"{name[:40]!r}... is longer than 200 characters")
    if not _NAME_RE.match(name):
        raise ConfigError(
            kind,
            f"{name!r} may only contain letters, digits and _ . : - {{ }} / @ "
            "(no spaces, quotes or glob characters)",
        )
    return name


@dataclass(frozen=True, repr=False)
class Settings:
    """Process-wide worker settings. Each can be set by ``STREAMFLOW_<NAME>`` or an override."""

    redis_url: str = DEFAULT_REDIS_URL
    """Server URL: ``redis://``, ``rediss://``, ``unix://`` or ``embedded://``."""
    concurrency: int | None = None
    """When set, overrides every handler's own ``concurrency``."""
    log_level: str = "info"
    log_format: str = "auto"
    """``console`` (human), ``json`` (machines) or ``auto`` (console on a TTY)."""
    grace_period: float = 30.0
    """Seconds in-flight handlers get to finish after SIGTERM/SIGINT."""
    block_ms: int = 1000
    """How long one XREADGROUP waits for new entries."""
    batch_size: int = 1000
    """Most entries fetched by one XREADGROUP (also capped by free handler slots)."""
    readers: int = 2
    """Read loops per handler (each with its own connection): while the handlers work through
    one batch, the next is already on its way (two did ~1.3x the throughput of one)."""
    ack_interval: float = 0.005
    """Longest an ack waits before its batch is flushed (seconds)."""
    ack_batch: int = 500
    """An ack batch is flushed once it holds this many ids."""
    visibility_timeout: float = 60.0
    """Pending entries idle this long belong to a dead consumer and are reclaimed."""
    reclaim_interval: float = 1.0
    """How often the reclaimer looks for retries that are due and for dead consumers' work."""
    dead_consumer_after: float = 3600.0
    """Consumers idle this long with no pending entries are removed from their group."""
    consumer_name: str | None = None
    """Fixed consumer name; default ``<host>-<slot>``, the lowest slot free on this host."""
    max_payload_bytes: int = 1 << 20
    """Largest payload accepted on publish and on consume (bigger ones are dead-lettered)."""
    socket_timeout: float = 10.0
    """Seconds a command may wait for its reply (BLOCK time is added for reads)."""
    connect_timeout: float = 5.0
    loop: str = "auto"
    """Event loop of ``streamflow run``: ``uvloop``, ``asyncio``, or ``auto`` (uvloop when installed)."""
    worker_slot: int | None = None
    """Fixed slot of the default consumer name ``<host>-<slot>`` (e.g. given by a supervisor)."""
    metrics_port: int | None = None
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on this TCP port (0: any free port; off
    when unset). Process ``i`` of a supervisor's children (``STREAMFLOW_PROCESS_INDEX=i``)
    listens on ``metrics_port + i``. Needs ``pip install 'streamflow-redis[metrics]'``."""
    metrics_host: str = "0.0.0.0"
    """Address the metrics server binds: every interface by default, so that an orchestrator's
    probes and Prometheus reach it; ``127.0.0.1`` keeps it on the host."""
    metrics_interval: float = 5.0
    """Seconds between two polls of the groups' state (lag, pending, dead letters, job counts)
    and of Redis's reachability for ``/readyz``."""

    def __post_init__(self) -> None:
        _check(self)

    @classmethod
    def load(
        cls, overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings from defaults, then ``STREAMFLOW_*`` env vars, then ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}  # setting -> "STREAMFLOW_X=raw" for values from env
        for f in fields(cls):
            var = env_var(f.name)
            raw = env.get(var)
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw, var)
                sources[f.name] = f"{var}={raw}"
        for key, value in (overrides or {}).items():
            if value is None:
                continue
            if key not in {f.name for f in fields(cls)}:
                raise ConfigError(key, "unknown setting")
            values[key] = value
            sources.pop(key, None)
        try:
            return cls(**values)
        except ConfigError as exc:
            source = sources.get(exc.setting)
            if source is None or exc.source is not None:
                raise
            # Say where the bad value came from: the variable the user set, as they wrote it.
            raise ConfigError(exc.setting, exc.problem, source=source) from None

    def __repr__(self) -> str:
        from .connection import redact_url

        body = ", ".join(
            f"{f.name}={redact_url(v) if isinstance(v, str) else v!r}"
            if f.name == "redis_url" else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
            for v in [getattr(self, f.name)]
        )
        return f"Settings({body})"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _parse(f: dataclasses.Field[Any], raw: str, source: str) -> Any:
    kind = str(f.type)
    if kind.startswith("int"):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(source, f"{raw!r} is not a whole number") from None
    if kind.startswith("float"):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(source, f"{raw!r} is not a number") from None
    return raw


#: ``STREAMFLOW_*`` variables streamflow (or its test suite) reads that are not settings.
OTHER_ENV_VARS = frozenset({
    "STREAMFLOW_SERVER_BINARY",  # which server binary embedded:// runs (embedded/binaries.py)
    "STREAMFLOW_CHAOS_FULL",  # full-size chaos tests (tests/chaos)
    "STREAMFLOW_CHAOS_RESULTS",  # where chaos results are written (tests/chaos)
    "STREAMFLOW_PROCESS_INDEX",  # set by `run --processes N` for each worker: 0 .. N-1
    "STREAMFLOW_PROCESSES",  # set by `run --processes N` for each worker: N
    "STREAMFLOW_SUPERVISOR_FD",  # set by `run --processes N`: the start-up report pipe
})


def env_var(name: str) -> str:
    """The environment variable of setting ``name``: ``STREAMFLOW_<NAME>``."""
    return ENV_PREFIX + name.upper()


def unknown_env_vars(env: Mapping[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``STREAMFLOW_*`` variables of ``env`` that streamflow does not read (sorted), each with the
    closest variable it does read (None when nothing is close): a misspelt concurrency
    variable comes with ``STREAMFLOW_CONCURRENCY``."""
    env = os.environ if env is None else env
    known = sorted({env_var(f.name) for f in fields(Settings)} | OTHER_ENV_VARS)
    suffixes = [name.removeprefix(ENV_PREFIX) for name in known]
    found: list[tuple[str, str | None]] = []
    for name in sorted(env):
        if name.startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.6)
            found.append((name, ENV_PREFIX + close[0] if close else None))
    return found


def _check(s: Settings) -> None:
    def positive(
        name: str, value: float, *, allow_zero: bool = False, whole: bool = False
    ) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(name, f"must be a finite number, got {value!r}")
        if whole and not isinstance(value, int):
            raise ConfigError(name, f"must be a whole number, got {value!r}")
        if value < 0 or (value == 0 and not allow_zero):
            raise ConfigError(name, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")

    from .connection import check_url

    check_url(s.redis_url)
    if s.concurrency is not None:
        positive("concurrency", s.concurrency, whole=True)
    levels = {"debug", "info", "warning", "error", "critical"}
    if not isinstance(s.log_level, str) or s.log_level.lower() not in levels:
        raise ConfigError("log_level", f"{s.log_level!r} is not one of debug, info, warning, error")
    if not isinstance(s.log_format, str) or s.log_format not in {"auto", "console", "json"}:
        raise ConfigError("log_format", f"{s.log_format!r} is not one of auto, console, json")
    positive("grace_period", s.grace_period, allow_zero=True)
    positive("block_ms", s.block_ms, whole=True)
    positive("batch_size", s.batch_size, whole=True)
    positive("readers", s.readers, whole=True)
    positive("ack_interval", s.ack_interval)
    positive("ack_batch", s.ack_batch, whole=True)
    positive("visibility_timeout", s.visibility_timeout)
    positive("reclaim_interval", s.reclaim_interval)
    positive("dead_consumer_after", s.dead_consumer_after)
    positive("max_payload_bytes", s.max_payload_bytes, whole=True)
    positive("socket_timeout", s.socket_timeout)
    positive("connect_timeout", s.connect_timeout)
    if s.reclaim_interval >= s.visibility_timeout:
        # Blame the one the user changed: a short visibility_timeout is the usual mistake.
        defaults = {f.name: f.default for f in fields(s)}
        vis, reclaim = s.visibility_timeout, s.reclaim_interval
        vis_given = vis != defaults["visibility_timeout"]
        if vis_given and reclaim == defaults["reclaim_interval"]:
            raise ConfigError(
                "visibility_timeout",
                f"must be longer than reclaim_interval (default {reclaim} s), got {vis}",
            )
        raise ConfigError(
            "reclaim_interval",
            f"must be shorter than visibility_timeout ({'' if vis_given else 'default '}"
            f"{vis} s), got {reclaim}",
        )
    if s.consumer_name is not None:
        validate_name("consumer_name", s.consumer_name)
    if s.worker_slot is not None:
        positive("worker_slot", s.worker_slot, allow_zero=True, whole=True)
        if s.consumer_name is not None:
            raise ConfigError("worker_slot", "give consumer_name or worker_slot, not both")
    if s.metrics_port is not None:
        port = s.metrics_port
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("metrics_port", f"must be a whole number from 0 to 65535, got {port!r}")
    if not isinstance(s.metrics_host, str) or not s.metrics_host or any(
            c.isspace() for c in s.metrics_host):
        raise ConfigError("metrics_host", f"must be a host name or IP address, got {s.metrics_host!r}")
    positive("metrics_interval", s.metrics_interval)
    if not isinstance(s.loop, str) or s.loop not in LOOPS:
        raise ConfigError("loop", f"{s.loop!r} is not one of {', '.join(LOOPS)}")
    if s.loop == "uvloop" and not uvloop_available():
        raise ConfigError(
            "loop", "uvloop is not installed (pip install uvloop; it is the extra streamflow-redis[uvloop])"
        )


#: Accepted values of the ``loop`` setting.
LOOPS = ("auto", "asyncio", "uvloop")


def uvloop_available() -> bool:
    """True when uvloop can be imported (it is not available on Windows)."""
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def use_uvloop(settings: Settings) -> bool:
    """Whether ``streamflow run`` starts its event loop on uvloop with these settings."""
    return settings.loop == "uvloop" or (settings.loop == "auto" and uvloop_available())


