"""The real tritonserver on the exported repository, queried with stock tritonclient and perf_analyzer.

Uses the session fixture ``triton_server`` (tests/conftest.py): one server for the whole suite, on free
loopback ports, on the ``demo_repository`` the export tests build.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import Preprocessor
from deepfake_edge.server.admin_key import admin_headers
from deepfake_edge.server.perf import run_perf_analyzer
from deepfake_edge.server.triton import TritonServer, has_cuda_gpu
from deepfake_edge.serving_contract import is_detector_model, latest_version_dir

pytestmark = pytest.mark.server

OUTPUTS = ("fake_probability", "logit", "heatmap")
# Same ONNX file, same onnxruntime: only thread scheduling and batch composition differ.
TOLERANCE = {"fake_probability": 1e-5, "logit": 1e-4, "heatmap": 1e-4}


def http_get_json(url: str, headers: dict[str, str] | None = None) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
        return json.load(response)


def served_models(server: TritonServer) -> list[str]:
    """The detectors served (UINT8 ``image`` in); the encoded-image models: tests/test_encoded_images.py."""
    return sorted({entry["name"] for entry in server.repository_index() if is_detector_model(entry["name"])})


def model_card(server: TritonServer, model: str) -> ModelCard:
    config = http_get_json(f"http://{server.http_url}/v2/models/{model}/config")
    return ModelCard.from_json(config["parameters"]["model_card"]["string_value"])


def photo_batch(card: ModelCard, count: int = 4) -> np.ndarray:
    """Real photographs through the shared preprocessing: UINT8 (count, 3, H, W)."""
    import skimage.data
    from PIL import Image

    preprocess = Preprocessor.from_card(card)
    names = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")[:count]
    return np.stack([preprocess(Image.fromarray(getattr(skimage.data, name)())) for name in names])


def latest_onnx(server: TritonServer, model: str) -> Path:
    return latest_version_dir(server.model_repository / model) / "model.onnx"


def in_process(server: TritonServer, model: str, images: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(latest_onnx(server, model)), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"image": images})))


def infer_http(url: str, model: str, images: np.ndarray) -> dict[str, np.ndarray]:
    client = httpclient.InferenceServerClient(url)
    tensor = httpclient.InferInput("image", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images, binary_data=True)
    result = client.infer(model, [tensor],
                          outputs=[httpclient.InferRequestedOutput(n, binary_data=True) for n in OUTPUTS])
    return {name: result.as_numpy(name) for name in OUTPUTS}


def infer_grpc(client: grpcclient.InferenceServerClient, model: str, images: np.ndarray) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput("image", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUTS])
    return {name: result.as_numpy(name) for name in OUTPUTS}


def model_statistics(server: TritonServer, model: str) -> dict:
    stats = http_get_json(f"http://{server.http_url}/v2/models/{model}/stats",
                          headers=admin_headers(server.admin_key))["model_stats"]
    return max(stats, key=lambda entry: int(entry["version"]))


def test_health_and_server_metadata(triton_server: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    assert client.is_server_live() and client.is_server_ready()
    assert grpcclient.InferenceServerClient(triton_server.grpc_url).is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "triton" and metadata["version"].startswith("2.")


def test_every_model_is_ready_with_the_contract_metadata(triton_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    models = served_models(triton_server)
    assert "deepfake_b0" in models
    for model in models:
        assert client.is_model_ready(model)
        card = model_card(triton_server, model)
        metadata = client.get_model_metadata(model, as_json=True)
        (image,) = metadata["inputs"]
        assert (image["name"], image["datatype"]) == ("image", "UINT8")
        assert [int(d) for d in image["shape"]] == [-1, 3, card.input_size, card.input_size]
        assert {output["name"]: output["datatype"] for output in metadata["outputs"]} == dict.fromkeys(OUTPUTS, "FP32")


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_results_equal_in_process_onnxruntime(triton_server: TritonServer, protocol: str) -> None:
    for model in served_models(triton_server):
        images = photo_batch(model_card(triton_server, model))
        if protocol == "http":
            served = infer_http(triton_server.http_url, model, images)
        else:
            served = infer_grpc(grpcclient.InferenceServerClient(triton_server.grpc_url), model, images)
        expected = in_process(triton_server, model, images)
        for name in OUTPUTS:
            assert served[name].shape == expected[name].shape, (model, name)
            np.testing.assert_allclose(served[name], expected[name], rtol=0, atol=TOLERANCE[name],
                                       err_msg=f"{model} {name}")
        assert 0.0 <= served["fake_probability"].min() and served["fake_probability"].max() <= 1.0


def test_dynamic_batching_batches_concurrent_single_image_requests(triton_server: TritonServer) -> None:
    model = "deepfake_b0"
    images = photo_batch(model_card(triton_server, model), count=1)
    requests = 24
    clients = [grpcclient.InferenceServerClient(triton_server.grpc_url) for _ in range(requests)]
    start_together = threading.Barrier(requests)

    def send(client: grpcclient.InferenceServerClient) -> dict[str, np.ndarray]:
        start_together.wait(timeout=30)
        return infer_grpc(client, model, images)

    before = model_statistics(triton_server, model)
    with ThreadPoolExecutor(max_workers=requests) as pool:
        results = list(pool.map(send, clients))
    after = model_statistics(triton_server, model)
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == requests
    assert executions < inferences, f"{requests} concurrent requests ran as {executions} executions: no batching"
    first = results[0]["fake_probability"]
    assert all(np.allclose(result["fake_probability"], first, atol=1e-5) for result in results)


def test_prometheus_metrics_count_inferences(triton_server: TritonServer) -> None:
    pattern = re.compile(r'^nv_inference_request_success\{model="deepfake_b0",version="(\d+)"\} (\d+)', re.MULTILINE)

    def successes() -> int:
        with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
            return sum(int(count) for _, count in pattern.findall(response.read().decode()))

    before = successes()
    infer_http(triton_server.http_url, "deepfake_b0", photo_batch(model_card(triton_server, "deepfake_b0"), count=2))
    assert successes() == before + 1


def test_perf_analyzer_runs_unmodified_and_reports_figures(triton_server: TritonServer) -> None:
    images = photo_batch(model_card(triton_server, "deepfake_b0"), count=3)
    rows = run_perf_analyzer(
        triton_server.grpc_url, images, model="deepfake_b0", protocol="grpc", concurrency_range=(1, 2, 1),
        # Any three windows count as stable: this checks that it runs and reports, not how steady the machine is.
        measurement_request_count=10, max_trials=3, stability_percentage=1000, timeout_s=120,
        admin_key=triton_server.admin_key,
    )
    assert [row["concurrency"] for row in rows] == [1, 2]
    for row in rows:
        assert row["throughput_per_s"] > 0
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["server_compute_infer_ms"] > 0
        assert (row["model"], row["protocol"], row["batch_size"]) == ("deepfake_b0", "grpc", 1)


@pytest.mark.gpu
def test_gpu_execution_when_a_gpu_and_onnxruntime_gpu_are_present(triton_server: TritonServer) -> None:
    if not has_cuda_gpu() or "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs an NVIDIA GPU and onnxruntime-gpu (CUDAExecutionProvider)")
    images = photo_batch(model_card(triton_server, "deepfake_b0"))
    served = infer_grpc(grpcclient.InferenceServerClient(triton_server.grpc_url), "deepfake_b0", images)
    np.testing.assert_allclose(served["fake_probability"],
                               in_process(triton_server, "deepfake_b0", images)["fake_probability"], atol=1e-3)
    if shutil.which("nvidia-smi"):
        gpu_pids = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=30).stdout.split()
        stubs = {str(child.pid) for child in psutil.Process(triton_server.pid).children(recursive=True)}
        assert stubs & set(gpu_pids), "no Python-backend stub runs on the GPU"
