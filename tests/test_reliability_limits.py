"""Limits: every service binds 127.0.0.1 unless told otherwise, uploads never touch the disk, a stalled
Triton costs a caller at most its timeout, batches are capped by the model, and the web limits can be set
from the command line."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import psutil
import pytest
from PIL import Image
from web_support import DiskWriteAudit, post_file, running_web_server, stop_process

from deepfake_edge.cli import build_parser
from deepfake_edge.client import DeepfakeClient, RequestTimeoutError
from deepfake_edge.server.triton import TritonServer, free_port
from deepfake_edge.webapp.app import create_app


@pytest.mark.attack("E1", "reach Triton (HTTP, gRPC, metrics) or the web page from another address")
def test_every_service_binds_loopback_unless_told_otherwise():
    import inspect

    from deepfake_edge.webapp.app import make_web_server

    parser = build_parser()
    assert parser.parse_args(["serve"]).host == "127.0.0.1"
    assert parser.parse_args(["web"]).host == "127.0.0.1"
    assert TritonServer("unused").host == "127.0.0.1"
    assert inspect.signature(make_web_server).parameters["host"].default == "127.0.0.1"
    # The live check (every listening socket of serve, tritonserver and the stubs) is part of the soak:
    # see test_reliability_soak.py (target listens_on_loopback_only).


def _noisy_png(megabytes: float) -> bytes:
    """A real PNG of about ``megabytes`` (noise does not compress), far over werkzeug's 500 KB spool size."""
    side = int((megabytes * 2**20 / 3) ** 0.5)
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.mark.attack("E2", "make uploads land on disk (werkzeug spools parts over 500 KB)")
@pytest.mark.server
def test_no_upload_ever_touches_the_disk(triton_server, tmp_path, monkeypatch):
    spool = tmp_path / "tmpdir"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    audit = DiskWriteAudit()
    big, small = _noisy_png(4.0), _noisy_png(0.6)
    assert len(big) > 3 * 2**20 and len(small) > 500 * 1024
    with running_web_server(create_app(triton_server.grpc_url, timeout_s=60.0)) as web:
        assert post_file(f"{web}/api/detect", "warm.png", small)[0] == 200  # lazy imports happen here
        audit.armed = True
        try:
            answers = [post_file(f"{web}/api/detect", name, data, fields={"heatmap": heatmap})
                       for name, data, heatmap in (("big.png", big, "1"), ("small.png", small, "0"))]
            answers.append(post_file(f"{web}/api/detect", "huge.png", big * 3))  # refused, over the limit
        finally:
            audit.armed = False
    assert [status for status, _ in answers] == [200, 200, 413], answers
    assert audit.events == [], audit.events
    assert list(spool.iterdir()) == []


def test_the_disk_audit_sees_werkzeugs_default_spooling(tmp_path, monkeypatch):
    """The audit above can fail: with Flask's stock request class a large upload is spooled to a temp file."""
    from flask import Request

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    app = create_app(f"127.0.0.1:{free_port()}")
    app.request_class = Request
    audit = DiskWriteAudit()
    audit.armed = True
    try:
        app.test_client().post("/api/detect", data={"file": (io.BytesIO(_noisy_png(0.6)), "x.png")},
                               content_type="multipart/form-data")
    finally:
        audit.armed = False
    assert audit.events, "werkzeug's spooled temporary file went unnoticed"


@pytest.mark.attack("E3", "stall Triton (SIGSTOP) under a client")
@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_stalled_triton_costs_a_caller_at_most_its_timeout(triton_server, protocol):
    """SIGSTOP the real server: connections are accepted by the kernel but nothing answers."""
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    web = create_app(url, protocol=protocol, timeout_s=1.0).test_client()
    with DeepfakeClient(url, protocol=protocol, model="deepfake_cnn", timeout_s=1.0, retries=0) as client:
        client.model_info()
        os.kill(triton_server.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError, match="within 1 s"):
                client.detect(Image.new("RGB", (64, 64)))
            client_seconds = time.monotonic() - started
            started = time.monotonic()
            response = web.post("/api/detect", data={"file": (io.BytesIO(_noisy_png(0.05)), "a.png")},
                                content_type="multipart/form-data")
            web_seconds = time.monotonic() - started
        finally:
            os.kill(triton_server.pid, signal.SIGCONT)
        assert client_seconds < 5.0 and web_seconds < 10.0, (client_seconds, web_seconds)
        # reachable but silent: a gateway timeout that says so, not "cannot be reached"
        assert response.status_code == 504 and "did not answer within 1 s" in response.get_json()["error"]
        assert client.detect(Image.new("RGB", (64, 64))).label  # and it serves again once resumed


@pytest.mark.attack("E4", "ask for a batch of 10,000 through the client; send 33 straight to Triton")
@pytest.mark.server
def test_batches_are_capped_by_the_model_and_enforced_by_triton(triton_server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    with DeepfakeClient(triton_server.grpc_url, model="deepfake_cnn") as client:
        info = client.model_info()
        images = [Image.new("RGB", (80 + i, 64)) for i in range(info.max_batch_size + 8)]
        results = client.detect_many(images, batch_size=10_000)  # capped to max_batch_size per request
    assert all(result.ok for result in results)
    side = info.card.input_size
    too_many = np.zeros((info.max_batch_size + 1, 3, side, side), dtype=np.uint8)
    request = grpcclient.InferInput("image", list(too_many.shape), "UINT8")
    request.set_data_from_numpy(too_many)
    raw = grpcclient.InferenceServerClient(triton_server.grpc_url)
    with pytest.raises(InferenceServerException, match=f"batch-size must be <= {info.max_batch_size}"):
        raw.infer("deepfake_cnn", [request])
    raw.close()


def test_web_verb_limits_are_set_from_the_command_line(tmp_path):
    """``deepfake-edge web`` as a user runs it: a pixel limit of 1,000 refuses a 100 x 100 image."""
    command = [sys.executable, "-m", "deepfake_edge.cli", "web", "--triton-url", f"127.0.0.1:{free_port()}",
               "--port", "0", "--max-pixels", "1000", "--timeout", "2", "--max-upload-mb", "0.5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = _wait_for_url(process)
        listening = [c.laddr for c in psutil.Process(process.pid).net_connections("inet") if c.status == "LISTEN"]
        assert [address.ip for address in listening] == ["127.0.0.1"]
        buffer = io.BytesIO()
        Image.new("RGB", (100, 100)).save(buffer, format="PNG")
        status, body = post_file(f"{url}/api/detect", "a.png", buffer.getvalue())
        assert status == 400 and "limit 1,000" in body["error"], body
        status, body = post_file(f"{url}/api/detect", "b.png", bytes(600 * 1024))
        assert status == 413 and "512 KB" in body["error"], body
    finally:
        stop_process(process)
    assert process.returncode == 0


def _wait_for_url(process: subprocess.Popen) -> str:
    found: list[str] = []

    def read() -> None:
        for line in process.stdout:
            match = re.search(r"http://127\.0\.0\.1:\d+", line)
            if match:
                found.append(match.group(0))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not found and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert found, "the web verb did not print its URL"
    return found[0]
