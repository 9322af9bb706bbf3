"""Run Triton's own ``perf_analyzer`` against a served model and parse its figures.

The working ``perf_analyzer`` binary comes with the ``tritonclient`` wheel (``<venv>/bin/perf_analyzer``;
the pip ``perf-analyzer`` wheels need a newer glibc). It links ``libb64.so.0d`` and ``libcudart.so.12``,
which the ``nvidia-pytriton`` wheel ships under hashed names in ``nvidia_pytriton.libs``: a private
directory of symlinks with the plain names goes on ``LD_LIBRARY_PATH``. The binary itself is run
unmodified; requests carry real preprocessed photographs (UINT8) written as perf_analyzer input data.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from deepfake_edge.server.admin_key import admin_headers, find_admin_key
from deepfake_edge.server.triton import TritonInstallation
from deepfake_edge.serving_contract import DEFAULT_MODEL

# perf_analyzer's CSV (times in microseconds) -> our keys (milliseconds).
_CSV_COLUMNS = {
    "Client Send": "client_send_ms",
    "Network+Server Send/Recv": "network_server_send_recv_ms",
    "Server Queue": "server_queue_ms",
    "Server Compute Input": "server_compute_input_ms",
    "Server Compute Infer": "server_compute_infer_ms",
    "Server Compute Output": "server_compute_output_ms",
    "Client Recv": "client_recv_ms",
    "p50 latency": "p50_ms",
    "p90 latency": "p90_ms",
    "p95 latency": "p95_ms",
    "p99 latency": "p99_ms",
}
_UNHASHED_LIBRARIES = {"libb64-": "libb64.so.0d", "libcudart-": "libcudart.so.12"}


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, failed, or produced no figures; the message carries its output tail."""


def perf_analyzer_binary() -> Path:
    """The ``perf_analyzer`` installed next to this interpreter by the tritonclient wheel."""
    binary = Path(sys.prefix) / "bin" / "perf_analyzer"
    found = binary if binary.exists() else shutil.which("perf_analyzer")
    if found is None:
        raise PerfAnalyzerError("perf_analyzer not found: pip install 'tritonclient[all]==2.51.0' provides it")
    return Path(found)


def make_library_directory(directory: Path) -> Path:
    """Symlink the plain library names perf_analyzer links against to nvidia_pytriton.libs' hashed files."""
    libs = TritonInstallation.locate().libs
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, plain_name in _UNHASHED_LIBRARIES.items():
        matches = sorted(libs.glob(f"{prefix}*.so*"))
        if not matches:
            raise PerfAnalyzerError(f"{libs} has no {prefix}*.so* to provide {plain_name}")
        (directory / plain_name).symlink_to(matches[0])
    return directory


def write_input_data(path: Path, images: np.ndarray, input_name: str = "image") -> Path:
    """Write UINT8 images ``(N, 3, H, W)`` as perf_analyzer ``--input-data`` JSON (one step per image)."""
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty UINT8 array (N, 3, H, W), got {images.dtype} {images.shape}")
    steps = [
        {input_name: {"b64": base64.b64encode(np.ascontiguousarray(image).tobytes()).decode("ascii"),
                      "shape": list(image.shape)}}
        for image in images
    ]
    path.write_text(json.dumps({"data": steps}))
    return path


def parse_perf_csv(path: Path) -> list[dict[str, float]]:
    """One dict per concurrency level, ascending: ``concurrency``, ``throughput_per_s`` (images/s), times in ms."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {"concurrency": int(row["Concurrency"]), "throughput_per_s": float(row["Inferences/Second"])}
            parsed.update({key: float(row[column]) / 1000.0 for column, key in _CSV_COLUMNS.items() if column in row})
            rows.append(parsed)
    return sorted(rows, key=lambda row: row["concurrency"])  # perf_analyzer orders them by throughput


def run_perf_analyzer(
    url: str,
    images: np.ndarray,
    *,
    model: str = DEFAULT_MODEL,
    protocol: str = "grpc",
    concurrency_range: tuple[int, int, int] = (1, 8, 2),
    batch_size: int = 1,
    measurement_interval_ms: int = 2000,
    measurement_request_count: int | None = None,
    max_trials: int = 6,
    stability_percentage: float = 20.0,
    shared_memory: str = "none",
    timeout_s: float | None = None,
    extra_args: Sequence[str] = (),
    admin_key: str | None = None,
) -> list[dict[str, float]]:
    """Run ``perf_analyzer`` on ``model`` at ``url`` and return its figures per concurrency level.

    ``concurrency_range`` is ``(start, end, step)`` as in ``--concurrency-range``. Each level is measured
    in windows of ``measurement_interval_ms`` (or, if ``measurement_request_count`` is given, windows of at
    least that many requests: never empty on a slow or busy machine) until three agree within
    ``stability_percentage`` or ``max_trials`` windows have run (then perf_analyzer fails, and so does this).
    ``timeout_s`` bounds the whole run (default: generous for the windows requested). Every row also
    carries ``model``, ``protocol`` and ``batch_size``. perf_analyzer reads Triton's statistics, an admin API:
    ``admin_key`` (default: :func:`~deepfake_edge.server.admin_key.find_admin_key`) goes in a request header.
    """
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    start, end, step = concurrency_range
    if not 1 <= start <= end or step < 1:
        raise ValueError(f"concurrency range must satisfy 1 <= start <= end and step >= 1, got {concurrency_range}")
    levels = len(range(start, end + 1, step))
    key = admin_key or find_admin_key(required_for="perf_analyzer (it reads Triton's statistics)")
    assert key is not None
    (header, value), = admin_headers(key, protocol).items()
    if timeout_s is None:
        timeout_s = 60.0 + levels * max_trials * measurement_interval_ms / 1000.0 * 2
    with tempfile.TemporaryDirectory(prefix="deepfake-edge-perf-") as work:
        workdir = Path(work)
        env = dict(os.environ)
        libraries = str(make_library_directory(workdir / "lib"))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libraries, env.get("LD_LIBRARY_PATH", "")) if p)
        command = [
            str(perf_analyzer_binary()), "-m", model, "-u", url, "-i", protocol, "-b", str(batch_size),
            "--concurrency-range", f"{start}:{end}:{step}",
            "--input-data", str(write_input_data(workdir / "input.json", images)),
            "--measurement-interval", str(measurement_interval_ms), "--max-trials", str(max_trials),
            "--stability-percentage", str(stability_percentage), "--shared-memory", shared_memory,
            "-f", str(workdir / "perf.csv"), "-H", f"{header}:{value}",
        ]
        if measurement_request_count is not None:
            command += ["--measurement-mode", "count_windows", "--measurement-request-count",
                        str(measurement_request_count)]
        command += list(extra_args)
        try:
            completed = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                       text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            raise PerfAnalyzerError(f"perf_analyzer did not finish within {timeout_s:.0f} s") from error
        output = completed.stdout + completed.stderr
        if completed.returncode != 0 or not (workdir / "perf.csv").exists():
            raise PerfAnalyzerError(f"perf_analyzer exited with {completed.returncode}:\n{output[-3000:]}")
        rows = parse_perf_csv(workdir / "perf.csv")
    if not rows:
        raise PerfAnalyzerError(f"perf_analyzer wrote no measurements:\n{output[-3000:]}")
    return [{"model": model, "protocol": protocol, "batch_size": batch_size, **row} for row in rows]
