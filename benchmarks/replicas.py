"""``bench --only replicas``: throughput and p99 of 1 and 2 Triton replicas behind HAProxy (``serve --replicas``).

Single-image requests from the project's client (each worker its own connection; the workload's JPEGs decoded
and preprocessed by the client in fast mode, one view per image, provenance not read, so that the figures are
the serving path's) at concurrency 16, through the balancer: gRPC
straight to HAProxy, HTTP through nginx and then HAProxy, as ``serve --replicas N`` runs them. With one
replica the same load also goes straight to that replica's own ports, which prices the proxy hops.

On a machine with two cores, a second replica adds no compute: both replicas share the cores one
replica's two model instances already use. What the stage shows there is what the balancer costs; the
point of replicas is failover (docs/replicas.md), and throughput on machines with more cores per replica.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from deepfake_edge.benchmarks.cputime import _tree_cpu_s, own_cpu_s
from deepfake_edge.benchmarks.loadgen import Sender, run_closed_loop
from deepfake_edge.benchmarks.settings import BenchSettings
from deepfake_edge.benchmarks.workload import Workload

Progress = Callable[[str], None]


def count_points(settings: BenchSettings) -> int:
    """Progress steps: each replica set's start, then per protocol a point through the balancer (and one
    straight to the replica when there is one)."""
    counts = settings.replica_counts
    return len(counts) + len(settings.protocols) * (len(counts) + (1 in counts))


def replicas_stage(settings: BenchSettings, workload: Workload, progress: Progress, result: dict) -> dict:
    """Fill ``result`` (in place: an interrupted run keeps what it measured) with ``points`` and ``model``."""
    from deepfake_edge.server.replicas import ReplicaSet
    from deepfake_edge.server.triton import free_port

    if not settings.replica_counts:  # the quick preset's default
        return result
    model = settings.models[0]
    result.update(model=model, concurrency=settings.replica_concurrency, points=result.get("points", []))
    # A repository holding only the measured model: every replica loads what it serves, nothing more.
    with tempfile.TemporaryDirectory(prefix="deepfake-edge-bench-replicas-") as folder:
        shutil.copytree(settings.repository / model, Path(folder) / model)
        for count in settings.replica_counts:
            progress(f"replicas={count} starting")
            with ReplicaSet(folder, count, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                            startup_timeout_s=300) as replica_set:
                assert replica_set.balancer is not None and replica_set.gateway is not None
                front = [replica_set.balancer.pid, replica_set.gateway._process.pid]  # type: ignore[union-attr]
                servers = [server.pid for server in replica_set.servers]
                targets = [("haproxy", replica_set.grpc_url, replica_set.http_url)]
                if count == 1:
                    direct = replica_set.servers[0]
                    targets.append(("direct", direct.grpc_url, direct.http_url))
                for route, grpc_url, http_url in targets:
                    for protocol in settings.protocols:
                        url = grpc_url if protocol == "grpc" else http_url
                        progress(f"replicas={count} {route} {protocol}")
                        result["points"].append(_measure(settings, workload, model, url, protocol, count, route,
                                                         [*servers, *front] if route == "haproxy" else servers))
    return result


def _measure(settings: BenchSettings, workload: Workload, model: str, url: str, protocol: str, count: int,
             route: str, pids: list[int | None]) -> dict:
    senders: list = []

    def make_sender() -> object:
        sender = fast_sender(url, protocol, model, workload.encoded, settings.request_timeout_s)
        senders.append(sender)
        return sender

    cpu: dict[str, float] = {}

    def open_window() -> None:
        cpu.update(client=own_cpu_s(), server=sum(_tree_cpu_s(pid) for pid in pids if pid))

    load = run_closed_loop(f"replicas-{count}-{route}-{protocol}", make_sender, settings.replica_concurrency,
                           settings.max_requests, settings.max_seconds, on_window_open=open_window)
    images = max(1, load.requests + load.errors)
    client_cpu = (own_cpu_s() - cpu.get("client", own_cpu_s())) / images * 1e3
    server_cpu = (sum(_tree_cpu_s(pid) for pid in pids if pid) - cpu.get("server", 0.0)) / images * 1e3
    for sender in senders:
        sender.close()
    return load.to_dict() | {"replicas": count, "route": route, "protocol": protocol, "model": model,
                             "client_cpu_ms_per_image": round(client_cpu, 3),
                             "server_cpu_ms_per_image": round(server_cpu, 3)}


def fast_sender(url: str, protocol: str, model: str, images: tuple[bytes, ...], timeout_s: float) -> Sender:
    """A load-generator sender: its own ``DeepfakeClient``, one image per request in fast mode; a Detection
    without a finite score is an error, never a success."""
    import math

    from deepfake_edge.client import DeepfakeClient

    client = DeepfakeClient(url, protocol=protocol, model=model, timeout_s=timeout_s, provenance=False)
    client.model_info()

    def send(number: int) -> object:
        detection = client.detect(images[number % len(images)], mode="fast")
        if not math.isfinite(detection.fake_probability):
            raise ValueError(f"no score for image {number}")
        return detection

    send.close = client.close  # type: ignore[attr-defined]
    return send


def markdown_lines(result: dict) -> list[str]:
    """The stage's table for bench.md (nothing when it did not run)."""
    points = result.get("points", [])
    if not points:
        return []
    lines = [f"## Replicas behind HAProxy (`serve --replicas N`, model {result.get('model')}, concurrency "
             f"{result.get('concurrency')}, one image per request, fast mode)", "",
             "HTTP through the balancer goes nginx → HAProxy → Triton; gRPC HAProxy → Triton; 'direct' is the "
             "one replica's own ports. Server CPU: every replica's process tree, plus HAProxy and nginx when "
             "routed through them.", "",
             "| replicas | route | protocol | images/s | p50 ms | p99 ms | requests | errors | client CPU ms/image "
             "| server CPU ms/image |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        lines.append(f"| {p['replicas']} | {p['route']} | {p['protocol']} | {p['throughput']:.1f} | "
                     f"{p['p50_ms']:.1f} | {p['p99_ms']:.1f} | {p['requests']} | {p['errors']} | "
                     f"{p['client_cpu_ms_per_image']:.2f} | {p['server_cpu_ms_per_image']:.2f} |")
    return lines + [""]


def summary_lines(result: dict) -> list[str]:
    """What ``bench`` prints for the stage: one line per point."""
    return [f"  replicas={p['replicas']} {p['route']} {p['protocol']}: {p['throughput']:.1f} images/s, "
            f"p99 {p['p99_ms']:.1f} ms at concurrency {p['concurrency']}" for p in result.get("points", [])]
