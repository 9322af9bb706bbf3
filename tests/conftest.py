"""Shared pytest fixtures. Area-specific fixtures live in the area's own test files.

Session fixtures that several areas share (a model repository, a running Triton server) are defined
here once so the suite builds and starts them only once.
"""

from __future__ import annotations

import os

import pytest

# Two cores in CI: keep torch/onnxruntime from oversubscribing them when tests run servers alongside.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def triton_server(demo_repository):
    """The real tritonserver on ``demo_repository``'s embedded models, on free 127.0.0.1 ports.

    Stopped at the end of the session (process group ended, its /dev/shm regions removed), also when
    tests fail.
    """
    from deepfake_edge.server.triton import TritonServer, free_port

    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with TritonServer(demo_repository / "embedded", startup_timeout_s=180, **ports) as server:
        yield server
