"""TritonServer lifecycle on a tiny Python-backend model: ready, errors, and nothing left behind.

These tests need no exported detector, so they isolate the launcher: library path, backend directory,
port checks, log tail on failure, SIGTERM -> SIGKILL escalation, process group and /dev/shm cleanup.
"""

from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from deepfake_edge.server.triton import (
    SHM_DIR,
    SHM_STEM,
    PortInUseError,
    TritonServer,
    TritonStartupError,
    free_port,
    remove_stale_regions,
    remove_stale_workdirs,
)

pytestmark = pytest.mark.server

_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [{{ name: "x" data_type: TYPE_FP32 dims: [2] }}]
output [{{ name: "y" data_type: TYPE_FP32 dims: [2] }}]
instance_group [{{ kind: KIND_CPU count: 1 }}]
"""
_DOUBLING_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def initialize(self, args):
        {initialize}

    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "y", 2 * pb_utils.get_input_tensor_by_name(r, "x").as_numpy())]) for r in requests]
"""


def write_tiny_repository(root: Path, initialize: str = "pass", name: str = "tiny") -> Path:
    """A repository with one Python-backend model doubling a (N, 2) FP32 input; ``initialize`` is its body."""
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(_CONFIG.format(name=name))
    (root / name / "1" / "model.py").write_text(textwrap.dedent(_DOUBLING_MODEL).format(initialize=initialize))
    return root


def shm_regions(prefix: str = SHM_STEM) -> set[str]:
    """Python-backend regions in /dev/shm; pass a server's ``shm_prefix`` to see only its own."""
    return {path.name for path in SHM_DIR.glob(f"{prefix}*")}


def server_ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


def http_json(url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
        return response.status, json.loads(response.read() or b"{}")


def process_group(pgid: int) -> list[psutil.Process]:
    members = []
    for process in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def wait_until_gone(pgid: int, timeout_s: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while (alive := process_group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_serves_then_stops_without_leftovers_even_when_the_body_raises(tmp_path: Path) -> None:
    repository = write_tiny_repository(tmp_path / "repo")
    with pytest.raises(RuntimeError, match="test body failed"):
        with TritonServer(repository, **server_ports()) as server:
            pgid = server.pid
            assert http_json(f"http://{server.http_url}/v2/health/live")[0] == 200
            assert http_json(f"http://{server.http_url}/v2/health/ready")[0] == 200
            request = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1.5, -2.0]}]}
            _, answer = http_json(f"http://{server.http_url}/v2/models/tiny/infer", request)
            assert answer["outputs"][0]["data"] == [3.0, -4.0]
            stubs = [p for p in psutil.Process(server.pid).children(recursive=True)]
            assert stubs, "the Python backend stub should run as the server's child"
            assert server.shm_prefix.startswith(SHM_STEM)
            assert shm_regions(server.shm_prefix), "the Python backend should have created a shm region"
            workdir = server.log_file.parent
            raise RuntimeError("test body failed")
    assert not server.is_running()
    assert wait_until_gone(pgid, timeout_s=1.0) == []
    assert not any(stub.is_running() and stub.status() != psutil.STATUS_ZOMBIE for stub in stubs)
    assert shm_regions(server.shm_prefix) == set()
    assert not workdir.exists()


def test_port_in_use_is_a_clear_error_naming_the_port(tmp_path: Path) -> None:
    repository = write_tiny_repository(tmp_path / "repo")
    ports = server_ports()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", ports["grpc_port"]))
        blocker.listen()
        server = TritonServer(repository, **ports)
        with pytest.raises(PortInUseError, match=rf"gRPC port {ports['grpc_port']} on 127.0.0.1 is already in use"):
            server.start()
    assert server.pid is None  # refused before launching anything


def test_model_that_fails_to_load_reports_the_server_log_and_leaves_nothing(tmp_path: Path) -> None:
    repository = write_tiny_repository(tmp_path / "repo", initialize="raise ValueError('weights-are-corrupt-42')")
    server = TritonServer(repository, startup_timeout_s=60, **server_ports())
    with pytest.raises(TritonStartupError, match="weights-are-corrupt-42") as failure:
        server.start()
    assert "tritonserver log tail" in str(failure.value)
    assert not server.is_running()
    assert shm_regions(server.shm_prefix) == set()


def test_stop_escalates_to_sigkill_of_the_whole_group_and_removes_shm(tmp_path: Path) -> None:
    repository = write_tiny_repository(tmp_path / "repo")
    server = TritonServer(repository, stop_timeout_s=0.5, **server_ports()).start()
    pgid = server.pid
    try:
        assert shm_regions(server.shm_prefix)
        # A stopped server cannot handle SIGTERM, so only SIGKILL of the group ends it and its stub;
        # nobody but the launcher is then left to unlink the shared memory.
        os.kill(server.pid, signal.SIGSTOP)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
    finally:
        server.stop()
    assert wait_until_gone(pgid) == []
    assert shm_regions(server.shm_prefix) == set()


_ORPHAN_SCRIPT = """
import sys, time
from deepfake_edge.server.triton import TritonServer, free_port
server = TritonServer(sys.argv[1], http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()).start()
print(server.pid, server.shm_prefix, server.log_file.parent, flush=True)
time.sleep(120)
"""


def test_server_does_not_outlive_a_launcher_that_is_killed(tmp_path: Path) -> None:
    repository = write_tiny_repository(tmp_path / "repo")
    launcher = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, str(repository)],
                                stdout=subprocess.PIPE, text=True)
    try:
        pid, prefix, workdir = launcher.stdout.readline().split()
        server_pid = int(pid)
        assert psutil.pid_exists(server_pid) and shm_regions(prefix)
    finally:
        launcher.kill()  # no atexit, no finally: only the kernel's parent-death signal can stop the server
        launcher.wait()
        launcher.stdout.close()
    assert wait_until_gone(server_pid, timeout_s=20) == []
    assert shm_regions(prefix) == set()
    # Its work dir outlives it (nobody was left to remove it) until a launcher next starts a server.
    assert Path(workdir).is_dir()
    assert Path(workdir).name in remove_stale_workdirs() and not Path(workdir).exists()


def test_stale_regions_of_dead_launchers_are_removed_and_nothing_else() -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale, still_mapped = (SHM_DIR / f"{SHM_STEM}dfe{dead_pid}_{tag}_region" for tag in ("0badf00d", "0000feed"))
    alive = SHM_DIR / f"{SHM_STEM}dfe{os.getpid()}_00c0ffee_region"
    paths = (stale, still_mapped, alive)
    try:
        for path in paths:
            path.write_bytes(b"\0" * 4096)
        with open(still_mapped, "r+b") as handle, mmap.mmap(handle.fileno(), 4096):
            assert remove_stale_regions() == [stale.name]
        assert not stale.exists() and still_mapped.exists() and alive.exists()
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def os_offers(monkeypatch: pytest.MonkeyPatch, ports: list[int]) -> None:
    """Make the OS offer ``ports``, in order, to :func:`free_port`'s probes, and forget every port handed out."""
    from deepfake_edge.server import triton

    offered = iter(ports)

    class FakeSocket:
        def __init__(self, *args) -> None:
            self.port = next(offered)

        def __enter__(self) -> "FakeSocket":
            return self

        def __exit__(self, *exc) -> None:
            return None

        def bind(self, address) -> None:
            pass

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(triton, "_handed_out_ports", set())
    monkeypatch.setattr(triton.socket, "socket", FakeSocket)


def test_free_port_never_hands_out_the_same_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OS may offer a just-probed port again; three calls for HTTP, gRPC and metrics must still differ."""
    from deepfake_edge.server import triton

    os_offers(monkeypatch, [50001, 50001, 50002, 50001, 50002, 50003])
    assert [triton.free_port() for _ in range(3)] == [50001, 50002, 50003]


def test_ports_promised_to_a_starting_server_are_never_handed_out(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    """``serve`` is given its public ports by its caller, which picked them free but has not bound them; the
    private HTTP port behind nginx must not be one of them (Triton refused HTTP and gRPC on one port)."""
    from deepfake_edge.server import triton
    from deepfake_edge.server.service import TritonService

    os_offers(monkeypatch, [50011, 50012, 50013, 50014])
    triton.reserve_ports(50011, None)  # the web page's port; None (no such port) is ignored
    service = TritonService(tmp_path, http_port=50012, grpc_port=50013, metrics_port=40000)
    assert service.triton.http_port == 50014 and service.public_http_port == 50012
