"""The engine limit: the exported model run in-process, no server, no client, at fixed batch sizes.

This is the ceiling a served model can approach. onnxruntime sessions are opened with the server's
Python-backend model's own session options and ``auto`` providers (the serving contract hands them over
from export/triton_model.py, see :func:`session_for`), so "served / in-process" compares like with like.
PyTorch eager is measured the same way as the reference for the naive Flask server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deepfake_edge.benchmarks.cputime import own_cpu_s
from deepfake_edge.benchmarks.workload import Workload
from deepfake_edge.serving_contract import auto_providers, session_options

BatchRunner = Callable[[np.ndarray], object]


@dataclass(frozen=True)
class EngineResult:
    """One (engine, precision, batch) point: median ms per batch and images/s of all instances together."""

    engine: str
    precision: str
    batch: int
    iterations: int
    ms_per_batch: float
    images_per_s: float
    threads: int  # intra-op threads per instance
    instances: int  # sessions running concurrently, like Triton's instance_group count
    cpu_ms_per_image: float

    def to_dict(self) -> dict:
        return asdict(self)


def time_batches(runs: Sequence[BatchRunner], workload: Workload, batch: int, max_seconds: float,
                 max_iterations: int, warmup: int = 2) -> tuple[int, float, float, float]:
    """Run each of ``runs`` (one per model instance, concurrently in threads) on successive batches.

    Returns (batches run, median ms/batch, images/s of all instances together over the window, CPU ms of
    this process per image). Each instance stops after ``max_iterations`` batches or ``max_seconds``.
    """
    inputs = [workload.batch(batch, offset=number * batch) for number in range(4)]  # prepared outside timing
    for run in runs:
        for number in range(warmup):
            run(inputs[number % len(inputs)])
    durations: list[list[float]] = [[] for _ in runs]
    deadline = time.perf_counter() + max_seconds

    def loop(run: BatchRunner, taken: list[float]) -> None:
        while len(taken) < max_iterations and time.perf_counter() < deadline:
            tick = time.perf_counter()
            run(inputs[len(taken) % len(inputs)])
            taken.append(time.perf_counter() - tick)

    cpu_began, began = own_cpu_s(), time.perf_counter()
    threads = [threading.Thread(target=loop, args=pair, daemon=True) for pair in zip(runs[1:], durations[1:])]
    for thread in threads:
        thread.start()
    loop(runs[0], durations[0])  # onnxruntime and torch release the GIL while they compute
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    every = [d for taken in durations for d in taken]
    cpu_ms = (own_cpu_s() - cpu_began) / (len(every) * batch) * 1e3
    return len(every), float(np.median(every) * 1e3), len(every) * batch / wall, cpu_ms


def server_providers() -> list[str]:
    """The execution providers the server's model picks with ``execution_provider: auto``."""
    return auto_providers()


def session_for(onnx_path: str | Path, threads: int, providers: Sequence[str] | None = None):
    """An onnxruntime session with the server's model's session options (``threads`` intra-op)."""
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), sess_options=session_options(threads),
                                providers=list(providers or server_providers()))


def onnxruntime_runner(session) -> BatchRunner:
    """Run every output of the graph, as the server does for a request that asks for all of them."""
    input_name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {input_name: batch})


def torch_runner(model, mean: Sequence[float], std: Sequence[float]) -> BatchRunner:
    """PyTorch eager on UINT8 batches, normalised with the shared :func:`normalize` (no autograd)."""
    import torch

    from deepfake_edge.preprocessing import normalize

    def run(batch: np.ndarray) -> object:
        with torch.inference_mode():
            return model(normalize(torch.from_numpy(batch), mean, std))

    return run


def bench_engine(engine: str, precision: str, runs: Sequence[BatchRunner], workload: Workload,
                 batches: Sequence[int], threads: int, max_seconds: float, max_iterations: int) -> list[EngineResult]:
    """One :class:`EngineResult` per batch size; ``runs`` holds one runner per instance (``threads`` each)."""
    results = []
    for batch in batches:
        iterations, ms, images_per_s, cpu_ms = time_batches(runs, workload, batch, max_seconds, max_iterations)
        results.append(EngineResult(engine, precision, batch, iterations, round(ms, 3), round(images_per_s, 2),
                                    threads, len(runs), round(cpu_ms, 3)))
    return results
