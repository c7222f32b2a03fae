"""Running ``python -m streamflow`` on a pseudo-terminal, or on pipes, from tests.

:func:`run_cli` runs the command line in a subprocess with no ``STREAMFLOW_`` variables
(plus the ones given). With ``tty=True`` its stderr (and, with ``tty_stdin=True``, its
stdin) is the slave side of a pty (:func:`os.openpty`) 120 columns wide, as on an
operator's terminal: what it draws there (progress, prompts) comes back as
``CliResult.tty``, and ``answers`` are typed when a prompt appears. Its stdout is always
a pipe, so the command's output stays apart from what it drew.

``rich=False`` runs it with the rich package made unimportable, to see the plain
fallback of :mod:`streamflow.admin.progress` whether or not rich is installed.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_NO_RICH = ("import sys; sys.modules['rich'] = None; from streamflow.cli import main; "
            "sys.exit(main(sys.argv[1:]))")


@dataclass
class CliResult:
    """What the command printed: stdout, stderr (empty when on the pty), the pty's text."""

    returncode: int
    stdout: str
    stderr: str
    tty: str


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMFLOW_")}
    env.update({"TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"})
    env.pop("NO_COLOR", None)
    env.update(extra or {})
    return env


def run_cli(
    *args: str, tty: bool = False, tty_stdin: bool = False, answers: tuple[bytes, ...] = (),
    prompt: bytes = b"[y/N]", stdin: bytes | Path | None = None, rich: bool = True,
    env: dict[str, str] | None = None, timeout: float = 30.0,
) -> CliResult:
    """Run ``python -m streamflow ARGS`` to its end (see the module docstring).

    ``stdin``: bytes written to a pipe, or a file to redirect from (ignored with
    ``tty_stdin``); default nothing (``/dev/null``).
    """
    command = [sys.executable, "-m", "streamflow"] if rich else [sys.executable, "-c", _NO_RICH]
    command += list(args)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if not tty:
            data = stdin.read_bytes() if isinstance(stdin, Path) else (stdin or b"")
            proc = subprocess.run(command, input=data, stdout=out, stderr=err, cwd=ROOT,
                                  env=_env(env), timeout=timeout, check=False)
            out.seek(0)
            err.seek(0)
            return CliResult(proc.returncode, out.read().decode(), err.read().decode(), "")
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        stdin_file = open(stdin, "rb") if isinstance(stdin, Path) else None  # noqa: SIM115
        try:
            proc_in: int | object = (slave if tty_stdin else stdin_file if stdin_file
                                     else subprocess.DEVNULL)
            p = subprocess.Popen(command, stdin=proc_in, stdout=out, stderr=slave, cwd=ROOT,
                                 env=_env(env), start_new_session=True)
        finally:
            os.close(slave)
            if stdin_file is not None:
                stdin_file.close()
        seen = b""
        pending = list(answers)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 0.1)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # EIO: every holder of the slave side is gone
                        break
                    if not chunk:
                        break
                    seen += chunk
                    if pending and seen.count(prompt) > len(answers) - len(pending):
                        os.write(master, pending.pop(0))
                elif p.poll() is not None:
                    break
            returncode = p.wait(timeout=max(deadline - time.monotonic(), 1))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            os.close(master)
        out.seek(0)
        return CliResult(returncode, out.read().decode(), "", seen.decode("utf-8", "replace"))


def rich_installed() -> bool:
    """Whether rich can be imported here (and so in the subprocess)."""
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True
