"""``deepfake_image_whole``: encoded files in, whole-image analysis on the server (docs/encoded_images.md).

Against the real tritonserver of the session fixture ``triton_server`` (tests/conftest.py: the demo export,
free 127.0.0.1 ports, stopped at the end), with the real ``curl`` binary and stock tritonclient. The
reference is the project's client in whole mode (its default): analysis here, deepfake_b0 served.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import InferenceServerException

from client_samples import png_bomb
from encoded_samples import config, curl_example, encode, model_counts, run_curl
from deepfake_edge.benchmarks.workload import packaged_photos
from deepfake_edge.cli import main
from deepfake_edge.client import DeepfakeClient, Detection
from deepfake_edge.model_card import ModelCard
from deepfake_edge.regions import MAX_ANALYSED_SIDE
from deepfake_edge.serving_contract import (
    DEFAULT_MODEL,
    IMAGE_BYTES_INPUT,
    IMAGE_MODEL_DETECTOR,
    OUTPUT_NAMES,
    VERDICT_OUTPUT,
    WHOLE_IMAGE_MODEL,
)

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # the same rows through the same graph: only batch composition differs
VERDICT_KEYS = ["label", "confidence", "fake_probability", "logit", "model", "model_version", "mode", "regions",
                "notes", "threshold"]


def whole_photos() -> dict[str, bytes]:
    """12 files: the packaged photos (the astronaut has a face), one smaller than a tile, one over
    MAX_ANALYSED_SIDE (shrunk, with a note), a portrait crop as PNG, a wide one as WebP."""
    photos = packaged_photos()
    files = {name: encode(photo, "JPEG", quality=90) for name, photo in photos.items()}
    files["small 150x110"] = encode(photos["chelsea"].resize((150, 110)), "JPEG", quality=90)
    files["large 1600x1600"] = encode(photos["astronaut"].resize((1600, 1600)), "JPEG", quality=90)
    files["portrait png"] = encode(photos["coffee"].crop((100, 0, 400, 400)), "PNG")
    files["wide webp"] = encode(photos["rocket"].resize((700, 300)), "WEBP", quality=90)
    assert len(files) == 12
    return files


def infer_whole(client: grpcclient.InferenceServerClient, files: list[bytes]) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput(IMAGE_BYTES_INPUT, [len(files), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data] for data in files], dtype=object))
    names = [*OUTPUT_NAMES, VERDICT_OUTPUT]
    result = client.infer(WHOLE_IMAGE_MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in names])
    return {name: result.as_numpy(name) for name in names}


def client_detections(url: str, paths: list[Path]) -> list[Detection]:
    """The project's client in its default (whole) mode, one ``detect`` per file."""
    with DeepfakeClient(url, model=DEFAULT_MODEL, provenance=False) as client:
        return [client.detect(path, heatmap=True) for path in paths]


def assert_same_verdict(verdict: dict, detection: Detection, card: ModelCard) -> None:
    assert list(verdict) == VERDICT_KEYS
    assert (verdict["label"], verdict["mode"], verdict["model"]) == (detection.label, "whole", DEFAULT_MODEL)
    assert verdict["threshold"] == round(card.image_threshold, 6) and card.image_threshold != card.threshold
    assert abs(verdict["fake_probability"] - detection.fake_probability) <= TOLERANCE
    assert abs(verdict["confidence"] - detection.confidence) <= TOLERANCE
    assert verdict["notes"] == list(detection.notes)
    assert [(r["kind"], r["box"]) for r in verdict["regions"]] == [(r.kind, list(r.box)) for r in detection.regions]
    served = np.array([r["fake_probability"] for r in verdict["regions"]])
    assert np.abs(served - [r.fake_probability for r in detection.regions]).max() <= TOLERANCE


# -- the repository the export writes -----------------------------------------------------------------------

def test_the_export_writes_the_whole_image_model(demo_repository: Path) -> None:
    embedded = demo_repository / "embedded"
    detector, whole = config(embedded / DEFAULT_MODEL), config(embedded / WHOLE_IMAGE_MODEL)
    assert (WHOLE_IMAGE_MODEL, VERDICT_OUTPUT) == ("deepfake_image_whole", "verdict")  # as the docs publish them
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in whole.input] == [
        ("image_bytes", "TYPE_STRING", [1])]
    # The detector's outputs, so a client that reads deepfake_b0 reads this model too, and the JSON verdict.
    assert list(whole.output)[:3] == list(detector.output)
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in whole.output[3:]] == [
        ("verdict", "TYPE_STRING", [1])]
    assert whole.backend == "python" and whole.HasField("dynamic_batching")
    assert whole.parameters["model_card"].string_value == detector.parameters["model_card"].string_value
    assert whole.parameters["detector"].string_value == DEFAULT_MODEL
    assert whole.instance_group[0].count == detector.instance_group[0].count
    model_py = embedded / WHOLE_IMAGE_MODEL / "1" / "model.py"
    assert model_py.read_bytes() == (ROOT / "export" / "triton_whole_image_model.py").read_bytes()
    assert not (demo_repository / "ngc" / WHOLE_IMAGE_MODEL).exists()  # no deepfake_edge in the NGC image


def test_if_missing_adds_it_to_a_repository_exported_before_it(demo_repository: Path, tmp_path: Path,
                                                                 capsys) -> None:
    out = tmp_path / "repo"
    shutil.copytree(demo_repository / "embedded", out / "embedded")  # copy2: mtimes kept, so it is up to date
    shutil.rmtree(out / "embedded" / WHOLE_IMAGE_MODEL)
    assert main(["export", "--if-missing", "--out", str(out)]) == 0
    assert "wrote the encoded-image models" in capsys.readouterr().out
    assert config(out / "embedded" / WHOLE_IMAGE_MODEL) == config(demo_repository / "embedded" / WHOLE_IMAGE_MODEL)
    assert (out / "embedded" / WHOLE_IMAGE_MODEL / "labels.txt").read_text() == "Fake\n"
    assert main(["export", "--if-missing", "--out", str(out)]) == 0
    assert "nothing to do" in capsys.readouterr().out


# -- the served model ---------------------------------------------------------------------------------------

@pytest.mark.server
def test_the_documented_curl_example_gets_the_clients_whole_image_verdict(triton_server, tmp_path: Path) -> None:
    image = tmp_path / "astronaut.jpg"
    image.write_bytes(whole_photos()["astronaut"])
    result = run_curl(curl_example(WHOLE_IMAGE_MODEL), triton_server.http_url, image)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    answer = json.loads(result.stdout)
    assert answer["model_name"] == WHOLE_IMAGE_MODEL
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert set(outputs) == {"fake_probability", "verdict"}
    assert outputs["verdict"]["datatype"] == "BYTES" and outputs["verdict"]["shape"] == [1, 1]
    verdict = json.loads(outputs["verdict"]["data"][0])
    [detection] = client_detections(triton_server.grpc_url, [image])
    card = ModelCard.from_json(config(triton_server.model_repository / WHOLE_IMAGE_MODEL)
                               .parameters["model_card"].string_value)
    assert_same_verdict(verdict, detection, card)
    assert abs(outputs["fake_probability"]["data"][0] - detection.fake_probability) <= TOLERANCE
    assert [r["kind"] for r in verdict["regions"]].count("face") == 1  # the astronaut's face


@pytest.mark.server
def test_whole_image_verdicts_equal_the_clients_on_12_photos(triton_server, tmp_path: Path) -> None:
    files = whole_photos()
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / f"{name.replace(' ', '_')}.img")
        paths[-1].write_bytes(data)
    card = ModelCard.from_json(config(triton_server.model_repository / WHOLE_IMAGE_MODEL)
                               .parameters["model_card"].string_value)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:  # requests of 1, 3, 4 and 4 files: several files' rows share the detector's batches
        data = list(files.values())
        served = [infer_whole(client, data[start:stop]) for start, stop in ((0, 1), (1, 4), (4, 8), (8, 12))]
    finally:
        client.close()
    outputs = {name: np.concatenate([part[name] for part in served]) for name in served[0]}
    detections = client_detections(triton_server.grpc_url, paths)
    for index, (name, detection) in enumerate(zip(files, detections)):
        verdict = json.loads(outputs[VERDICT_OUTPUT][index, 0])
        assert_same_verdict(verdict, detection, card)
        assert abs(outputs["fake_probability"][index, 0] - detection.fake_probability) <= TOLERANCE, name
        assert abs(outputs["logit"][index, 0] - detection.logit) <= 1e-3, name
        # The heatmap output is the deciding region's CAM, in the detector's 7 x 7 shape.
        assert outputs["heatmap"][index].shape == (7, 7) and 0.0 <= outputs["heatmap"][index].min()
    by_name = dict(zip(files, (json.loads(v[0]) for v in outputs[VERDICT_OUTPUT])))
    assert any(note.startswith("image 1600x1600 analysed at") and f"{MAX_ANALYSED_SIDE} px" in note
               for note in by_name["large 1600x1600"]["notes"])
    assert any("smaller than a 224-px tile" in note for note in by_name["small 150x110"]["notes"])
    assert [r["kind"] for r in by_name["small 150x110"]["regions"]] == ["global"]
    assert any(r["kind"] == "face" for r in by_name["astronaut"]["regions"])
    assert np.ptp([d.fake_probability for d in detections]) > 0.05, "the photos should not all score alike"


def post_with_curl(url: str, path: Path) -> subprocess.CompletedProcess:
    script = curl_example(WHOLE_IMAGE_MODEL).replace('--fail-with-body', '-o /dev/stdout -w "\\n%{http_code}"')
    return run_curl(script, url, path)


@pytest.mark.server
def test_a_bad_file_gets_a_400_naming_it_and_the_server_keeps_serving(triton_server, tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"meeting notes, not a photograph\n")
    answer = post_with_curl(triton_server.http_url, bad)
    body, status = answer.stdout.decode().rsplit("\n", 1)
    assert status == "400", answer.stdout
    assert f"{IMAGE_BYTES_INPUT}[0]: not an image" in json.loads(body)["error"]
    # Several files, the third a decompression bomb: the request fails naming it, over HTTP too.
    good = whole_photos()["chelsea"]
    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        files = np.array([[good], [good], [png_bomb(50_000, 50_000)]], dtype=object)
        tensor = httpclient.InferInput(IMAGE_BYTES_INPUT, list(files.shape), "BYTES")
        tensor.set_data_from_numpy(files, binary_data=True)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(WHOLE_IMAGE_MODEL, [tensor])
        assert caught.value.status() == "400"
        assert f"{IMAGE_BYTES_INPUT}[2]: image too large" in caught.value.message()
        assert client.is_server_live() and client.is_model_ready(WHOLE_IMAGE_MODEL)
    finally:
        client.close()
    # And the next request is analysed as usual.
    image = tmp_path / "chelsea.jpg"
    image.write_bytes(good)
    answer = post_with_curl(triton_server.http_url, image)
    body, status = answer.stdout.decode().rsplit("\n", 1)
    assert status == "200", answer.stdout
    verdict = json.loads({o["name"]: o for o in json.loads(body)["outputs"]}["verdict"]["data"][0])
    [detection] = client_detections(triton_server.grpc_url, [image])
    assert abs(verdict["fake_probability"] - detection.fake_probability) <= TOLERANCE


@pytest.mark.server
def test_a_photos_rows_run_on_both_detector_instances(triton_server) -> None:
    """Sent at the same instant, the two halves of a photo's rows were merged by the detector's batcher into
    one batch on one instance (one core; ~490 against ~295 ms); they are sent apart so each runs alone."""
    photo = encode(packaged_photos()["astronaut"].resize((1024, 768)), "JPEG", quality=90)
    photos = 8
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        infer_whole(client, [photo])  # warm-up
        before = model_counts(triton_server, IMAGE_MODEL_DETECTOR)
        for _ in range(photos):
            infer_whole(client, [photo])
        after = model_counts(triton_server, IMAGE_MODEL_DETECTOR)
    finally:
        client.close()
    assert after["succeeded"] - before["succeeded"] == 2 * photos, "each photo's rows go out as two requests"
    # Merged, the 16 requests would run as 8 executions, apart as 16. The batcher may still merge the odd
    # pair when a request is late (two of ten once on an idle machine), so the bound sits halfway.
    assert after["executions"] - before["executions"] >= 3 * photos // 2, (before, after)
