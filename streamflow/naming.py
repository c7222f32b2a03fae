"""Names of handlers and their default groups, derived from the handler function."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["default_group", "handler_name"]

_GROUP_CLEAN_RE = re.compile(r"[^A-Za-z0-9_.:\-]")


def _module_name(func: Callable[..., Any]) -> str:
    """The module ``func`` belongs to, named as ``streamflow run`` would import it.

    For a module run as a script (``__main__``): its ``python -m`` name, else its file's
    path relative to the working directory (``python examples/app.py`` and
    ``streamflow run examples.app:app`` from the same directory agree), else the file's
    stem.
    """
    module = getattr(func, "__module__", None) or "__main__"
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        name: str = spec.name
        return name[: -len(".__main__")] if name.endswith(".__main__") else name
    path = getattr(main, "__file__", None)
    if not path:
        return module
    stem = os.path.splitext(os.path.abspath(path))[0]
    relative = os.path.relpath(stem, os.getcwd())
    if relative.startswith(os.pardir):
        return str(os.path.basename(stem))
    return str(relative).replace(os.sep, ".")


def handler_name(func: Callable[..., Any]) -> str:
    """``module.qualname`` of a handler (``__main__`` resolved as :func:`_module_name` does)."""
    return f"{_module_name(func)}.{getattr(func, '__qualname__', repr(func))}"


def default_group(func: Callable[..., Any]) -> str:
    """The default group of a handler: :func:`handler_name` with characters Redis names
    may not hold (``<locals>``'s brackets...) replaced by ``_``, at most 200 characters."""
    name = _GROUP_CLEAN_RE.sub("_", handler_name(func))
    return name if len(name) <= 200 else name[-200:]
