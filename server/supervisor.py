"""Keep one tritonserver running: restart it when it dies, within a backoff and a restart budget.

``deepfake-edge serve`` runs :meth:`TritonSupervisor.watch` on its main thread over a
:class:`~deepfake_edge.server.service.TritonService` (Triton and nginx, restarted together; a plain
:class:`~deepfake_edge.server.triton.TritonServer` works the same). When the server exits
(killed, crashed, out of memory) the supervisor stops what is left of it (its process group, its
/dev/shm regions, its Python-backend folder in /tmp), waits a backoff (1, 2, 4 … 30 s), and starts a new
one on the same ports and repository. Clients reconnect by themselves; meanwhile :attr:`outage` says
what is happening, which the web app shows in its 503 answers. More than ``max_restarts`` restarts
within ``window_s`` means something is wrong that a restart will not fix: ``watch`` then gives up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from deepfake_edge.server.triton import TritonServer, TritonServerError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """How often and how fast a dead server is restarted."""

    max_restarts: int = 5
    window_s: float = 600.0
    first_backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def backoff_s(self, attempt: int) -> float:
        """Seconds before restart number ``attempt`` (1-based): 1, 2, 4, … capped."""
        return min(self.max_backoff_s, self.first_backoff_s * 2 ** (attempt - 1))


class RestartBudgetExhausted(TritonServerError):
    """The server kept dying: more restarts than the policy allows within its window."""


class TritonSupervisor:
    """Owns the running :class:`TritonServer` made by ``make_server`` and replaces it when it dies.

    ``start()`` starts the first server (errors propagate: a server that cannot start at all is not
    restarted). ``watch()`` blocks, restarting as needed, until ``stop()`` is called from another thread
    or the budget is exhausted (then it raises :class:`RestartBudgetExhausted`). ``server`` is the current
    server; ``outage`` is None while it is up, else a sentence for people saying what is going on.
    """

    def __init__(self, make_server: Callable[[], TritonServer], policy: RestartPolicy = RestartPolicy(),
                 poll_interval_s: float = 0.2) -> None:
        self._make_server = make_server
        self.policy = policy
        self.poll_interval_s = poll_interval_s
        self.server: TritonServer | None = None
        self.restarts: deque[float] = deque()  # monotonic times of recent restarts
        self._outage: str | None = None
        self._stopping = threading.Event()

    @property
    def outage(self) -> str | None:
        return self._outage

    def start(self) -> TritonServer:
        self.server = self._make_server().start()
        return self.server

    def stop(self) -> None:
        """Stop the current server and make ``watch()`` return."""
        self._stopping.set()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> "TritonSupervisor":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def watch(self) -> None:
        """Restart the server whenever it is found dead, until stopped or out of budget."""
        while not self._stopping.is_set():
            server = self.server
            if server is not None and not server.is_running() and not self._stopping.is_set():
                self._replace(server)
            self._stopping.wait(self.poll_interval_s)

    def _replace(self, dead: TritonServer) -> None:
        code = dead.exit_code()
        tail = " | ".join(dead.log_tail(3).strip().splitlines())
        dead.stop()  # ends its stubs, removes its shared memory and its /tmp folder
        self.server = None
        died_at = time.monotonic()
        log.warning("tritonserver exited with code %s", code)
        while not self._stopping.is_set():
            attempt = self._count_restart(f"last exit code {code}; log tail: {tail}")
            delay = self.policy.backoff_s(attempt)
            self._outage = f"the detection server stopped and is restarting (attempt {attempt})"
            log.warning("restarting tritonserver in %.0f s (restart %d; at most %d within %.0f s)",
                        delay, attempt, self.policy.max_restarts, self.policy.window_s)
            if self._stopping.wait(delay):
                return
            try:
                self.server = self._make_server().start()
            except TritonServerError as error:
                tail = str(error).splitlines()[0]
                log.error("restart %d failed: %s", attempt, tail)
                continue
            log.warning("tritonserver restarted (pid %s), %.1f s after it stopped",
                        self.server.pid, time.monotonic() - died_at)
            self._outage = None
            return

    def _count_restart(self, reason: str) -> int:
        """Record one more restart and return its number in the window; raise when over budget."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > self.policy.window_s:
            self.restarts.popleft()
        if len(self.restarts) >= self.policy.max_restarts:
            self._outage = "the detection server stopped after too many crashes"
            raise RestartBudgetExhausted(
                f"tritonserver needed more than {self.policy.max_restarts} restarts within "
                f"{self.policy.window_s:.0f} s; not restarting it again ({reason})")
        self.restarts.append(now)
        return len(self.restarts)
