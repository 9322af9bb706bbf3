"""Closed-loop load generation: N workers, each with its own connection, one request at a time.

Load is bounded twice: at most ``max_requests`` measured requests and at most ``max_seconds`` of
wall time, whichever comes first; every worker thread is joined before :func:`run_closed_loop`
returns (they are daemon threads, so a Ctrl-C in the main thread cannot leave the process hanging).
The first ``warmup_per_worker`` requests of each worker are not recorded (connection set-up, first
batches), and measurement starts for all workers at once behind a barrier.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

# A sender is built once per worker (its own connection) and called with a request number.
Sender = Callable[[int], object]
SenderFactory = Callable[[], Sender]


@dataclass(frozen=True)
class LoadResult:
    """Figures of one closed-loop run (latencies in milliseconds, throughput in requests/s)."""

    system: str
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    first_error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(system: str, concurrency: int, latencies_s: list[float], errors: int, duration_s: float,
              first_error: str = "") -> LoadResult:
    """Percentiles over successful requests; throughput counts successes only."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    p50, p95, p99 = np.percentile(ms, (50, 95, 99)) if ms.size else (float("nan"),) * 3
    return LoadResult(
        system=system, concurrency=concurrency, requests=int(ms.size), errors=errors,
        duration_s=round(duration_s, 3), throughput=ms.size / duration_s if duration_s > 0 else 0.0,
        p50_ms=float(p50), p95_ms=float(p95), p99_ms=float(p99),
        mean_ms=float(ms.mean()) if ms.size else float("nan"), first_error=first_error,
    )


def run_closed_loop(system: str, make_sender: SenderFactory, concurrency: int, max_requests: int,
                    max_seconds: float, warmup_per_worker: int = 2, setup_timeout_s: float = 60.0,
                    on_window_open: Callable[[], object] | None = None) -> LoadResult:
    """Drive ``concurrency`` workers against one system and summarise the measured window.

    ``on_window_open`` runs once when measurement starts (after every worker's warm-up), e.g. to
    start a :class:`~deepfake_edge.benchmarks.cputime.CpuMeter`.
    """
    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    window: dict[str, float] = {}

    def open_window() -> None:  # run by the barrier before it releases anyone
        if on_window_open is not None:
            on_window_open()
        window["began"] = time.perf_counter()
        window["deadline"] = window["began"] + max_seconds

    start_line = threading.Barrier(concurrency + 1, action=open_window, timeout=setup_timeout_s)

    def worker() -> None:
        try:
            send = make_sender()
            for number in range(warmup_per_worker):
                send(-1 - number)
        except Exception as error:  # noqa: BLE001 - a worker that cannot start is an error, not a crash
            with lock:
                errors.append(f"setup: {type(error).__name__}: {error}")
            start_line.abort()
            return
        try:
            start_line.wait()
        except threading.BrokenBarrierError:
            return
        local: list[float] = []
        local_errors: list[str] = []
        while True:
            number = next(counter)
            if number >= max_requests or time.perf_counter() >= window["deadline"]:
                break
            began = time.perf_counter()
            try:
                send(number)
            except Exception as error:  # noqa: BLE001 - counted and reported, load goes on
                local_errors.append(f"{type(error).__name__}: {error}")
                continue
            local.append(time.perf_counter() - began)
        with lock:
            latencies.extend(local)
            errors.extend(local_errors)

    threads = [threading.Thread(target=worker, daemon=True, name=f"load-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        start_line.wait()
    except threading.BrokenBarrierError:
        window.setdefault("began", time.perf_counter())
    for thread in threads:
        thread.join(timeout=max_seconds + setup_timeout_s)
    duration = time.perf_counter() - window["began"]
    return summarize(system, concurrency, latencies, len(errors), duration, errors[0] if errors else "")
