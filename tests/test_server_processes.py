"""The child-process helper every launcher uses: a child dies with its parent and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil

from deepfake_edge.server.processes import ChildProcess

_PARENT_SCRIPT = """
import sys, time
from deepfake_edge.server.processes import ChildProcess
child = ChildProcess([sys.executable, "-c", "import time; print('child up', flush=True); time.sleep(120)"]).start()
print(child.pid, flush=True)
time.sleep(120)
"""


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_child_does_not_outlive_a_parent_that_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT_SCRIPT], stdout=subprocess.PIPE, text=True)
    child_pid = None
    try:
        child_pid = int(parent.stdout.readline())
        assert psutil.pid_exists(child_pid)
        assert os.getpgid(child_pid) == child_pid  # a process group of its own
    finally:
        parent.kill()  # no atexit, no finally in the parent: only the kernel's parent-death signal is left
        parent.wait()
        parent.stdout.close()
    try:
        assert _gone(child_pid, timeout_s=10.0), "the child outlived its killed parent"
    finally:
        if psutil.pid_exists(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_stop_escalates_to_sigkill_of_the_group_and_keeps_the_log_tail() -> None:
    # The child ignores SIGTERM and leaves a grandchild in its group: only SIGKILL of the group ends both.
    script = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
              "print('grandchild', g.pid, flush=True); time.sleep(120)")
    child = ChildProcess([sys.executable, "-c", script], stop_timeout_s=0.5).start()
    log_path = child.log_path
    deadline = time.monotonic() + 30
    while "grandchild" not in child.log_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(child.log_tail().split()[-1])
    started = time.monotonic()
    assert child.stop() == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert _gone(grandchild, timeout_s=5.0)
    assert "grandchild" in child.log and not log_path.exists()  # the private log's tail is kept
    assert child.stop() == -signal.SIGKILL  # a second stop is harmless
