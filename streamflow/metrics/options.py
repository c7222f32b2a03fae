"""What the metrics exporter needs before it starts: prometheus-client, and its port.

:func:`check_before_start` runs when a worker starts, before it connects or runs the
app's start-up hooks: a missing extra, a port out of range or already taken stops the
worker with one line naming the setting (and a supervisor's child fails its start-up,
instead of being restarted over and over). The exporter checks again when it starts.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Mapping

from ..config import Settings
from ..errors import ConfigError

__all__ = ["PROCESS_INDEX_VAR", "check_before_start", "metrics_port_for", "require_prometheus_client"]

#: Set by a supervisor for each of its children (``0`` .. ``STREAMFLOW_PROCESSES - 1``).
PROCESS_INDEX_VAR = "STREAMFLOW_PROCESS_INDEX"

INSTALL_HINT = "pip install 'streamflow-redis[metrics]'"


def require_prometheus_client() -> None:
    """Raise :class:`ConfigError` (naming ``metrics_port``) unless prometheus-client imports."""
    try:
        importlib.import_module("prometheus_client")
    except ImportError as exc:
        raise ConfigError(
            "metrics_port",
            f"serving metrics needs the prometheus-client package, which cannot be imported "
            f"({exc}); install it with: {INSTALL_HINT}",
        ) from None


def metrics_port_for(settings: Settings, env: Mapping[str, str] | None = None) -> int:
    """The port this process listens on: ``metrics_port`` plus its process index, if any.

    A supervisor's child ``i`` (``STREAMFLOW_PROCESS_INDEX=i``) takes ``metrics_port + i``,
    so each child's counters are reachable on a port of its own; port 0 (any free port)
    stays 0.
    """
    port = settings.metrics_port
    if port is None:
        raise ConfigError("metrics_port", "is not set")
    raw = (os.environ if env is None else env).get(PROCESS_INDEX_VAR, "").strip()
    if not raw:
        return port
    try:
        index = int(raw)
    except ValueError:
        raise ConfigError(PROCESS_INDEX_VAR, f"{raw!r} is not a whole number") from None
    if index < 0:
        raise ConfigError(PROCESS_INDEX_VAR, f"must be >= 0, got {index}")
    if port == 0:
        return 0
    if port + index > 65535:
        raise ConfigError("metrics_port", f"{port} + process index {index} = {port + index} "
                                          "is above 65535; choose a lower metrics_port")
    return port + index


def check_before_start(settings: Settings, env: Mapping[str, str] | None = None) -> int:
    """Check prometheus-client, this process's port and that it can be bound; return the port.

    The bind is a probe (the socket is closed at once; the exporter binds again later), so a
    port another process takes in between still fails later, with the same error.
    """
    require_prometheus_client()
    port = metrics_port_for(settings, env)
    if port:
        try:
            infos = socket.getaddrinfo(settings.metrics_host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            for family, kind, proto, _, address in infos[:1]:
                with socket.socket(family, kind, proto) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(address)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise ConfigError("metrics_port", f"cannot listen on {settings.metrics_host}:{port}: "
                                              f"{reason}") from None
    return port
