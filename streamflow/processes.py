"""What ``run --processes N`` and its worker processes agree on.

The plan of the children (:func:`plan_children`: index, slot or name, the variables each
gets), the command line they run (:func:`child_arguments`: ``run``'s, without
``--processes``) and the worker side of the start-up report (:func:`prepare_child`).
The supervisor itself is :mod:`streamflow.supervisor`.

Variables a worker process gets: ``STREAMFLOW_WORKER_SLOT=<base + i>`` (or
``STREAMFLOW_CONSUMER_NAME=<name>-<i>`` when the user fixed a name),
``STREAMFLOW_PROCESS_INDEX=i`` (0 .. N-1, e.g. for a port offset),
``STREAMFLOW_PROCESSES=N`` and ``STREAMFLOW_SUPERVISOR_FD`` (the report pipe; removed
from the environment by :func:`prepare_child`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import env_var, validate_name
from .errors import ConfigError
from .keys import host_label, slot_consumer_name

if TYPE_CHECKING:
    from .app import App
    from .config import Settings

__all__ = [
    "COUNT_ENV", "INDEX_ENV", "NAME_ENV", "READY_FD_ENV", "SLOT_ENV", "ChildPlan",
    "child_arguments", "plan_children", "prepare_child",
]

INDEX_ENV = "STREAMFLOW_PROCESS_INDEX"  # 0 .. N-1: which child this is (e.g. a port offset)
COUNT_ENV = "STREAMFLOW_PROCESSES"  # N
READY_FD_ENV = "STREAMFLOW_SUPERVISOR_FD"  # the pipe a child reports its start-up done on
SLOT_ENV = env_var("worker_slot")
NAME_ENV = env_var("consumer_name")


@dataclass(frozen=True)
class ChildPlan:
    """One child: its index, the consumer name it runs under, the variables it gets."""

    index: int
    consumer: str
    env: Mapping[str, str]


def plan_children(
    processes: int, consumer_name: str | None = None, env: Mapping[str, str] | None = None
) -> list[ChildPlan]:
    """The children of ``--processes processes``; ``consumer_name`` is ``--consumer-name``.

    A fixed name (the flag, else ``STREAMFLOW_CONSUMER_NAME``) ``NAME`` becomes ``NAME-<i>``:
    N processes cannot share one name, and the name stays as stable as the user made it
    (containers whose host name changes at every start fix the name for that reason).
    Otherwise child ``i`` gets slot ``base + i``, base being ``STREAMFLOW_WORKER_SLOT``
    (default 0). Raises :class:`ConfigError` for a bad slot, or for both a name and a slot.
    """
    env = os.environ if env is None else env
    source = "--consumer-name" if consumer_name else f"{NAME_ENV}={env.get(NAME_ENV)}"
    name = consumer_name or env.get(NAME_ENV) or None
    raw_slot = env.get(SLOT_ENV) or None
    if name and raw_slot:
        raise ConfigError("worker_slot", "give consumer_name or worker_slot, not both",
                          source=f"{SLOT_ENV}={raw_slot}")
    base = 0
    if raw_slot:
        try:
            base = int(raw_slot)
        except ValueError:
            raise ConfigError("worker_slot", f"{raw_slot!r} is not a whole number",
                              source=f"{SLOT_ENV}={raw_slot}") from None
        if base < 0:
            raise ConfigError("worker_slot", f"must be >= 0, got {base}",
                              source=f"{SLOT_ENV}={raw_slot}")
    if name:
        try:
            validate_name("consumer_name", f"{name}-{processes - 1}")
        except ConfigError as exc:
            raise ConfigError("consumer_name", exc.problem, source=source) from None
    host = host_label()
    plans = []
    for i in range(processes):
        extra = {INDEX_ENV: str(i), COUNT_ENV: str(processes)}
        if name:
            consumer = extra[NAME_ENV] = f"{name}-{i}"
        else:
            extra[SLOT_ENV] = str(base + i)
            consumer = slot_consumer_name(host, base + i)
        plans.append(ChildPlan(i, consumer, extra))
    return plans


def child_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, drop: Sequence[str] = ()
) -> list[str]:
    """The command line that gives ``parser`` the values of ``args`` back (but ``drop``).

    Built from the parser's actions, so every option of ``run`` reaches the children,
    those added later included; values given their default are left out.
    """
    positional: list[str] = []
    options: list[str] = []
    for action in parser._actions:
        if action.dest in drop or action.dest == "help" or not hasattr(args, action.dest):
            continue
        value = getattr(args, action.dest)
        if value is None or value == action.default:
            continue
        if not action.option_strings:
            positional += [str(v) for v in (value if isinstance(value, list) else [value])]
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            options.append(flag)
        elif isinstance(action, argparse._CountAction):
            options += [flag] * int(value)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                options += [flag, *map(str, item if isinstance(item, list) else [item])]
        elif type(action) is argparse._StoreAction:
            options += [flag, *map(str, value if isinstance(value, list) else [value])]
        else:
            raise TypeError(f"cannot pass {flag} ({type(action).__name__}) to worker processes")
    return positional + options


def prepare_child(
    app: App, settings: Settings, env: MutableMapping[str, str] | None = None
) -> None:
    """In a worker the supervisor started: refuse ``embedded://``, report start-up done.

    Does nothing in a process the supervisor did not start. The report is a byte on the
    supervisor's pipe, written by a start-up hook registered last (after the app's own),
    so everything that fails at start-up (settings, the app, the server, permissions,
    the consumer name, the app's hooks) fails before it.
    """
    env = os.environ if env is None else env
    count, raw_fd = env.get(COUNT_ENV), env.pop(READY_FD_ENV, None)
    if count and count.isdigit() and int(count) > 1 \
            and settings.redis_url.lower().startswith("embedded://"):
        raise ConfigError(
            "redis_url", "embedded:// starts a private server in each of the --processes "
            f"{count} worker processes, so they would not share their streams; give them "
            "one server (--redis-url)")
    if not raw_fd or not raw_fd.isdigit():
        return
    fd = int(raw_fd)
    try:
        os.set_inheritable(fd, False)  # not for the app's own subprocesses
    except OSError:  # not open: the variable came from elsewhere
        return

    async def started() -> None:
        try:
            os.write(fd, b"1")
        except OSError:
            pass
        finally:
            os.close(fd)

    app.on_startup(started)
