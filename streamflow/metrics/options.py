"""What the metrics exporter needs before it starts: prometheus-client, and its port.

Both are checked before anything connects (``streamflow run`` calls
:func:`require_prometheus_client`, and the exporter does again for a worker started
from code), so a missing extra or a port out of range stops the worker with one line
naming the setting.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping

from ..config import Settings
from ..errors import ConfigError

__all__ = ["PROCESS_INDEX_VAR", "metrics_port_for", "require_prometheus_client"]

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
