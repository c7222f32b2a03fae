"""The supervisor of ``streamflow run --processes N``: N worker processes, each on its own slot.

The supervisor is a plain synchronous loop: no event loop, no Redis connection, no
import of the application. It starts ``sys.executable -m streamflow run ...`` (the same
command line without ``--processes``) once per slot and waits on one selector for
signals (``signal.set_wakeup_fd``), for each child's start-up report and for the next
restart that is due:

* **Slots.** Child ``i`` (0 .. N-1) gets ``STREAMFLOW_WORKER_SLOT=<base + i>`` (base: the
  user's ``STREAMFLOW_WORKER_SLOT``, else 0), so it runs as ``<host>-<slot>`` and a
  restarted child takes its own pending entries back at once. A fixed consumer name
  ``NAME`` becomes ``NAME-<i>`` instead (:func:`plan_children`). Every child also gets
  ``STREAMFLOW_PROCESS_INDEX=i`` and ``STREAMFLOW_PROCESSES=N``.
* **Signals.** SIGTERM / SIGINT are forwarded to every child: the first starts their
  graceful drain, a second one (forwarded again) forces it, as for a single worker.
  Children run in their own process groups, so a Ctrl-C in a terminal reaches them once,
  through the supervisor, not twice (the second would force).
* **Restarts.** A child that exits while the supervisor is not stopping is started again
  under the same slot after :class:`Backoff` (0.5 s doubling to 30 s, reset once a child
  stayed up 30 s). A child that exits with status 2 (a configuration, app-loading or
  start-up error: what ``run`` exits with for a :class:`~streamflow.errors.StreamflowError`
  or a usage error) before it reported its start-up done would fail the same way again:
  the supervisor stops the others and exits 2. A child reports its start-up through a
  pipe (``STREAMFLOW_SUPERVISOR_FD``) from a last start-up hook (:func:`prepare_child`).
* **Orphans.** On Linux each child asks the kernel for SIGTERM when the supervisor dies
  (``prctl(PR_SET_PDEATHSIG)``), so a ``kill -9``-ed supervisor's children drain and exit.
* **Exit status.** 0 when every child's last exit was 0; 128 + the signal's number when a
  second signal forced the stop (130 for SIGINT, 143 for SIGTERM); 2 after a start-up
  failure of a child; 1 otherwise (a child that did not drain cleanly, or that was dead,
  waiting for its restart, when the stop began).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from .config import env_var
from .errors import ConfigError
from .processes import READY_FD_ENV, ChildPlan, child_arguments, plan_children

__all__ = ["STARTUP_FAILURE", "Backoff", "Supervisor", "supervise"]

log = structlog.get_logger("streamflow.supervisor")

#: Exit status of ``streamflow run`` for configuration, app-loading and start-up errors.
STARTUP_FAILURE = 2

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PR_SET_PDEATHSIG = 1


@dataclass
class Backoff:
    """Restart delays of one slot: ``first`` doubling up to ``most``; a child that stayed
    up ``stable_after`` seconds starts the sequence again."""

    first: float = 0.5
    most: float = 30.0
    stable_after: float = 30.0
    failures: int = 0  # deaths in a row, each within stable_after of its start

    def next_delay(self, uptime: float) -> float:
        """The delay before restarting a child that died after ``uptime`` seconds."""
        if uptime >= self.stable_after:
            self.failures = 0
        self.failures += 1
        return float(min(self.first * 2 ** (self.failures - 1), self.most))


def supervise(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``run --processes N`` (N > 1): supervise N workers; ``parser`` is ``run``'s."""
    from .logging import configure_logging

    if not hasattr(signal, "SIGCHLD"):
        raise ConfigError("--processes", "needs a POSIX system (Linux, macOS); run one "
                          "worker per process yourself here")
    if args.embedded:
        raise ConfigError("--processes", f"{args.processes} processes cannot share --embedded "
                          "(each would start its own private server); give --redis-url")
    plans = plan_children(args.processes, args.consumer_name)
    configure_logging(*_log_options(args.log_level, args.log_format))
    if not sys.platform.startswith("linux"):
        log.warning("supervisor_without_pdeathsig", platform=sys.platform,
                    hint="worker processes outlive a supervisor killed with SIGKILL here; "
                         "stop it with SIGTERM or SIGINT")
    command = child_arguments(parser, args, drop=("processes", "consumer_name"))
    return Supervisor(command, plans).run()


def _log_options(level: str | None, fmt: str | None) -> tuple[str, str]:
    """The supervisor's log level and format: the flags, else valid ``STREAMFLOW_LOG_*``
    values (a bad one is the workers' to report), else info and auto."""
    level = level or os.environ.get(env_var("log_level"), "").lower()
    fmt = fmt or os.environ.get(env_var("log_format"), "")
    return (level if level in {"debug", "info", "warning", "error", "critical"} else "info",
            fmt if fmt in {"auto", "console", "json"} else "auto")


def _pdeathsig(parent: int) -> Callable[[], None] | None:
    """A child's pre-exec step on Linux: SIGTERM when the supervisor dies (checked once
    after the call, for a supervisor that died before it)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def exit_description(status: int) -> dict[str, Any]:
    """Log fields of a child's exit status: ``exit_status`` or ``signal`` (its name)."""
    if status < 0:
        try:
            return {"signal": signal.Signals(-status).name}
        except ValueError:
            return {"signal": -status}
    return {"exit_status": status}


@dataclass
class _Child:
    plan: ChildPlan
    backoff: Backoff
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # monotonic time of the last start
    ready: bool = False  # the running process reported its start-up done
    ready_fd: int | None = None  # read end of its report pipe, until EOF
    restart_at: float | None = None  # when a dead child is due to start again
    last_status: int | None = None  # the last exit status (negative: killed by that signal)
    restarts: int = 0
    pid: int = 0


@dataclass
class Supervisor:
    """Runs ``command`` (``run``'s arguments, without ``--processes``) once per plan."""

    command: Sequence[str]
    plans: Sequence[ChildPlan]
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    backoff: Callable[[], Backoff] = Backoff
    children: list[_Child] = field(init=False)
    stopping: int = field(default=0, init=False)  # the signal that began the stop (0: none)
    forced: int = field(default=0, init=False)  # the signal that forced it (0: none)
    failed: int = field(default=0, init=False)  # STARTUP_FAILURE once a child failed so

    def __post_init__(self) -> None:
        self.children = [_Child(p, self.backoff()) for p in self.plans]
        self._selector = selectors.DefaultSelector()

    def run(self) -> int:
        """Start the children, supervise them until all exited; return the exit status."""
        log.info("supervisor_started", pid=os.getpid(), processes=len(self.children),
                 consumers=[c.plan.consumer for c in self.children])
        with self._signals() as wakeup:
            self._selector.register(wakeup, selectors.EVENT_READ, None)
            try:
                for child in self.children:
                    self._start(child)
                while not self._done():
                    self._step(wakeup)
            finally:
                self._abandon()
                self._selector.close()
        status = self._exit_status()
        log.info("supervisor_stopped", exit_status=status,
                 children={c.plan.index: c.last_status for c in self.children})
        return status

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """What a SIGTERM / SIGINT does: the first starts the drain, a second forces it."""
        if not self.stopping:
            self.stopping = signum
            log.info("supervisor_stopping", signal=signal.Signals(signum).name,
                     running=sum(1 for c in self.children if c.proc is not None))
        elif not self.forced and not self.failed:
            self.forced = signum
            log.warning("supervisor_force_stop", signal=signal.Signals(signum).name,
                        hint="forwarded again: the workers cancel running handlers")
        for child in self.children:
            child.restart_at = None
            if child.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signum)

    # -- the loop ---------------------------------------------------------------------

    def _done(self) -> bool:
        return all(c.proc is None for c in self.children) and (
            bool(self.stopping) or all(c.restart_at is None for c in self.children))

    def _step(self, wakeup: int) -> None:
        due = [c.restart_at for c in self.children if c.restart_at is not None]
        timeout = 1.0 if not due else max(0.0, min(1.0, min(due) - time.monotonic()))
        for key, _ in self._selector.select(timeout):
            if key.data is None:
                for signum in _read_all(wakeup):
                    if signum in _STOP_SIGNALS:
                        self.stop(signum)
            else:
                self._read_report(key.data)
        for child in self.children:
            if child.proc is not None and (status := child.proc.poll()) is not None:
                self._exited(child, status)
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and child.restart_at <= now and not self.stopping:
                child.restarts += 1
                self._start(child)

    def _start(self, child: _Child) -> None:
        env = dict(self.env)
        env.update(child.plan.env)
        read_fd, write_fd = os.pipe()
        env[READY_FD_ENV] = str(write_fd)
        flags: Any = getattr(subprocess, "_args_from_interpreter_flags", list)
        try:
            child.proc = subprocess.Popen(
                [sys.executable, *flags(), "-m", "streamflow", "run", *self.command],
                env=env, stdin=subprocess.DEVNULL, pass_fds=(write_fd,), process_group=0,
                preexec_fn=_pdeathsig(os.getpid()),  # noqa: PLW1509 (no threads here)
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._selector.register(read_fd, selectors.EVENT_READ, child)
        child.ready_fd, child.ready, child.restart_at = read_fd, False, None
        child.started, child.pid = time.monotonic(), child.proc.pid
        event = "worker_process_restarted" if child.restarts else "worker_process_started"
        log.info(event, slot=child.plan.index, consumer=child.plan.consumer, pid=child.pid,
                 **({"restarts": child.restarts} if child.restarts else {}))

    def _read_report(self, child: _Child, *, last: bool = False) -> None:
        """Read what the child wrote on its report pipe; close the pipe at EOF (or ``last``)."""
        fd = child.ready_fd
        if fd is None:
            return
        try:
            while os.read(fd, 64):
                if not child.ready:
                    child.ready = True
                    log.info("worker_process_ready", slot=child.plan.index, pid=child.pid,
                             startup_s=round(time.monotonic() - child.started, 3))
        except BlockingIOError:
            if not last:
                return
        except OSError:
            pass
        self._selector.unregister(fd)
        os.close(fd)
        child.ready_fd = None

    def _exited(self, child: _Child, status: int) -> None:
        self._read_report(child, last=True)  # a report written just before the exit counts
        child.proc, child.last_status = None, status
        uptime = round(time.monotonic() - child.started, 3)
        fields = {"slot": child.plan.index, "consumer": child.plan.consumer, "pid": child.pid,
                  **exit_description(status), "uptime_s": uptime}
        if self.stopping:
            (log.info if status == 0 else log.warning)("worker_process_exited", **fields)
        elif status == STARTUP_FAILURE and not child.ready:
            log.error("worker_process_failed_at_startup", **fields,
                      hint="its error is printed above; every restart would fail the same "
                           "way, so the supervisor stops the other workers and exits 2")
            self.failed = STARTUP_FAILURE
            self.stop(signal.SIGTERM)
        else:
            delay = child.backoff.next_delay(uptime)
            child.restart_at = time.monotonic() + delay
            log.warning("worker_process_died", **fields, restart_in=delay,
                        hint="restarted under the same slot: it takes its pending entries back")

    def _exit_status(self) -> int:
        if self.failed:
            return self.failed
        if self.forced:
            return 128 + self.forced
        return 0 if all(c.last_status == 0 for c in self.children) else 1

    def _abandon(self) -> None:
        """After an error of the supervisor itself: stop the children that still run."""
        alive = [c for c in self.children if c.proc is not None]
        for child in alive:
            assert child.proc is not None
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in alive:
            assert child.proc is not None
            child.last_status = child.proc.wait()
            child.proc = None
        for child in self.children:
            if child.ready_fd is not None:
                os.close(child.ready_fd)
                child.ready_fd = None

    @contextlib.contextmanager
    def _signals(self) -> Iterator[int]:
        """SIGINT, SIGTERM and SIGCHLD wake the selector: their numbers arrive on a pipe."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        handled = (*_STOP_SIGNALS, signal.SIGCHLD)
        previous = {s: signal.signal(s, _ignore) for s in handled}
        old_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        try:
            yield read_fd
        finally:
            signal.set_wakeup_fd(old_fd)
            for s, handler in previous.items():
                signal.signal(s, handler)
            os.close(read_fd)
            os.close(write_fd)


def _ignore(signum: int, frame: Any) -> None:
    """Python-level handler: the wakeup pipe carries the signal to the loop."""


def _read_all(fd: int) -> bytes:
    data = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk
