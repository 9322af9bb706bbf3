"""A small thread pool whose threads each own one connection ("lane") to the server.

tritonclient's clients are not thread-safe, and the HTTP one is built on gevent sockets that belong to
the thread that created them. So every network call of the sync client runs on one of these threads,
with that thread's own lane; the thread creates its lane lazily and closes it itself on shutdown.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from concurrent.futures import Future
from typing import Callable, Generic, Optional, Protocol, TypeVar

T = TypeVar("T")


class Lane(Protocol):
    def close(self) -> None: ...


L = TypeVar("L", bound=Lane)

# A client that was never closed still unregisters its shared memory and closes its connections at exit.
_OPEN_POOLS: "weakref.WeakSet[LanePool]" = weakref.WeakSet()


@atexit.register
def _shutdown_open_pools() -> None:
    for pool in list(_OPEN_POOLS):
        pool.shutdown(timeout_s=5.0)


class Worker(Generic[L]):
    """Handed to each task: the calling thread's lane to ``endpoint``, created on first use (and replaced
    when a task asks for another endpoint)."""

    def __init__(self, make_lane: Callable[[str], L]):
        self._make_lane = make_lane
        self._lane: Optional[L] = None
        self._endpoint = ""

    def lane(self, endpoint: str) -> L:
        if self._lane is not None and self._endpoint != endpoint:
            self.reset_lane()
        if self._lane is None:
            self._lane, self._endpoint = self._make_lane(endpoint), endpoint
        return self._lane

    def reset_lane(self) -> None:
        """Drop the lane (after a connection failure, a fresh one is safer than a half-dead pool)."""
        lane, self._lane = self._lane, None
        if lane is not None:
            try:
                lane.close()
            except Exception:  # the connection is already broken; closing it is best effort
                pass


class LanePool(Generic[L]):
    """``submit(task)`` runs ``task(worker)`` on a pool thread; the pool only grows (``ensure``)."""

    def __init__(self, make_lane: Callable[[str], L], name: str = "deepfake-client"):
        self._make_lane = make_lane
        self._name = name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        _OPEN_POOLS.add(self)

    def ensure(self, count: int) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the client is closed")
            while len(self._threads) < count:
                thread = threading.Thread(target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)

    def submit(self, task: Callable[[Worker[L]], T]) -> "Future[T]":
        self.ensure(1)
        future: Future = Future()
        self._tasks.put((task, future))
        return future

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Finish queued tasks, close every lane on its own thread, join the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._tasks.put(None)
        for thread in threads:
            thread.join(timeout_s)

    def _run(self) -> None:
        worker: Worker[L] = Worker(self._make_lane)
        try:
            while (item := self._tasks.get()) is not None:
                task, future = item
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(task(worker))
                except BaseException as error:  # delivered to the waiting caller, never lost in this thread
                    future.set_exception(error)
                # Else an idle thread keeps its last task alive until the next one: the web app's pooled clients
                # held a whole decoded upload each (+400 MB of RSS under a flood of 6000 x 6000 images).
                del item, task, future
        finally:
            worker.reset_lane()

