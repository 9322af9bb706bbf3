"""Start a child process that dies with its parent, and stop it cleanly: one way for every server we launch.

:class:`ChildProcess` is used for ``tritonserver`` (:mod:`deepfake_edge.server.triton`), ``deepfake-edge serve``
under soak (:mod:`deepfake_edge.benchmarks.soak_service`) and the naive benchmark server
(:mod:`deepfake_edge.benchmarks.naive_server`). The child

* runs in its own session and process group, so a Ctrl-C reaches only the launcher and ``stop()`` can end
  the child together with the processes it started in its group (Triton's Python-backend stubs);
* gets SIGTERM from the kernel if the launcher dies without stopping it (``PR_SET_PDEATHSIG``, set in the
  child between fork and exec). The kernel ties that signal to the launching *thread*, so it is set only
  for children started from the main thread, the one thread that lives as long as the launcher;
* writes stdout and stderr to a log file (a pipe nobody reads would fill up and stall it), whose tail goes
  into error messages.

``stop()`` sends SIGTERM to the child, waits ``stop_timeout_s``, then SIGKILLs its whole process group.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import os
import signal
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Mapping, Sequence

_PR_SET_PDEATHSIG = 1
# Resolved here, not in the forked child, where loading a library could deadlock on a lock another thread held.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(parent_pid: int | None = None) -> None:
    """Run in the child before exec (``preexec_fn``): SIGTERM this process when its parent thread dies.

    With ``parent_pid`` (read before the fork), a parent that died before the call is noticed too: the
    signal would never come, so the child exits at once. Only async-signal-safe work happens here.
    """
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def _die_with(parent_pid: int):
    return lambda: die_with_parent(parent_pid)


_RUNNING: "weakref.WeakSet[ChildProcess]" = weakref.WeakSet()


@atexit.register
def _stop_all_running() -> None:
    for child in list(_RUNNING):
        child.stop()


class ChildProcess:
    """``command`` as a child process that dies with this process and is stopped cleanly.

    ``log_path``: where stdout and stderr are appended (default: a private temporary file, removed by
    ``stop()`` after its tail is kept in :attr:`log`). ``stop_timeout_s``: how long ``stop()`` waits after
    SIGTERM before it SIGKILLs the process group.
    """

    def __init__(self, command: Sequence[str], *, log_path: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None,
                 stop_timeout_s: float = 15.0, name: str | None = None) -> None:
        self.command = [str(part) for part in command]
        self.name = name or Path(self.command[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.stop_timeout_s = stop_timeout_s
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self._own_log = log_path is None
        self.log = ""  # the log's last lines, kept by stop() when the log file was a private one
        self._process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def poll(self) -> int | None:
        """The exit status once the child has exited (negative: killed by that signal), else None."""
        if self._process is None:
            return self.returncode
        return self._process.poll()

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> "ChildProcess":
        if self._process is not None:
            raise RuntimeError(f"{self.name} was already started")
        if self.log_path is None:
            handle, path = tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log")
            os.close(handle)
            self.log_path = Path(path)
        on_main_thread = threading.current_thread() is threading.main_thread()
        with open(self.log_path, "ab") as log:  # appended: a restarted server keeps its predecessor's log
            self._process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                cwd=self.cwd, start_new_session=True,
                preexec_fn=_die_with(os.getpid()) if on_main_thread else None,
            )
        _RUNNING.add(self)
        return self

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the child to exit (subprocess.TimeoutExpired after ``timeout_s``); its exit status."""
        assert self._process is not None, "not started"
        return self._process.wait(timeout=timeout_s)

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM the child, SIGKILL its process group after ``timeout_s`` (default ``stop_timeout_s``).

        Returns its exit status (None if it was never started). Safe to call twice.
        """
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is None:
            return self.returncode
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s if timeout_s is None else timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever the child left in its group (e.g. Triton's stubs) goes too; the group outlives its leader.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.returncode = process.wait()
        if self._own_log and self.log_path is not None:
            self.log = self.log_tail(200)
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
        return self.returncode

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the child wrote (stdout and stderr)."""
        if self.log_path is None:
            return "\n".join(self.log.splitlines()[-lines:]) if self.log else "(no log)"
        return file_tail(self.log_path, lines)


def file_tail(path: Path | None, lines: int) -> str:
    """The last ``lines`` lines of a log file, or "(no log)"."""
    if path is None or not path.exists():
        return "(no log)"
    with open(path, "rb") as log:
        return b"".join(collections.deque(log, maxlen=lines)).decode("utf-8", "replace")
