"""The benchmark harness: the naive server answers like PyTorch in-process, and ``bench --quick`` runs end to end.

Speed targets are NOT asserted here (they live in the benchmark's printed ratios); these tests check
that every stage ran, produced sane non-zero figures and wrote its files, and that nothing is left running.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_edge.benchmarks.loadgen import run_closed_loop
from deepfake_edge.benchmarks.naive_server import NaiveServer, predict_sender, request
from deepfake_edge.benchmarks.workload import build_workload
from deepfake_edge.checkpoint import load_checkpoint, save_checkpoint
from deepfake_edge.model_card import ModelCard
from deepfake_edge.models import build_model
from deepfake_edge.preprocessing import Preprocessor, normalize
from deepfake_edge.server.triton import free_port


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    card = ModelCard(arch="small_cnn", input_size=96, resize_size=110)
    return save_checkpoint(tmp_path_factory.mktemp("bench") / "small_cnn.safetensors", build_model("small_cnn"), card)


@pytest.fixture(scope="module")
def naive_server(small_checkpoint):
    with NaiveServer(small_checkpoint, free_port()) as server:
        yield server
    assert server.process is None


def _in_process_probability(checkpoint, data: bytes) -> float:
    model, card = load_checkpoint(checkpoint)
    tensor = torch.from_numpy(Preprocessor.from_card(card)(data)[None])
    with torch.inference_mode():
        return float(torch.sigmoid(model(normalize(tensor, card.mean, card.std)))[0, 0])


def test_naive_server_answers_like_pytorch_in_process(naive_server, small_checkpoint):
    workload = build_workload(ModelCard(arch="small_cnn", input_size=96, resize_size=110))
    send = predict_sender(naive_server.port, workload.encoded)
    for number in (0, 5, 17):
        answer = send(number)
        expected = _in_process_probability(small_checkpoint, workload.encoded[number])
        assert answer["fake_probability"] == pytest.approx(expected, abs=1e-5)
        assert answer["label"] in ("Real", "Fake") and 0.5 <= answer["confidence"] <= 1.0


def test_naive_server_rejects_a_bad_image_and_keeps_serving(naive_server):
    status, answer = request(naive_server.port, "POST", "/predict", b"not an image at all")
    assert status == 400 and "not an image" in answer["error"]
    buffer = io.BytesIO()
    Image.new("RGB", (200, 150), (10, 200, 30)).save(buffer, format="PNG")
    status, answer = request(naive_server.port, "POST", "/predict", buffer.getvalue())
    assert status == 200 and 0.0 <= answer["fake_probability"] <= 1.0


def test_closed_loop_is_bounded_in_requests_and_counts_errors(naive_server):
    workload = build_workload(ModelCard(arch="small_cnn", input_size=96, resize_size=110))
    result = run_closed_loop("naive", lambda: predict_sender(naive_server.port, workload.encoded), concurrency=3,
                             max_requests=12, max_seconds=60)
    assert result.requests == 12 and result.errors == 0
    assert 0 < result.p50_ms <= result.p95_ms <= result.p99_ms and result.throughput > 0

    def failing_sender():
        def send(number):
            if number >= 0 and number % 2:
                raise RuntimeError("boom")
            return number
        return send

    result = run_closed_loop("failing", failing_sender, concurrency=2, max_requests=10, max_seconds=10)
    assert (result.requests, result.errors, result.first_error) == (5, 5, "RuntimeError: boom")


def test_workload_bytes_preprocess_to_its_tensors():
    card = ModelCard(arch="small_cnn", input_size=96, resize_size=110)
    workload = build_workload(card)
    assert len(workload) == 32 and workload.tensors.shape == (32, 3, 96, 96) and workload.tensors.dtype == np.uint8
    assert np.array_equal(Preprocessor.from_card(card)(workload.encoded[7]), workload.tensors[7])
    assert len({t.tobytes() for t in workload.tensors}) == 32  # distinct images


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(900)  # includes building the shared demo_repository if this test is the first to need it
def test_bench_quick_runs_every_stage_end_to_end(demo_repository, small_checkpoint, tmp_path):
    repository = demo_repository / "embedded"
    models = [m for m in ("deepfake_b0", "deepfake_b0_int8") if (repository / m / "config.pbtxt").is_file()]
    assert "deepfake_b0" in models
    out = tmp_path / "bench"
    command = [sys.executable, "-m", "deepfake_edge.cli", "bench", "--quick", "--out", str(out),
               "--repository", str(repository), "--models", *models]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:  # as a person would: Ctrl-C first, so the bench stops what it started
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, output[-4000:]
    assert "served/in-process" in output and "wrote" in output

    results = json.loads((out / "bench.json").read_text())
    assert results["failures"] == [] and results["mode"] == "quick"
    assert results["machine"]["cpu_cores"] >= 1 and results["machine"]["onnxruntime"]
    engine = results["engine"]
    assert {(r["engine"], r["precision"]) for r in engine} >= {("onnxruntime", "fp32")}
    assert all(r["images_per_s"] > 0 and r["ms_per_batch"] > 0 for r in engine)
    systems = {r["system"] for r in results["load"]}
    assert {"triton-grpc-fp32", "triton-http-fp32", "flask-torch-fp32"} <= systems
    for row in results["load"]:
        assert row["requests"] > 0 and row["errors"] == 0 and row["throughput"] > 0, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
    served = [r for r in results["load"] if r["system"].startswith("triton")]
    assert all(r["mean_batch"] >= 1 for r in served)
    assert max(r["mean_batch"] for r in served if r["concurrency"] > 1) > 1  # the dynamic batcher batched
    assert results["perf_analyzer"] and all(r["throughput"] > 0 for r in results["perf_analyzer"])
    names = [r["name"] for r in results["ratios"]]
    assert any(n.startswith("served/in-process fp32") for n in names)
    assert any(n.startswith("throughput triton-grpc-fp32/flask-torch-fp32") for n in names)
    assert all(math.isfinite(r["value"]) and r["value"] > 0 for r in results["ratios"])

    markdown = (out / "bench.md").read_text()
    assert "## Engine limit" in markdown and "## Ratios" in markdown and "flask-torch-fp32" in markdown
    for name in ("latency_vs_throughput.png", "latency_vs_concurrency.png", "engine.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300
    # this module's own naive_server fixture may still be up: it serves small_checkpoint, the bench does not
    _assert_nothing_left_running(process.pid, repository, not_ours=str(small_checkpoint))


def _assert_nothing_left_running(bench_pid: int, repository, not_ours: str) -> None:
    import psutil

    def leftovers() -> list[str]:
        found = []
        for process in psutil.process_iter(["pid", "cmdline", "status"]):
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(process.info["cmdline"] or [])
            if f"--model-repository={repository.resolve()}" in cmdline and process.info["pid"] != os.getpid():
                # the session's own triton_server fixture may serve the same repository: only ours count
                if f"dfe{bench_pid}_" in cmdline:
                    found.append(cmdline)
            if "deepfake_edge.benchmarks.naive_server" in cmdline and not_ours not in cmdline:
                found.append(cmdline)
        return found

    # Children get SIGTERM from the kernel when the bench exits (PR_SET_PDEATHSIG) and need a moment to
    # finish exiting on a loaded machine: poll, bounded, before calling anything a leak.
    deadline = time.monotonic() + 20
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left
    assert not [p for p in os.listdir("/dev/shm") if f"dfe{bench_pid}_" in p]
