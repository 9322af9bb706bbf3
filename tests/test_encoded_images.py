"""``deepfake_image``: encoded files in, the detector's verdict out (docs/encoded_images.md).

Against the real tritonserver of the session fixture ``triton_server`` (tests/conftest.py: the demo export,
free 127.0.0.1 ports, stopped at the end), with the real ``curl`` binary and stock tritonclient. The
reference scores come from the project's client in fast mode (client-side preprocessing to deepfake_b0).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from client_samples import png_bomb
from encoded_samples import config, curl_example, encode, model_counts, run_curl
from deepfake_edge.benchmarks.workload import packaged_photos
from deepfake_edge.cli import main
from deepfake_edge.client import DeepfakeClient
from deepfake_edge.serving_contract import (
    DECODE_MODEL,
    DEFAULT_MODEL,
    IMAGE_BYTES_INPUT,
    IMAGE_MODEL,
    INPUT_NAME,
    OUTPUT_NAMES,
)

ROOT = Path(__file__).resolve().parents[1]
PARITY_IMAGES = 100
PARITY_TOLERANCE = 1e-4  # the same rows through the same graph: only batch composition differs
FORMATS = (("JPEG", {"quality": 90}), ("PNG", {}), ("WEBP", {"quality": 90}))


def parity_images(count: int = PARITY_IMAGES) -> list[bytes]:
    """``count`` distinct photos: the packaged ones cut and resized to various sizes and aspect ratios (both
    orientations, some smaller than the model's resize size), as JPEG, PNG and WebP in turn."""
    photos = list(packaged_photos().values())
    images = []
    for index in range(count):
        photo = photos[index % len(photos)]
        width, height = photo.size
        # A crop from 45-100 % of each side, placed along the diagonal, then resized to 180-900 px wide.
        share_x, share_y = 0.45 + 0.55 * ((index * 37) % 100) / 100, 0.45 + 0.55 * ((index * 61) % 100) / 100
        crop_w, crop_h = max(16, int(width * share_x)), max(16, int(height * share_y))
        left, top = (width - crop_w) * (index % 5) // 4, (height - crop_h) * (index % 3) // 2
        crop = photo.crop((left, top, left + crop_w, top + crop_h))
        new_width = 180 + (index * 53) % 720
        crop = crop.resize((new_width, max(16, round(crop_h * new_width / crop_w))), Image.Resampling.BILINEAR)
        image_format, options = FORMATS[index % len(FORMATS)]
        images.append(encode(crop, image_format, **options))
    assert len(set(images)) == count
    return images


def infer_encoded_grpc(client: grpcclient.InferenceServerClient, files: list[bytes]) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput(IMAGE_BYTES_INPUT, [len(files), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data] for data in files], dtype=object))
    result = client.infer(IMAGE_MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in OUTPUT_NAMES])
    return {name: result.as_numpy(name) for name in OUTPUT_NAMES}


def client_fast_scores(url: str, files: list[bytes]) -> np.ndarray:
    """Fake probabilities of ``files`` from the project's client: preprocessing here, deepfake_b0 served."""
    with DeepfakeClient(url, model=DEFAULT_MODEL, provenance=False) as client:
        detections = client.detect_many(files, mode="fast")
    return np.array([detection.fake_probability for detection in detections], dtype=np.float64)


# -- the repository the export writes -----------------------------------------------------------------------

def test_the_export_writes_the_ensemble_and_its_decoding_step(demo_repository: Path) -> None:
    embedded = demo_repository / "embedded"
    detector, ensemble, decode = (config(embedded / name) for name in (DEFAULT_MODEL, IMAGE_MODEL, DECODE_MODEL))
    # Names as docs/encoded_images.md publishes them to clients.
    assert (IMAGE_MODEL, IMAGE_BYTES_INPUT, DECODE_MODEL) == ("deepfake_image", "image_bytes", "deepfake_image_decode")
    for model in (ensemble, decode):
        assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in model.input] == [
            ("image_bytes", "TYPE_STRING", [1])]
        assert model.max_batch_size == detector.max_batch_size
        assert model.parameters["model_card"].string_value == detector.parameters["model_card"].string_value
    assert ensemble.platform == "ensemble" and list(ensemble.output) == list(detector.output)
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, dict(first.input_map)) == (DECODE_MODEL, {IMAGE_BYTES_INPUT: IMAGE_BYTES_INPUT})
    assert (second.model_name, second.model_version) == (DEFAULT_MODEL, -1)
    assert dict(first.output_map) == {INPUT_NAME: INPUT_NAME} == dict(second.input_map)
    assert dict(second.output_map) == {name: name for name in OUTPUT_NAMES}
    assert (embedded / IMAGE_MODEL / "1").is_dir()
    # The decoding step outputs exactly the detector's input and runs the project's model file.
    described = [[(t.name, t.data_type, list(t.dims)) for t in tensors] for tensors in (decode.output, detector.input)]
    assert described[0] == described[1] and decode.backend == "python"
    assert decode.instance_group[0].count == detector.instance_group[0].count
    model_py = embedded / DECODE_MODEL / "1" / "model.py"
    assert model_py.read_bytes() == (ROOT / "export" / "triton_image_model.py").read_bytes()
    # The stock NGC image has no deepfake_edge for it to import (docs/encoded_images.md).
    assert not (demo_repository / "ngc" / IMAGE_MODEL).exists() and not (demo_repository / "ngc" / DECODE_MODEL).exists()


def test_if_missing_adds_them_to_a_repository_exported_before_them(demo_repository: Path, tmp_path: Path,
                                                                     capsys) -> None:
    out = tmp_path / "repo"
    shutil.copytree(demo_repository / "embedded", out / "embedded")  # copy2: mtimes kept, so it is up to date
    for name in (IMAGE_MODEL, DECODE_MODEL):
        shutil.rmtree(out / "embedded" / name)
    assert main(["export", "--if-missing", "--out", str(out)]) == 0
    assert "wrote the encoded-image models" in capsys.readouterr().out
    for name in (IMAGE_MODEL, DECODE_MODEL):
        assert config(out / "embedded" / name) == config(demo_repository / "embedded" / name)
    assert main(["export", "--if-missing", "--out", str(out)]) == 0
    assert "nothing to do" in capsys.readouterr().out


# -- the served model ---------------------------------------------------------------------------------------


@pytest.mark.server
def test_the_documented_curl_example_gets_the_clients_score(triton_server, tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(parity_images(1)[0])
    result = run_curl(curl_example(IMAGE_MODEL), triton_server.http_url, image)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    answer = json.loads(result.stdout)
    assert answer["model_name"] == IMAGE_MODEL
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert set(outputs) == {"fake_probability", "logit"}
    assert outputs["fake_probability"]["shape"] == [1, 1] and outputs["fake_probability"]["datatype"] == "FP32"
    probability = outputs["fake_probability"]["data"][0]
    assert abs(probability - client_fast_scores(triton_server.grpc_url, [image.read_bytes()])[0]) <= PARITY_TOLERANCE
    assert abs(probability - 1 / (1 + np.exp(-outputs["logit"]["data"][0]))) <= 1e-5


@pytest.mark.server
def test_scores_equal_client_side_preprocessing_on_100_photos(triton_server) -> None:
    files = parity_images()
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        served = [infer_encoded_grpc(client, files[start:start + 10]) for start in range(0, len(files), 10)]
    finally:
        client.close()
    probabilities = np.concatenate([batch["fake_probability"][:, 0] for batch in served])
    assert all(batch["heatmap"].shape[1:] == (7, 7) for batch in served)
    expected = client_fast_scores(triton_server.grpc_url, files)
    assert len(probabilities) == len(expected) == PARITY_IMAGES
    assert np.abs(probabilities - expected).max() <= PARITY_TOLERANCE
    assert np.ptp(expected) > 0.05, "the photos should not all score alike"


BAD_FILES = {  # name -> (encoded file, what the error must say)
    "not an image": (b"meeting notes, not a photograph\n", "not an image"),
    "truncated JPEG": (None, "truncated"),
    "50000x50000 PNG bomb": (png_bomb(50_000, 50_000), "too large"),
    "40 x 4000 PNG": (encode(Image.new("L", (40, 4000))), "too elongated"),
}


@pytest.mark.server
@pytest.mark.attack("E11", "send a 50000x50000 PNG bomb header, a truncated JPEG, a 40x4000 strip and a non-image as image_bytes to deepfake_image, batched with a good photo")
def test_bad_files_fail_their_own_requests_and_the_batch_they_shared_is_scored(triton_server, record_property) -> None:
    good = parity_images(1)[0]
    bad = {name: (data if data is not None else good[: len(good) // 2], reason)
           for name, (data, reason) in BAD_FILES.items()}
    # Two slow requests (16 large JPEGs each) keep both decoding instances busy, so the requests sent next
    # wait in the decoder's queue and the dynamic batcher hands them to one execution together.
    large = encode(packaged_photos()["astronaut"].resize((3000, 3000)), "JPEG", quality=95)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    answers: dict[str, list] = {}

    def send(name: str, files: list[bytes]) -> None:
        tensor = grpcclient.InferInput(IMAGE_BYTES_INPUT, [len(files), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data] for data in files], dtype=object))
        client.async_infer(IMAGE_MODEL, [tensor], lambda result, error: answers.setdefault(name, [result, error]))

    try:
        before = model_counts(triton_server, DECODE_MODEL)
        send("slow 1", [large] * 16)
        send("slow 2", [large] * 16)
        time.sleep(0.3)
        for name, (data, _) in bad.items():
            send(name, [data])
        send("good", [good])
        deadline = time.monotonic() + 120
        while len(answers) < len(bad) + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        after = model_counts(triton_server, DECODE_MODEL)
        assert len(answers) == len(bad) + 3, f"answers missing after 120 s: got {sorted(answers)}"
        for name, (_, reason) in bad.items():
            result, error = answers[name]
            assert result is None and isinstance(error, InferenceServerException), name
            assert error.status() == "StatusCode.INVALID_ARGUMENT", (name, error.status())
            assert f"{IMAGE_BYTES_INPUT}[0]: " in error.message() and reason in error.message(), (name, error.message())
        for name in ("good", "slow 1", "slow 2"):
            assert answers[name][1] is None, (name, answers[name][1])
        probability = answers["good"][0].as_numpy("fake_probability")[0, 0]
        assert abs(probability - client_fast_scores(triton_server.grpc_url, [good])[0]) <= PARITY_TOLERANCE
        # The five small requests went through the decoder in one execution, beside the two slow ones.
        # (Triton counts a Python model's error responses as successes: only the totals are checked.)
        requests = sum(after[key] - before[key] for key in ("succeeded", "failed"))
        assert (requests, after["executions"] - before["executions"]) == (len(bad) + 3, 3), (before, after)
        # And the model still serves.
        assert client.is_model_ready(IMAGE_MODEL) and client.is_model_ready(DECODE_MODEL)
        record_property("outcome", "each bad file INVALID_ARGUMENT naming its item and problem; the good photo in the same execution scored; models ready")
        assert infer_encoded_grpc(client, [good])["fake_probability"][0, 0] == pytest.approx(probability, abs=1e-5)
    finally:
        client.close()


@pytest.mark.server
def test_a_bad_file_in_a_request_of_several_names_its_item_over_http(triton_server) -> None:
    good = parity_images(1)[0]
    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        files = np.array([[good], [good], [BAD_FILES["50000x50000 PNG bomb"][0]]], dtype=object)
        tensor = httpclient.InferInput(IMAGE_BYTES_INPUT, list(files.shape), "BYTES")
        tensor.set_data_from_numpy(files, binary_data=True)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(IMAGE_MODEL, [tensor])
        assert caught.value.status() == "400"
        assert f"{IMAGE_BYTES_INPUT}[2]: image too large" in caught.value.message()
        assert client.is_server_live() and client.is_model_ready(IMAGE_MODEL)
    finally:
        client.close()
