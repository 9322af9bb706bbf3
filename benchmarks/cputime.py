"""CPU time per image, split between the client (this process) and the server (a process tree).

On a machine where client and server share a few cores, throughput is bounded by the CPU seconds
each image costs on both sides together; unlike images/s, CPU time per image is barely moved by other
load on the machine, so it says where the time goes even when wall-clock figures are noisy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (0 for a process that is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def own_cpu_s() -> float:
    """User + system CPU seconds of this process (all threads)."""
    times = os.times()
    return times.user + times.system


@dataclass
class CpuMeter:
    """``start()`` then ``per_image(images)``: CPU milliseconds per image of client and server."""

    server_pid: int | None
    _client0: float = 0.0
    _server0: float = 0.0

    def start(self) -> "CpuMeter":
        self._client0 = own_cpu_s()
        self._server0 = _tree_cpu_s(self.server_pid) if self.server_pid else 0.0
        return self

    def per_image(self, images: int) -> dict[str, float]:
        client = own_cpu_s() - self._client0
        server = (_tree_cpu_s(self.server_pid) - self._server0) if self.server_pid else float("nan")
        if images <= 0:
            return {"client_cpu_ms_per_image": float("nan"), "server_cpu_ms_per_image": float("nan")}
        return {"client_cpu_ms_per_image": round(client / images * 1e3, 3),
                "server_cpu_ms_per_image": round(server / images * 1e3, 3)}


def metered_closed_loop(system: str, new_sender: Callable[[], Any], concurrency: int, max_requests: int,
                        max_seconds: float, server_pid: int | None, **loop_options: Any) -> dict:
    """One closed-loop point (:func:`~deepfake_edge.benchmarks.loadgen.run_closed_loop`) with the server's and
    this process's CPU per image over its measured window; every sender made is closed afterwards."""
    from deepfake_edge.benchmarks.loadgen import run_closed_loop

    senders: list = []

    def make_sender() -> Any:
        senders.append(new_sender())
        return senders[-1]

    meter = CpuMeter(server_pid)
    result = run_closed_loop(system, make_sender, concurrency, max_requests, max_seconds,
                             on_window_open=meter.start, **loop_options)
    cpu = meter.per_image(result.requests + result.errors)
    for sender in senders:
        sender.close()
    return result.to_dict() | cpu
