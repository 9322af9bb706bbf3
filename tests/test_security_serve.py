"""Attacks on ``deepfake-edge serve`` as users start it (nginx on the HTTP port, Triton, the web app).

Rows 6, 8 and 9 of RELIABILITY.md's attack table, and Triton's answer to negative dimensions.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.http as httpclient

from deepfake_edge.benchmarks.soak_service import ServeProcess

pytestmark = [pytest.mark.server, pytest.mark.slow]
MODEL = "deepfake_b0"
CLI = [sys.executable, "-m", "deepfake_edge.cli"]


@pytest.fixture(scope="module")
def serve(demo_repository: Path, tmp_path_factory):
    with ServeProcess(demo_repository / "embedded", tmp_path_factory.mktemp("serve")) as service:
        yield service
        assert service.stop() == []


def triton_process(service: ServeProcess) -> psutil.Process:
    (triton,) = [info for info in service.processes() if info.label == "tritonserver"]  # serve's child
    return psutil.Process(triton.pid)


def send_body(address: str, declared_bytes: int | None, sent_bytes: int) -> int:
    """POST a JSON-ish body to Triton's infer endpoint; ``declared_bytes=None`` streams it chunked.

    Returns the HTTP status, however early the server answers (it may stop reading mid-body).
    """
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.putrequest("POST", f"/v2/models/{MODEL}/infer")
        connection.putheader("Content-Type", "text/plain")
        if declared_bytes is None:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", str(declared_bytes))
        connection.endheaders()
        chunk = b'{"id":"' + b"x" * (1 << 20)
        try:
            for _ in range(sent_bytes // len(chunk)):
                if declared_bytes is None:
                    connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                else:
                    connection.send(chunk)
            if declared_bytes is None:
                connection.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the body: its answer is already waiting
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.attack("6", "8 concurrent 200 MB JSON bodies to Triton's HTTP port (took tritonserver to 4.9 GB), "
                         "declared and chunked")
def test_huge_http_bodies_are_refused_before_triton_reads_them(serve: ServeProcess, record_property) -> None:
    triton = triton_process(serve)
    before = triton.memory_info().rss
    peak, stop = [before], threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            peak.append(triton.memory_info().rss)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            declared = [pool.submit(send_body, serve.http_url, 200 << 20, 200 << 20) for _ in range(8)]
            chunked = [pool.submit(send_body, serve.http_url, None, 64 << 20) for _ in range(8)]
            statuses = [future.result() for future in declared + chunked]
    finally:
        stop.set()
        sampler.join()
    growth_mb = (max(peak) - before) / 2**20
    assert statuses == [413] * 16, statuses
    assert growth_mb < 50, f"tritonserver grew {growth_mb:.0f} MB"
    # A legitimate full batch (32 images, binary data) still goes through the gateway.
    client = httpclient.InferenceServerClient(serve.http_url)
    batch = httpclient.InferInput("image", [32, 3, 224, 224], "UINT8")
    batch.set_data_from_numpy(np.zeros((32, 3, 224, 224), dtype=np.uint8))
    assert client.infer(MODEL, [batch]).as_numpy("fake_probability").shape[0] == 32
    client.close()
    assert triton.is_running()
    record_property("outcome", f"413 from nginx for all 16; tritonserver +{growth_mb:.0f} MB; a batch of 32 "
                               "still served")


@pytest.mark.attack("neg-dims", "an HTTP inference whose shape has a negative dimension")
def test_negative_dimensions_are_an_error_not_a_crash(serve: ServeProcess, record_property) -> None:
    body = json.dumps({"inputs": [{"name": "image", "shape": [-1, 3, 224, 224], "datatype": "UINT8",
                                   "data": [0]}]}).encode()
    host, port = serve.http_url.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    # Triton 2.51's JSON parser reports a shape it cannot read as 500 (it does not tell bad input from its
    # own failures there); the request is refused with a message and the server stays up.
    assert response.status in (400, 500) and "shape" in answer["error"], (response.status, answer)
    assert triton_process(serve).is_running()
    assert httpclient.InferenceServerClient(serve.http_url).is_model_ready(MODEL)
    record_property("outcome", f"{response.status} {answer['error'][:60]!r} from Triton; server up")


@pytest.mark.attack("8", "SIGSTOP Triton for 15 s while a web detection is asked for (one request took 20.1 s "
                         "against a 10 s timeout)")
def test_a_stalled_triton_costs_a_web_request_one_timeout(serve: ServeProcess, record_property) -> None:
    from web_support import jpeg_bytes, post_file

    image = jpeg_bytes((320, 240))
    triton = triton_process(serve)
    stubs = triton.children(recursive=True)
    timeout_s = 10.0  # the web app's default
    for process in [triton, *stubs]:
        process.suspend()
    try:
        started = time.monotonic()
        status, body = post_file(f"{serve.web_url}/api/detect", "a.jpg", image, timeout_s=60)
        elapsed = time.monotonic() - started
    finally:
        for process in [triton, *stubs]:
            process.resume()
    assert status == 504 and f"{timeout_s:g} s" in body["error"], (status, body)
    assert elapsed < timeout_s + 2.0, elapsed
    deadline = time.monotonic() + 60
    while (status := post_file(f"{serve.web_url}/api/detect", "a.jpg", image)[0]) != 200:
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
    record_property("outcome", f"504 after {elapsed:.1f} s (timeout {timeout_s:g} s); 200 again once resumed")


@pytest.mark.attack("9", "detect --heatmaps OUT where OUT holds symbolic links to a victim file and to another "
                         "folder; OUT a file")
def test_heatmaps_are_never_written_through_links(serve: ServeProcess, tmp_path: Path, record_property) -> None:
    from client_samples import write_good_images

    photos = tmp_path / "photos"
    write_good_images(photos)
    names = sorted(os.listdir(photos))
    victim, elsewhere, out = tmp_path / "victim.txt", tmp_path / "elsewhere", tmp_path / "out"
    victim.write_text("precious")
    elsewhere.mkdir()
    out.mkdir()
    (out / f"{Path(names[0]).stem}.heatmap.png").symlink_to(victim)  # where detect writes names[0]'s heatmap
    (photos / "sub").mkdir()
    (photos / names[1]).rename(photos / "sub" / names[1])
    (out / "sub").symlink_to(elsewhere)
    command = CLI + ["detect", "--url", serve.grpc_url, "--recursive", "--heatmaps", str(out), str(photos)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 5, result.stdout + result.stderr
    assert result.stderr.count("symbolic link") == 2, result.stderr
    assert victim.read_text() == "precious" and not list(elsewhere.iterdir())
    written = [path for path in out.iterdir() if path.is_file() and not path.is_symlink()]
    assert len(written) == len(names) - 2, "the other heatmaps are still written"

    not_a_folder = subprocess.run(CLI + ["detect", "--url", serve.grpc_url, "--heatmaps", str(victim), str(photos)],
                                  capture_output=True, text=True, timeout=120)
    assert not_a_folder.returncode == 2 and "not a folder" in not_a_folder.stderr
    record_property("outcome", "both links refused by name, exit 5, victim untouched, other heatmaps written; "
                               "OUT a file: exit 2")
