"""Attacks on Triton's own ports by an anonymous caller, against the real server as ``serve`` starts it.

Each test is one row of RELIABILITY.md's attack table (``@pytest.mark.attack``): it makes the attack, asserts
that Triton refuses it, and that the server is still up and serving afterwards.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from deepfake_edge.server.admin_key import admin_headers
from deepfake_edge.server.triton import SHM_DIR, TritonServer, free_port

pytestmark = pytest.mark.server
MODEL = "deepfake_b0"


def http_post(server: TritonServer, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=body, method="POST",
                                     headers={"Content-Type": "text/plain", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def assert_still_serving(server: TritonServer) -> None:
    """Up, and a real inference over both protocols gives the same answer."""
    assert server.is_running(), "tritonserver died"
    image = np.zeros((1, 3, 224, 224), dtype=np.uint8)
    answers = []
    for module, url in ((httpclient, server.http_url), (grpcclient, server.grpc_url)):
        client = module.InferenceServerClient(url)
        infer_input = module.InferInput("image", list(image.shape), "UINT8")
        infer_input.set_data_from_numpy(image)
        answers.append(float(client.infer(MODEL, [infer_input]).as_numpy("fake_probability").ravel()[0]))
        client.close()
    assert answers[0] == pytest.approx(answers[1], abs=1e-6)


def grpc_refusal(call) -> str:
    with pytest.raises(InferenceServerException) as refused:
        call()
    return str(refused.value)


@pytest.mark.attack("1", "register one of the Python backend's own /dev/shm regions as 'steal' (HTTP text/plain "
                         "and gRPC), then aim an inference output at it (crashed the backend: signal 11)")
def test_registering_the_backends_own_shm_region_is_refused(triton_server: TritonServer, record_property) -> None:
    backend_region = sorted(SHM_DIR.glob(f"{triton_server.shm_prefix}*"))[0].name
    body = json.dumps({"key": f"/{backend_region}", "offset": 0, "byte_size": 16777216}).encode()
    status, text = http_post(triton_server, "/v2/systemsharedmemory/region/steal/register", body)
    assert status == 403 and "restricted" in text, (status, text)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    refusal = grpc_refusal(lambda: grpc.register_system_shared_memory("steal", f"/{backend_region}", 16777216))
    assert "restricted" in refusal
    # The output cannot go to a region that was never registered.
    output = grpcclient.InferRequestedOutput("fake_probability")
    output.set_shared_memory("steal", 4)
    image = grpcclient.InferInput("image", [1, 3, 224, 224], "UINT8")
    image.set_data_from_numpy(np.zeros((1, 3, 224, 224), dtype=np.uint8))
    assert "steal" in grpc_refusal(lambda: grpc.infer(MODEL, [image], outputs=[output]))
    grpc.close()
    assert_still_serving(triton_server)
    record_property("outcome", f"HTTP {status} 'This API is restricted'; gRPC refused; server up")


@pytest.mark.attack("2", "write chosen bytes into any /dev/shm object by registering it and sending an input/"
                         "output there")
def test_writing_into_a_foreign_shm_object_is_refused(triton_server: TritonServer, record_property) -> None:
    victim = SHM_DIR / f"deepfake_edge_test_victim_{free_port()}"
    victim.write_bytes(b"untouched" * 16)
    try:
        body = json.dumps({"key": f"/{victim.name}", "offset": 0, "byte_size": 144}).encode()
        status, _ = http_post(triton_server, "/v2/systemsharedmemory/region/victim/register", body)
        assert status == 403
        assert victim.read_bytes() == b"untouched" * 16
    finally:
        victim.unlink()
    assert_still_serving(triton_server)
    record_property("outcome", f"HTTP {status}; the object's bytes unchanged; server up")


@pytest.fixture()
def explicit_mode_server(demo_repository: Path, tmp_path: Path):
    """Triton in explicit model-control mode, as the upgrade recipe in docs/reliability.md runs it."""
    import shutil

    repository = tmp_path / "repository"
    shutil.copytree(demo_repository / "embedded" / MODEL, repository / MODEL)
    control = ["--model-control-mode=explicit", f"--load-model={MODEL}"]
    with TritonServer(repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                      extra_args=control) as server:
        yield server


@pytest.mark.attack("3", "in explicit model-control mode, load a model with a 'file:1/model.py' override "
                         "(ran the payload as the server's user) and unload the served model")
def test_loading_code_and_unloading_models_is_refused(explicit_mode_server: TritonServer, tmp_path: Path,
                                                      record_property) -> None:
    server = explicit_mode_server
    marker = tmp_path / "payload-ran"
    payload = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text('pwned')\n"
               "class TritonPythonModel:\n    def execute(self, requests): return []\n")
    config = json.dumps({"backend": "python", "max_batch_size": 0, "input": [], "output": []})
    load = {"parameters": {"config": config, "file:1/model.py": _base64(payload)}}
    status, text = http_post(server, "/v2/repository/models/x/load", json.dumps(load).encode())
    assert status == 403 and "restricted" in text
    assert http_post(server, f"/v2/repository/models/{MODEL}/unload", b"{}")[0] == 403
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    assert "restricted" in grpc_refusal(lambda: grpc.unload_model(MODEL))
    assert "restricted" in grpc_refusal(lambda: grpc.load_model("x", files={"file:1/model.py": payload.encode()}))
    # The documented upgrade recipe works with the key.
    grpc.load_model(MODEL, headers=admin_headers(server.admin_key, "grpc"))
    grpc.close()
    assert not marker.exists(), "the payload ran"
    assert_still_serving(server)
    record_property("outcome", "HTTP 403 / gRPC refused for load and unload; payload never ran; "
                               "the same load with the admin key works")


def _base64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


@pytest.mark.attack("7", "raise the log level to 10 anonymously (the log then grew 2.3 MB/s under load); "
                         "also trace settings and statistics")
def test_logging_trace_and_statistics_need_the_key(triton_server: TritonServer, record_property) -> None:
    for path, body in (("/v2/logging", {"log_verbose_level": 10}), ("/v2/trace/setting", {"trace_level": ["TIMESTAMPS"]})):
        status, text = http_post(triton_server, path, json.dumps(body).encode())
        assert status == 403 and "restricted" in text, (path, status, text)
    key = admin_headers(triton_server.admin_key)
    status, text = http_post(triton_server, "/v2/logging", b"{}", headers=key)
    assert status == 200 and json.loads(text)["log_verbose_level"] == 0, "the level must be unchanged"
    http = httpclient.InferenceServerClient(triton_server.http_url)
    grpc = grpcclient.InferenceServerClient(triton_server.grpc_url)
    assert "restricted" in grpc_refusal(lambda: grpc.update_log_settings({"log_verbose_level": 10}))
    assert "restricted" in grpc_refusal(lambda: http.get_inference_statistics(MODEL))
    assert "restricted" in grpc_refusal(lambda: grpc.get_inference_statistics(MODEL))
    assert http.get_inference_statistics(MODEL, headers=key)["model_stats"]
    # What the client needs stays open: health, metadata, the model config (it carries the model card).
    assert http.is_server_ready() and grpc.is_model_ready(MODEL)
    assert "model_card" in http.get_model_config(MODEL)["parameters"]
    http.close()
    grpc.close()
    assert_still_serving(triton_server)
    record_property("outcome", "HTTP 403 / gRPC refused; log level unchanged; health, metadata, config, "
                               "inference stay open")
