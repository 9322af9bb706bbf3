"""Faults with real processes: Triton crashing (SIGKILL, no graceful unload) under a ``detect_many`` and under
the web app, then coming back; a new model version loaded while requests are in flight.

Each test starts its own tritonserver (the session one must survive) on a copy of the demo repository's
small CNN model, which loads fastest.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge.client import DeepfakeClient, Detection, Failure, ModelNotReadyError, ServerUnreachableError
from deepfake_edge.model_card import ModelCard
from deepfake_edge.server.admin_key import admin_headers
from deepfake_edge.server.triton import SHM_DIR, TritonServer, free_port

pytestmark = pytest.mark.server

MODEL = "deepfake_cnn"
SCORE_TOLERANCE = 1e-5


def _ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


def _copy_model(demo_repository: Path, destination: Path) -> Path:
    shutil.copytree(demo_repository / "embedded" / MODEL, destination / MODEL)
    return destination


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it still does not after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _crash(server: TritonServer) -> None:
    """SIGKILL tritonserver and its stubs (one process group): a crash, not a shutdown."""
    os.killpg(server.pid, signal.SIGKILL)
    wait_until(lambda: not server.is_running(), 10, "tritonserver to die after SIGKILL")


def _write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` distinct real photographs (crops of scikit-image's), so each has its own score."""
    import skimage.data

    folder.mkdir()
    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket()]
    paths = []
    for index in range(count):
        pixels = photos[index % len(photos)]
        top, left = 7 * index % 60, 11 * index % 90
        path = folder / f"photo_{index:02d}.jpg"
        Image.fromarray(pixels[top : top + 240, left : left + 300]).save(path, quality=90)
        paths.append(path)
    return paths


def test_triton_crash_mid_detect_many_fails_exactly_the_unanswered_images_and_a_rerun_completes(
    demo_repository, tmp_path
):
    repository = _copy_model(demo_repository, tmp_path / "repository")
    paths = _write_photos(tmp_path / "photos", 40)
    ports = _ports()
    with TritonServer(repository, **ports) as server:
        client = DeepfakeClient(server.grpc_url, model=MODEL, timeout_s=60, retries=1)
        # Logit + heatmap tell the images apart, so a result given to the wrong image cannot go unnoticed
        # (a trained model's heatmap alone can be all zero for several clearly real images).
        reference = {r.source: r for r in client.detect_many(paths, concurrency=2, batch_size=2, heatmap=True)}
        fingerprints = np.stack([np.append(reference[path].heatmap.ravel(), reference[path].logit) for path in paths])
        pairwise = np.abs(fingerprints[:, None] - fingerprints[None]).max(axis=-1)
        assert pairwise[np.triu_indices(len(paths), 1)].min() > 1e-3
        results = []
        for result in client.iter_detect(paths, concurrency=2, batch_size=2, heatmap=True):
            results.append(result)
            if len(results) == 6:  # later chunks are queued or in flight right now
                _crash(server)
    assert not list(SHM_DIR.glob(f"{server.shm_prefix}*")), "stop() after a crash removes the shared memory"

    assert [r.source for r in results] == paths, "one result per image, in order"
    detections = [r for r in results if isinstance(r, Detection)]
    failures = [r for r in results if isinstance(r, Failure)]
    assert results[:6] == detections[:6] and failures, "the crash must hit inputs still queued or in flight"
    for detection in detections:  # never an answer the server did not give for that very image
        _assert_same_answer(detection, reference[detection.source])
    for failure in failures:
        assert isinstance(failure.error, (ServerUnreachableError, ModelNotReadyError)), failure.error
        assert server.grpc_url in failure.reason
    failed = [failure.source for failure in failures]

    with TritonServer(repository, **ports):  # "serve" again on the same ports; the same client recovers
        rerun = client.detect_many(failed, concurrency=2, batch_size=2, heatmap=True)
    client.close()
    assert [r.source for r in rerun] == failed
    assert all(isinstance(r, Detection) for r in rerun), [r.reason for r in rerun if not r.ok]
    for detection in rerun:
        _assert_same_answer(detection, reference[detection.source])


def _assert_same_answer(detection: Detection, reference: Detection) -> None:
    assert abs(detection.fake_probability - reference.fake_probability) < SCORE_TOLERANCE
    np.testing.assert_allclose(detection.heatmap, reference.heatmap, atol=1e-4)


def test_web_app_answers_503_while_triton_is_down_and_recovers_after_restart(demo_repository, tmp_path):
    from web_support import get_json, jpeg_bytes, post_file, running_web_server

    from deepfake_edge.webapp.app import create_app

    repository = _copy_model(demo_repository, tmp_path / "repository")
    ports = _ports()
    image = jpeg_bytes((320, 240))
    with TritonServer(repository, **ports) as server:
        app = create_app(server.grpc_url, models=(MODEL,), timeout_s=60.0)
        with running_web_server(app) as web:
            detect = f"{web}/api/detect"
            assert post_file(detect, "a.jpg", image)[0] == 200
            stop, seen = threading.Event(), []  # seen: every status answered so far, in order

            def upload_until_stopped() -> list[int]:
                statuses = []
                while not stop.is_set():
                    status, body = post_file(detect, "a.jpg", image, timeout_s=120)
                    assert isinstance(body, dict) and ("verdict" in body or body["error"]), body
                    statuses.append(status)
                    seen.append(status)
                return statuses

            with ThreadPoolExecutor(max_workers=4) as pool:
                uploads = [pool.submit(upload_until_stopped) for _ in range(4)]
                try:
                    # Uploads are flowing (answered with 200) before the crash, so some are in flight at it.
                    wait_until(lambda: seen.count(200) >= 4 or any(u.done() for u in uploads), 120,
                               "four uploads answered 200 before the crash")
                    _crash(server)
                    answered_before = len(seen)
                    wait_until(lambda: 503 in seen[answered_before:] or any(u.done() for u in uploads), 60,
                               "an upload answered 503 after the crash")
                finally:
                    stop.set()
                statuses = [status for future in uploads for status in future.result()]
            server.stop()
            assert set(statuses) <= {200, 503} and 503 in statuses, sorted(set(statuses))
            status, body = post_file(detect, "a.jpg", image)
            assert status == 503 and "cannot be reached" in body["error"], body
            assert get_json(f"{web}/api/health")[0] == 503

            with TritonServer(repository, **ports):  # Triton back, the web app never restarted
                status, body = post_file(detect, "a.jpg", image)
                assert status == 200 and body["model"] == MODEL, body
                assert get_json(f"{web}/api/health")[0] == 200


def _served_card(repository: Path) -> ModelCard:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((repository / MODEL / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return ModelCard.from_json(config.parameters["model_card"].string_value)


def _add_version(repository: Path, card: ModelCard, seed: int, workdir: Path) -> Path:
    """Export freshly initialised weights of the same architecture as the next version, the way
    ``deepfake-edge export`` adds one (export.repository.write_model); returns the version folder."""
    import torch

    from deepfake_edge.export.graph import export_onnx, feature_map_size
    from deepfake_edge.export.repository import ModelSpec, embedded_config, write_model
    from deepfake_edge.models import build_model

    torch.manual_seed(seed)
    model = build_model(card.arch).eval()
    onnx_path = export_onnx(model, card, workdir / f"seed{seed}.onnx")
    spec = ModelSpec(MODEL, onnx_path, card, feature_map_size(model, card.input_size), "fp32")
    return write_model(repository, spec, embedded_config(spec), python_backend=True)


def _onnx_probability(version_dir: Path, rows: np.ndarray) -> float:
    """The fake probability of the single (fast mode) row the client sends, computed by the ONNX file itself."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    [probability] = session.run(["fake_probability"], {"image": rows})[0].reshape(-1)
    return float(probability)


def test_loading_new_versions_under_load_loses_no_request(demo_repository, tmp_path):
    import tritonclient.http as httpclient

    from client_samples import photo

    repository = _copy_model(demo_repository, tmp_path / "repository")
    card = _served_card(repository)
    # Explicit model control: versions change only when asked (serve exposes it as --triton-arg).
    control = ["--model-control-mode=explicit", f"--load-model={MODEL}"]
    with TritonServer(repository, extra_args=control, **_ports()) as server:
        image = photo("chelsea")
        # Fast mode: one row per image, so each answer is one version's output for exactly that row.
        with DeepfakeClient(server.grpc_url, model=MODEL) as probe:
            tensor = probe.preprocess(image, mode="fast")
        assert tensor.shape[0] == 1, tensor.shape
        expected = {"1": _onnx_probability(repository / MODEL / "1", tensor)}
        stop, answers, errors = threading.Event(), [], []

        def detect_until_stopped() -> None:
            with DeepfakeClient(server.grpc_url, model=MODEL, timeout_s=120, retries=0) as client:
                while not stop.is_set():
                    try:
                        detection = client.detect(image, mode="fast")
                        answers.append((detection.model_version, detection.fake_probability))
                    except Exception as error:  # any lost request fails the test below
                        errors.append(repr(error))

        def wait_for_answers(count: int) -> None:
            start = len(answers)
            wait_until(lambda: len(answers) >= start + count or bool(errors), 60,
                       f"{count} more answers (had {start}; errors: {errors[:3]})")

        admin = httpclient.InferenceServerClient(server.http_url)
        key = admin_headers(server.admin_key)  # loading models is an admin API
        with ThreadPoolExecutor(max_workers=4) as pool:
            threads = [pool.submit(detect_until_stopped) for _ in range(4)]
            try:
                for version, seed in (("2", 2), ("3", 3)):
                    wait_for_answers(20)
                    version_dir = _add_version(repository, card, seed, tmp_path)
                    assert version_dir.name == version
                    expected[version] = _onnx_probability(version_dir, tensor)
                    admin.load_model(MODEL, headers=key)  # returns once the new version serves; the old ones keep serving
                    wait_for_answers(20)
            finally:
                stop.set()
                for thread in threads:
                    thread.result()
        index = {entry["version"]: entry.get("state") for entry in admin.get_model_repository_index(headers=key)
                 if entry["name"] == MODEL}
        admin.close()

    assert not errors, errors[:5]
    assert {version for version, _ in answers} == {"1", "2", "3"}
    assert len({round(p, 6) for p in expected.values()}) == 3, "each version has its own weights"
    for version, probability in answers:  # each answer came from the version it names
        assert abs(probability - expected[version]) < SCORE_TOLERANCE, (version, probability, expected)
    assert answers[-1][0] == "3"
    # The version policy (latest 2) unloaded version 1 once version 3 was ready.
    assert index.get("3") == "READY" and index.get("2") == "READY" and index.get("1") != "READY", index
