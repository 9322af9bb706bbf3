"""The four measurements of a benchmark run; each returns plain rows for the JSON report.

1. :func:`engine_stage` - in-process onnxruntime (the server's file and settings) and PyTorch eager.
2. :func:`served_stage` - our Triton through the project's client, per model, protocol, concurrency.
3. :func:`naive_stage` - the Flask servers (PyTorch eager; onnxruntime without batching), same load.
4. :func:`perf_stage` - Triton's own perf_analyzer against the same server, same concurrency levels.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from deepfake_edge.benchmarks.cputime import CpuMeter
from deepfake_edge.benchmarks.engine import (
    bench_engine,
    onnxruntime_runner,
    server_providers,
    session_for,
    torch_runner,
)
from deepfake_edge.benchmarks.loadgen import run_closed_loop
from deepfake_edge.benchmarks.served import BatchingStats, ServedModel, client_sender
from deepfake_edge.benchmarks.settings import BenchSettings
from deepfake_edge.benchmarks.workload import Workload
from deepfake_edge.serving_contract import latest_version_dir, precision_of, variant_name

Progress = Callable[[str], None]
_ANY_STABILITY = 1000.0  # percent: perf_analyzer then accepts its first three windows as they are


def engine_stage(settings: BenchSettings, models: dict[str, ServedModel], workload: Workload,
                 progress: Progress, rows: list[dict] | None = None) -> list[dict]:
    """images/s and ms/batch per (engine, precision, batch); sessions opened like the server's."""
    rows = [] if rows is None else rows  # filled in place: an interrupted run keeps what it measured
    providers = server_providers()
    files = {name: (model.onnx_path, precision_of(name), model) for name, model in models.items()}
    if "CUDAExecutionProvider" in providers:  # FP16 is exported for GPUs only, into the ngc repository
        for name, model in models.items():
            fp16_name = variant_name(name, "fp16")
            fp16 = latest_version_dir(settings.repository.parent / "ngc" / fp16_name)
            if precision_of(name) == "fp32" and fp16 is not None:
                files[fp16_name] = (fp16 / "model.onnx", "fp16", model)
    for name, (onnx_path, precision, model) in files.items():
        progress(f"engine onnxruntime {precision}")
        sessions = [session_for(onnx_path, model.intra_op_threads, providers) for _ in range(model.instances)]
        results = bench_engine("onnxruntime", precision, [onnxruntime_runner(s) for s in sessions], workload,
                               settings.batches, model.intra_op_threads, settings.engine_seconds,
                               settings.engine_iterations)
        rows += [r.to_dict() | {"model": name, "provider": sessions[0].get_providers()[0]} for r in results]
        del sessions
    if settings.torch_engine:
        import torch

        from deepfake_edge.checkpoint import load_checkpoint

        progress("engine torch fp32")
        model, card = load_checkpoint(settings.checkpoint)
        results = bench_engine("torch", "fp32", [torch_runner(model, card.mean, card.std)], workload, settings.batches,
                               torch.get_num_threads(), settings.engine_seconds, settings.engine_iterations)
        rows += [r.to_dict() | {"model": settings.checkpoint.name} for r in results]
    return rows


def served_stage(settings: BenchSettings, grpc_url: str, http_url: str, server_pid: int | None,
                 models: dict[str, ServedModel], workload: Workload, progress: Progress,
                 rows: list[dict] | None = None, *, admin_key: str) -> list[dict]:
    """Single-image requests from N client workers (one connection each); Triton batches them.

    ``admin_key`` unlocks Triton's statistics, read around each point to report the executed batch sizes.
    """
    rows = [] if rows is None else rows  # filled in place: an interrupted run keeps what it measured
    for name in models:
        for protocol in settings.protocols:
            url = grpc_url if protocol == "grpc" else http_url
            system = f"triton-{protocol}-{precision_of(name)}"
            for concurrency in settings.concurrencies:
                progress(f"{system} c={concurrency}")
                senders: list = []

                def make_sender(protocol=protocol, url=url, name=name):
                    sender = client_sender(url, protocol, name, workload.encoded, settings.request_timeout_s)
                    senders.append(sender)
                    return sender

                before = BatchingStats.read(http_url, name, admin_key)
                meter = CpuMeter(server_pid)
                result = run_closed_loop(system, make_sender, concurrency, settings.max_requests, settings.max_seconds,
                                         on_window_open=meter.start)
                cpu = meter.per_image(result.requests + result.errors)
                # Not in a finally: after Ctrl-C, closing would wait for requests in flight; the client
                # threads are daemons and fail fast once the server is stopped.
                for sender in senders:
                    sender.close()
                batching = BatchingStats.read(http_url, name, admin_key).since(before)
                rows.append(result.to_dict() | {"model": name, "protocol": protocol,
                                                "precision": precision_of(name)} | batching | cpu)
    return rows


def naive_stage(settings: BenchSettings, fp32_onnx: Path | None, workload: Workload, progress: Progress,
                rows: list[dict] | None = None) -> list[dict]:
    """The same load against each naive Flask server, started and stopped here."""
    from deepfake_edge.benchmarks.naive_server import NaiveServer, predict_sender
    from deepfake_edge.server.triton import free_port

    rows = [] if rows is None else rows  # filled in place: an interrupted run keeps what it measured
    for engine in settings.naive_engines:
        if engine == "onnxruntime" and fp32_onnx is None:
            continue
        system = f"flask-{engine}-fp32"
        progress(f"{system} starting")
        with NaiveServer(settings.checkpoint, free_port(), engine=engine,
                         onnx_path=fp32_onnx if engine == "onnxruntime" else None) as server:
            for concurrency in settings.naive_concurrencies:
                progress(f"{system} c={concurrency}")
                meter = CpuMeter(server.process.pid)
                result = run_closed_loop(system, lambda: predict_sender(server.port, workload.encoded,
                                                                        settings.request_timeout_s),
                                         concurrency, settings.max_requests, settings.max_seconds,
                                         on_window_open=meter.start)
                rows.append(result.to_dict() | {"model": settings.checkpoint.name, "protocol": "http",
                                                "precision": "fp32"} | meter.per_image(result.requests + result.errors))
    return rows


def perf_stage(settings: BenchSettings, grpc_url: str, http_url: str, models: dict[str, ServedModel],
               workload: Workload, progress: Progress, rows: list[dict], failures: list[str], *,
               admin_key: str) -> list[dict]:
    """perf_analyzer at the same concurrency levels (one invocation per level: powers of two).

    A level perf_analyzer cannot measure is reported in ``failures`` and the sweep goes on.
    """
    from deepfake_edge.server.perf import PerfAnalyzerError, run_perf_analyzer

    for name in models:
        for protocol in settings.perf_protocols:
            system = f"perf_analyzer-{protocol}-{precision_of(name)}"
            for concurrency in settings.perf_concurrencies:
                progress(f"{system} c={concurrency}")
                measure = partial(run_perf_analyzer, grpc_url if protocol == "grpc" else http_url, workload.tensors,
                                  model=name, protocol=protocol, concurrency_range=(concurrency, concurrency, 1),
                                  measurement_interval_ms=settings.perf_interval_ms,
                                  max_trials=settings.perf_max_trials, admin_key=admin_key)
                stable = True
                try:
                    try:
                        figures = measure(stability_percentage=settings.perf_stability)
                    except PerfAnalyzerError as error:
                        if "stable" not in str(error):
                            raise
                        # A busy machine keeps windows from agreeing: keep the last windows' figures, flagged.
                        stable = False
                        figures = measure(stability_percentage=_ANY_STABILITY)
                except PerfAnalyzerError as error:  # one level failing must not lose the other levels
                    failures.append(f"{system} c={concurrency}: {str(error).splitlines()[0]} "
                                    f"({str(error).strip().splitlines()[-1]})")
                    continue
                for row in figures:
                    rows.append({"system": system, "model": name, "protocol": protocol, "stable": stable,
                                 "precision": precision_of(name), "concurrency": int(row["concurrency"]),
                                 "throughput": row["throughput_per_s"], "p50_ms": row.get("p50_ms"),
                                 "p95_ms": row.get("p95_ms"), "p99_ms": row.get("p99_ms"),
                                 "server_queue_ms": row.get("server_queue_ms"),
                                 "server_compute_infer_ms": row.get("server_compute_infer_ms")})
    return rows
