"""``deepfake-edge serve`` and ``deepfake-edge perf`` as a user runs them: real processes, real signals."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from deepfake_edge.server.admin_key import KEY_ENVIRONMENT_VARIABLE
from deepfake_edge.server.triton import SHM_DIR, SHM_STEM, TritonServer, free_port

pytestmark = pytest.mark.server

CLI = [sys.executable, "-m", "deepfake_edge.cli"]
READY_LINE = "Ctrl+C stops everything."


class LineReader:
    """Collects a process's output lines in a thread so the test can wait for one with a deadline."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line)

    def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} not printed within {timeout_s} s; output so far:\n{''.join(self.lines)}")

    def rest(self) -> str:
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return "".join(self.lines)


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


@pytest.fixture(scope="module")
def small_repository(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Only the small CNN: these tests are about the verb's lifecycle, and B0's warm-up costs seconds per start."""
    repository = tmp_path_factory.mktemp("small_repository")
    shutil.copytree(demo_repository / "embedded" / "deepfake_cnn", repository / "deepfake_cnn")
    return repository


@pytest.mark.parametrize("stop_signal, web", [(signal.SIGINT, True), (signal.SIGTERM, False)],
                         ids=["ctrl-c+web", "sigterm"])
def test_serve_prints_endpoints_and_stops_cleanly_on_signal(small_repository: Path, stop_signal: int,
                                                            web: bool) -> None:
    http_port, grpc_port, metrics_port, web_port = (free_port() for _ in range(4))
    command = CLI + ["serve", "--model-repository", str(small_repository), "--http-port", str(http_port),
                     "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--web-port", str(web_port)]
    serve = subprocess.Popen(command + ([] if web else ["--no-web"]), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        output = LineReader(serve.stdout)
        triton_pid = int(re.search(r"pid (\d+)", output.wait_for("Triton Inference Server ready", 180)).group(1))
        output.wait_for(READY_LINE, 30)
        assert http_status(f"http://127.0.0.1:{http_port}/v2/health/ready") == 200
        assert http_status(f"http://127.0.0.1:{metrics_port}/metrics") == 200
        if web:
            assert http_status(f"http://127.0.0.1:{web_port}/") == 200
        server_family = [psutil.Process(triton_pid), *psutil.Process(triton_pid).children(recursive=True)]
        serve.send_signal(stop_signal)
        assert serve.wait(timeout=30) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
    printed = output.rest()
    for endpoint in (f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}",
                     f"http://127.0.0.1:{metrics_port}/metrics"):
        assert endpoint in printed
    assert (f"http://127.0.0.1:{web_port}/" in printed) == web
    assert "stopped" in printed
    assert not [p for p in server_family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not list(SHM_DIR.glob(f"{SHM_STEM}dfe{serve.pid}_*"))


def test_serve_refuses_a_busy_port_by_name(small_repository: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        result = subprocess.run(CLI + ["serve", "--model-repository", str(small_repository),
                                       "--http-port", str(free_port()), "--grpc-port", str(free_port()),
                                       "--metrics-port", str(free_port()), "--web-port", str(busy)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"web port {busy} on 127.0.0.1 is already in use" in result.stderr


def test_serve_explains_a_missing_repository(tmp_path: Path) -> None:
    result = subprocess.run(CLI + ["serve", "--model-repository", str(tmp_path / "nowhere"), "--no-web"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "deepfake-edge export" in result.stderr


def test_perf_verb_measures_a_running_server_over_http(triton_server: TritonServer, tmp_path: Path) -> None:
    figures = tmp_path / "perf.json"
    result = subprocess.run(
        CLI + ["perf", "--url", triton_server.http_url, "--protocol", "http", "--model", "deepfake_b0",
               "--concurrency-range", "2", "--measurement-request-count", "10", "--max-trials", "3",
               "--stability-percentage", "1000", "--json", str(figures)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, KEY_ENVIRONMENT_VARIABLE: triton_server.admin_key},  # perf_analyzer reads statistics
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "real images" in result.stdout
    (row,) = json.loads(figures.read_text())
    assert row["concurrency"] == 2 and row["protocol"] == "http" and row["throughput_per_s"] > 0
    assert 0 < row["p50_ms"] <= row["p99_ms"]


def test_perf_verb_without_a_server_says_how_to_get_one() -> None:
    result = subprocess.run(CLI + ["perf", "--url", f"127.0.0.1:{free_port()}", "--protocol", "http"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--start-server" in result.stderr
