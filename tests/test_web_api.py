"""The web API: every bad input answers a 4xx JSON error, Triton down answers 503, a real image or video a verdict.

Validation paths use Flask's test client (they are decided before Triton is contacted); the detect
happy path runs through the real web server (waitress) against the real Triton server, and "Triton down"
against a real closed port.
"""

from __future__ import annotations

import base64
import copy
import http.client
import io
import json
import re
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.response.exceptions import InvalidData
from openapi_spec_validator import validate as validate_openapi_spec
import video_samples
from PIL import Image
from web_support import (VERDICT_PATTERN, DiskWriteAudit, get_json, jpeg_bytes, png_bomb, post_file,
                         post_file_raw, running_web_server)

from deepfake_edge.checkpoint import read_card
from deepfake_edge.export.commands import DEMO_CHECKPOINTS
from deepfake_edge.model_card import ModelCard
from deepfake_edge.regions import MODES, REGION_KINDS
from deepfake_edge.server.triton import free_port
from deepfake_edge.tracks import video_score
from deepfake_edge.webapp.app import (DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_MAX_VIDEO_BYTES, InMemoryRequest,
                                      create_app)


def _closed_port_url() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there: a real refused connection


@pytest.fixture(scope="module")
def offline_client():
    """A test client whose Triton URL refuses connections: only validation can succeed."""
    app = create_app(_closed_port_url(), protocol="grpc")
    return app.test_client()


def _upload(client, data: bytes, filename: str = "photo.jpg", **fields):
    return client.post("/api/detect", data={"file": (io.BytesIO(data), filename), **fields},
                       content_type="multipart/form-data")


def strict_spec(spec: dict) -> dict:
    """``spec`` with ``additionalProperties: false`` on every object schema that lists its properties and
    says nothing about others: a response field the description does not document fails validation."""
    spec = copy.deepcopy(spec)

    def visit(node) -> None:
        if isinstance(node, dict):
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(spec.get("components", {}))
    for operation in (op for path in spec["paths"].values() for op in path.values()):
        visit(operation.get("responses", {}))
    return spec


class SpecChecker:
    """Validates answers of the API against its own served OpenAPI description (made strict)."""

    def __init__(self, spec: dict) -> None:
        validate_openapi_spec(spec)
        self.api = OpenAPI.from_dict(strict_spec(spec))

    def check(self, status: int, content_type: str, body: bytes, method: str = "post",
              path: str = "/api/detect") -> None:
        request = MockRequest("http://localhost", method, path)
        mimetype = content_type.split(";")[0].strip()
        self.api.validate_response(request, MockResponse(body, status_code=status, content_type=mimetype))

    def check_flask(self, response, method: str = "post", path: str = "/api/detect") -> None:
        self.check(response.status_code, response.mimetype, response.get_data(), method, path)


@pytest.fixture(scope="module")
def spec_checker(offline_client) -> SpecChecker:
    return SpecChecker(offline_client.get("/api/openapi.json").get_json())


def _assert_json_error(response, status: int, *words: str, spec: SpecChecker | None = None) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    if spec is not None:
        spec.check_flask(response)
    assert response.mimetype == "application/json"
    message = response.get_json()["error"]
    assert isinstance(message, str) and message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


@pytest.mark.parametrize(
    ("data", "filename", "words"),
    [
        (b"", "empty.jpg", ("empty", "0 bytes")),
        (b"hello, I am a text file pretending to be a photo\n", "notes.jpg", ("notes.jpg", "not an image")),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", "report.pdf", ("not an image",)),
        (jpeg_bytes()[:400], "truncated.jpg", ("truncated.jpg", "truncated")),
        (png_bomb(30_000, 30_000), "bomb.png", ("too large", "decompression bomb")),
        (png_bomb(8_000, 8_000), "big.png", ("too large", "64,000,000 pixels")),
    ],
    ids=["empty", "text", "pdf", "truncated-jpeg", "png-bomb-pillow-guard", "png-bomb-max-pixels"],
)
def test_bad_images_are_a_400_with_a_human_message(offline_client, spec_checker, data, filename, words):
    _assert_json_error(_upload(offline_client, data, filename), 400, *words, spec=spec_checker)


def test_missing_file_field_is_a_400(offline_client, spec_checker):
    response = offline_client.post("/api/detect", data={"image": "nothing"}, content_type="multipart/form-data")
    _assert_json_error(response, 400, "field 'file'", spec=spec_checker)
    _assert_json_error(offline_client.post("/api/detect"), 400, "no image", spec=spec_checker)


def test_upload_over_the_default_limit_is_a_413(offline_client, spec_checker):
    message = _assert_json_error(_upload(offline_client, b"\xff" * (DEFAULT_MAX_UPLOAD_BYTES + 1)), 413, "10 MB",
                                 spec=spec_checker)
    assert "too large" in message


def test_upload_limit_is_configurable():
    client = create_app(_closed_port_url(), max_upload_bytes=50_000).test_client()
    # Just over the file limit (inside the multipart slack) and far over it (whole body refused).
    _assert_json_error(_upload(client, b"\xff" * 50_001), 413, "48.8 KB")
    _assert_json_error(_upload(client, b"\xff" * 400_000), 413, "too large")
    _assert_json_error(_upload(client, b"\xff" * 50_000), 400, "not an image")


def test_invalid_heatmap_alpha_is_a_400(offline_client, spec_checker):
    _assert_json_error(_upload(offline_client, jpeg_bytes(), heatmap_alpha="lots"), 400, "heatmap_alpha",
                       spec=spec_checker)
    _assert_json_error(_upload(offline_client, jpeg_bytes(), heatmap_alpha="1.5"), 400, "between 0 and 1")


def test_invalid_mode_is_a_400(offline_client):
    message = _assert_json_error(_upload(offline_client, jpeg_bytes(), mode="bogus"), 400, "mode", "whole", "fast")
    assert "bogus" in message


def test_unknown_routes_and_methods_answer_json(offline_client):
    _assert_json_error(offline_client.get("/api/nothing-here"), 404, "not found")
    _assert_json_error(offline_client.get("/api/detect"), 405, "method")


def test_unexpected_errors_answer_json_without_a_traceback():
    app = create_app(_closed_port_url())

    @app.get("/api/broken")
    def broken():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/api/broken")
    message = _assert_json_error(response, 500, "went wrong", "RuntimeError")
    assert "secret internals" not in message and "Traceback" not in response.get_data(as_text=True)


def test_uploads_are_kept_in_memory():
    """werkzeug spools multipart files over 500 KB to temporary files; this app must not."""
    app = create_app(_closed_port_url())
    assert app.request_class is InMemoryRequest
    big = b"\x00" * (3 * 1024 * 1024)
    with app.test_request_context("/api/detect", method="POST", data={"file": (io.BytesIO(big), "big.bin")}):
        from flask import request

        stream = request.files["file"].stream
        assert isinstance(stream, io.BytesIO)
        assert stream.getbuffer().nbytes == len(big)


@pytest.mark.attack("E8", "a chunked upload with no length, past the limit")
def test_chunked_upload_over_the_limit_is_a_413_while_streaming():
    """Without Content-Length the limit is enforced while reading: the body never piles up in memory."""
    app = create_app(_closed_port_url(), max_upload_bytes=100_000, max_video_bytes=100_000)
    with running_web_server(app) as base_url:
        connection = http.client.HTTPConnection(base_url.removeprefix("http://"), timeout=30)
        boundary = "limit-test"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n').encode()
        body = iter([head] + [b"\xff" * 65_536] * 8 + [f"\r\n--{boundary}--\r\n".encode()])
        connection.request("POST", "/api/detect", body=body, encode_chunked=True,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        assert response.status == 413
        assert "too large" in json.loads(response.read())["error"]
        connection.close()


def test_stalled_connections_are_dropped():
    app = create_app(_closed_port_url())
    with running_web_server(app, socket_timeout_s=0.5) as base_url:
        host, port = base_url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as stalled:
            stalled.sendall(b"POST /api/detect HTTP/1.1\r\nHost: x\r\n")  # ...and then nothing
            started = time.monotonic()
            assert stalled.recv(1024) == b"", "the server should close the connection"
            assert time.monotonic() - started < 5


def test_triton_down_is_a_503_naming_the_server(spec_checker):
    url = _closed_port_url()
    client = create_app(url, timeout_s=5.0).test_client()
    message = _assert_json_error(_upload(client, jpeg_bytes()), 503, "cannot be reached", url, spec=spec_checker)
    assert "deepfake-edge serve" in message
    health = client.get("/api/health")
    assert health.status_code == 503
    assert health.get_json()["status"] == "unavailable"


def test_openapi_spec_is_valid_openapi(offline_client):
    validate_openapi_spec(offline_client.get("/api/openapi.json").get_json())  # raises on an invalid description
    validate_openapi_spec(strict_spec(offline_client.get("/api/openapi.json").get_json()))


def test_spec_check_fails_on_undocumented_or_mistyped_fields(spec_checker):
    """The response check itself can fail: an extra field, a wrong type or a missing required field."""
    spec_checker.check(400, "application/json", b'{"error": "not an image"}')
    for body in (b'{"error": "x", "traceback": "..."}', b'{"error": 3}', b'{}', b'{"label": "Real"}'):
        with pytest.raises(InvalidData):
            spec_checker.check(400, "application/json", body)
    with pytest.raises(OpenAPIError):  # a status the description does not list
        spec_checker.check(418, "application/json", b'{"error": "teapot"}')
    with pytest.raises(OpenAPIError):  # an answer that is not the JSON the description promises
        spec_checker.check(400, "text/html", b"<h1>Bad Request</h1>")


def test_openapi_describes_the_api(offline_client):
    spec = offline_client.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    detect = spec["paths"]["/api/detect"]["post"]
    assert set(detect["responses"]) >= {"200", "400", "413", "503", "504"}
    schema = detect["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["required"] == ["file"]
    assert {"/api/health", "/api/openapi.json"} <= set(spec["paths"])
    assert str(DEFAULT_MAX_UPLOAD_BYTES) in schema["properties"]["file"]["description"]
    assert schema["properties"]["mode"]["enum"] == list(MODES)
    assert spec["components"]["schemas"]["Region"]["properties"]["kind"]["enum"] == list(REGION_KINDS)


def test_page_is_served_without_external_resources(offline_client):
    response = offline_client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "Upload Image or Video" in html and "Choose File" in html
    assert 'accept="image/*,video/*"' in html
    assert re.search(r"Videos: MP4, MOV, AVI, MKV, WebM or animated GIF · up to 50 MB and 60 s", html), html
    assert "never stored" in html and "never written to disk" in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "the page must not load anything from elsewhere"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    for asset in ("style.css", "app.js", "theme.js"):
        assert offline_client.get(f"/static/{asset}").status_code == 200


# ---------------------------------------------------------------- against the real Triton server


@pytest.fixture(scope="module")
def live_web_url(triton_server):
    app = create_app(triton_server.grpc_url, protocol="grpc")
    with running_web_server(app) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def live_spec(live_web_url) -> SpecChecker:
    """The live server's own description (strict), against which its answers are validated."""
    status, spec = get_json(f"{live_web_url}/api/openapi.json")
    assert status == 200
    return SpecChecker(spec)


def _post_checked(spec: SpecChecker, url: str, filename: str, data: bytes,
                  fields: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST an upload to the live server; its answer must match the served description. Returns (status, JSON)."""
    status, content_type, body = post_file_raw(url, filename, data, fields)
    spec.check(status, content_type, body)
    return status, json.loads(body)


def _decode_data_url(data_url: str, image_format: str) -> Image.Image:
    prefix = f"data:image/{image_format.lower()};base64,"
    assert data_url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):])))
    assert image.format == image_format
    return image.convert("RGB")


@pytest.mark.server
def test_detect_returns_both_models_and_a_heatmap(live_web_url, live_spec):
    status, result = _post_checked(live_spec, f"{live_web_url}/api/detect", "gradient.jpg", jpeg_bytes((320, 240)))
    assert status == 200, result
    assert result["label"] in ("Real", "Fake")
    assert re.match(VERDICT_PATTERN, result["verdict"])
    assert result["model"] == "deepfake_b0" and result["model_title"] == "EfficientNet-B0"
    assert result["model_version"]
    p = result["fake_probability"]
    assert 0.0 <= p <= 1.0
    card = ModelCard(arch="served", threshold=result["threshold"])
    assert result["confidence"] == pytest.approx(card.confidence_for(p)) and result["confidence"] >= 0.5
    by_name = {m["name"]: m for m in result["models"]}
    assert list(by_name) == ["deepfake_b0", "deepfake_cnn"]
    assert by_name["deepfake_cnn"]["role"] == "baseline" and by_name["deepfake_cnn"]["error"] is None
    assert by_name["deepfake_cnn"]["title"] == "CNN baseline"
    assert set(result["raw_scores"]) == {"deepfake_b0", "deepfake_cnn"}
    heatmap = result["heatmap"]
    image, overlay = _decode_data_url(heatmap["image"], "JPEG"), _decode_data_url(heatmap["overlay"], "PNG")
    assert image.size == overlay.size == (heatmap["width"], heatmap["height"]) == (320, 240)
    assert image.tobytes() != overlay.tobytes()
    assert result["filename"] == "gradient.jpg"
    assert (result["image"]["width"], result["image"]["height"]) == (320, 240)


def _assert_valid_regions(result: dict) -> None:
    width, height = result["image"]["width"], result["image"]["height"]
    assert result["regions"], "whole mode scores at least the global view"
    for region in result["regions"]:
        assert set(region) == {"kind", "box", "fake_probability"}
        assert region["kind"] in REGION_KINDS
        x0, y0, x1, y1 = region["box"]
        assert all(isinstance(v, int) for v in region["box"]), region
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (region, width, height)
        assert 0.0 <= region["fake_probability"] <= 1.0
    assert [r["kind"] for r in result["regions"]].count("global") == 1
    # The image's score is its highest region's (regions are rounded to 6 decimals).
    assert result["fake_probability"] == pytest.approx(max(r["fake_probability"] for r in result["regions"]), abs=1e-5)
    assert isinstance(result["notes"], list) and all(isinstance(note, str) for note in result["notes"])


@pytest.mark.server
@pytest.mark.parametrize("size", [
    (320, 240),
    (1600, 1200),  # shrunk to 1280 x 960 before tiling: boxes still in the original's pixels
    (1288, 885),  # shrunk by a scale that rounds differently along x and y
], ids=["small", "shrunk", "shrunk-odd-size"])
def test_detect_whole_mode_returns_regions_in_image_pixels(live_web_url, live_spec, size):
    status, result = _post_checked(live_spec, f"{live_web_url}/api/detect", "photo.jpg", jpeg_bytes(size),
                                   fields={"heatmap": "0"})
    assert status == 200, result
    assert result["mode"] == "whole"
    assert (result["image"]["width"], result["image"]["height"]) == size
    _assert_valid_regions(result)
    tiles = [r["box"] for r in result["regions"] if r["kind"] == "tile"]
    assert tiles, "an image larger than a tile is tiled"
    # The tiles reach the image's right and bottom edges: the whole frame is covered.
    assert max(box[2] for box in tiles) == size[0] and max(box[3] for box in tiles) == size[1]
    shrunk = [note for note in result["notes"] if "analysed at" in note]
    assert bool(shrunk) == (max(size) > 1280), result["notes"]


@pytest.mark.server
def test_fast_mode_has_no_regions(live_web_url, live_spec):
    detect = f"{live_web_url}/api/detect"
    status, result = _post_checked(live_spec, detect, "g.jpg", jpeg_bytes(), fields={"mode": "fast", "heatmap": "0"})
    assert status == 200, result
    assert result["mode"] == "fast" and result["regions"] == []
    assert re.match(VERDICT_PATTERN, result["verdict"])
    status, result = _post_checked(live_spec, detect, "g.jpg", jpeg_bytes(), fields={"mode": "fast"})
    assert status == 200 and result["heatmap"]["image"].startswith("data:image/jpeg;base64,"), result
    status, whole = _post_checked(live_spec, detect, "g.jpg", jpeg_bytes(), fields={"mode": "whole", "heatmap": "0"})
    assert status == 200 and whole["mode"] == "whole" and whole["regions"]


@pytest.mark.server
def test_detect_without_heatmap_and_health(live_web_url, live_spec):
    status, result = _post_checked(live_spec, f"{live_web_url}/api/detect", "g.jpg", jpeg_bytes(), fields={"heatmap": "0"})
    assert status == 200 and result["heatmap"] is None
    status, health = get_json(f"{live_web_url}/api/health")
    assert status == 200 and health["status"] == "ok"
    assert health["models"] == {"deepfake_b0": "ready", "deepfake_cnn": "ready"}


@pytest.mark.server
def test_exif_orientation_is_applied(live_web_url):
    photo = Image.open(io.BytesIO(jpeg_bytes((320, 240))))
    exif = photo.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    status, result = post_file(f"{live_web_url}/api/detect", "rotated.jpg", buffer.getvalue())
    assert status == 200, result
    assert (result["image"]["width"], result["image"]["height"]) == (240, 320)
    assert (result["heatmap"]["width"], result["heatmap"]["height"]) == (240, 320)


@pytest.mark.server
def test_concurrent_uploads_and_bad_ones_mixed(live_web_url):
    uploads = [("ok.jpg", jpeg_bytes((200 + 8 * i, 180))) for i in range(6)]
    uploads += [("bad.jpg", b"not an image"), ("bomb.png", png_bomb()), ("empty.png", b"")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda item: post_file(f"{live_web_url}/api/detect", *item), uploads))
    assert [status for status, _ in answers] == [200] * 6 + [400] * 3
    assert all(re.match(VERDICT_PATTERN, body["verdict"]) for _, body in answers[:6])


@pytest.mark.attack("E9", "an upload of 10 MB + 1 byte over a real socket")
@pytest.mark.server
def test_oversized_upload_over_a_real_socket_is_a_413(live_web_url, live_spec):
    status, body = _post_checked(live_spec, f"{live_web_url}/api/detect", "huge.jpg",
                                 b"\xff" * (DEFAULT_MAX_UPLOAD_BYTES + 200_000))
    assert status == 413 and "too large" in body["error"]


@pytest.mark.server
def test_missing_models_answer_503_or_an_error_entry(triton_server, spec_checker):
    missing_primary = create_app(triton_server.grpc_url, models=("deepfake_missing", "deepfake_cnn")).test_client()
    _assert_json_error(_upload(missing_primary, jpeg_bytes()), 503, "not available", "deepfake_missing",
                       spec=spec_checker)
    missing_baseline = create_app(triton_server.grpc_url, models=("deepfake_b0", "deepfake_missing")).test_client()
    response = _upload(missing_baseline, jpeg_bytes(), heatmap="0")
    assert response.status_code == 200
    baseline = response.get_json()["models"][1]
    assert baseline["name"] == "deepfake_missing" and "not ready" in baseline["error"]
    assert set(response.get_json()["raw_scores"]) == {"deepfake_b0"}


@pytest.mark.server
def test_an_answer_with_a_failed_baseline_matches_the_description(triton_server, spec_checker):
    missing_baseline = create_app(triton_server.grpc_url, models=("deepfake_b0", "deepfake_missing")).test_client()
    response = _upload(missing_baseline, jpeg_bytes(), heatmap="0")
    assert response.status_code == 200
    spec_checker.check_flask(response)


@pytest.mark.server
def test_503_while_triton_is_down_then_recovery_after_restart(demo_repository, tmp_path):
    from deepfake_edge.server.triton import TritonServer

    # Only the two models the page uses: every extra model slows each start down.
    for name in ("deepfake_b0", "deepfake_cnn"):
        shutil.copytree(demo_repository / "embedded" / name, tmp_path / name)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with TritonServer(tmp_path, **ports) as triton:
        client = create_app(triton.grpc_url, timeout_s=5.0).test_client()
        assert _upload(client, jpeg_bytes(), heatmap="0").status_code == 200
    _assert_json_error(_upload(client, jpeg_bytes(), heatmap="0"), 503, "cannot be reached")
    with TritonServer(tmp_path, **ports):
        assert _upload(client, jpeg_bytes(), heatmap="0").status_code == 200


# ---------------------------------------------------------------- provenance beside the verdict


@pytest.fixture(scope="module")
def signed(tmp_path_factory) -> dict[str, Path]:
    """Files signed offline with c2pa-python (tests/provenance_samples.py)."""
    import provenance_samples

    folder = tmp_path_factory.mktemp("signed")
    makers = {"ai": provenance_samples.ai_png, "camera": provenance_samples.camera_jpeg,
              "tampered": provenance_samples.tampered_jpeg, "corrupt": provenance_samples.corrupt_jpeg,
              "exif": provenance_samples.exif_jpeg, "mp4": provenance_samples.signed_mp4}
    return {name: maker(folder) for name, maker in makers.items()}


def test_provenance_is_described(offline_client):
    spec = offline_client.get("/api/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    for name in ("Detection", "VideoDetection"):
        assert schemas[name]["properties"]["provenance"] == {"$ref": "#/components/schemas/Provenance"}
        assert "provenance" in schemas[name]["required"]
    assert schemas["Provenance"]["nullable"] is True
    assert {"status", "summary", "ai_generated", "validation", "metadata"} <= set(schemas["Provenance"]["required"])


@pytest.mark.server
def test_content_credentials_are_reported_beside_the_verdict(live_web_url, live_spec, signed):
    """A signed AI-generated PNG, a signed photo, the photo tampered with after signing, one with a corrupt
    manifest, one with EXIF only, a plain JPEG and a signed MP4: each answer is the model's verdict, with
    what the file says about itself beside it (validated against the served description)."""
    import provenance_samples

    detect = f"{live_web_url}/api/detect"
    answers = {}
    for name, path in signed.items():
        status, answers[name] = _post_checked(live_spec, detect, path.name, path.read_bytes(),
                                              fields={"heatmap": "0", "mode": "fast"})
        assert status == 200, answers[name]
        assert re.match(VERDICT_PATTERN, answers[name]["verdict"]), "the verdict stands, whatever the credentials say"
    status, answers["plain"] = _post_checked(live_spec, detect, "plain.jpg", jpeg_bytes(), fields={"heatmap": "0"})
    assert status == 200
    found = {name: answer["provenance"] for name, answer in answers.items()}

    ai = found["ai"]
    assert (ai["status"], ai["validation"], ai["ai_generated"]) == ("valid", "untrusted signer", True)
    assert ai["claim_generator"] == f"{provenance_samples.AI_APP} 2.1" and ai["signer"] == provenance_samples.SIGNER_ORG
    assert ai["digital_source_types"] == ["trainedAlgorithmicMedia"] and ai["format"] == "image/png"
    assert ai["summary"].startswith("AI-generated (per its Content Credentials): Made with Imaginator AI 2.1")
    assert found["camera"]["summary"] == (f"Made with {provenance_samples.CAMERA_APP} 2.1, signed by "
                                          f"{provenance_samples.SIGNER_ORG}, signature valid (untrusted signer)")
    assert (found["tampered"]["status"], found["tampered"]["validation"]) == ("invalid", "tampered")
    assert found["tampered"]["summary"] == "Content Credentials present but invalid (tampered)"
    corrupt = found["corrupt"]
    assert corrupt["status"] == "error" and corrupt["error"].startswith("corrupt manifest store")
    assert corrupt["manifest_bytes"] > 0, "the credentials are there, unreadable"
    assert found["exif"]["status"] == "none" and found["exif"]["metadata"]["camera_make"] == "Canon"
    assert found["plain"]["status"] == "none" and found["plain"]["summary"] == "no Content Credentials"
    assert found["plain"]["metadata"]["summary"] == ""
    assert answers["mp4"]["kind"] == "video" and found["mp4"]["status"] == "valid"
    assert found["mp4"]["format"] == "video/mp4"


@pytest.mark.server
def test_provenance_never_changes_the_score_and_can_be_turned_off(triton_server, spec_checker, signed):
    data = signed["ai"].read_bytes()
    stripped = io.BytesIO()
    Image.open(io.BytesIO(data)).save(stripped, format="PNG")  # the same pixels, no Content Credentials
    with_reading = create_app(triton_server.grpc_url).test_client()
    without = create_app(triton_server.grpc_url, provenance=False).test_client()
    answers = [_upload(client, payload, "ai.png", heatmap="0", mode="fast")
               for client in (with_reading, without) for payload in (data, stripped.getvalue())]
    for response in answers:
        assert response.status_code == 200, response.get_json()
        spec_checker.check_flask(response)
    results = [response.get_json() for response in answers]
    assert [result["provenance"] and result["provenance"]["status"] for result in results] == [
        "valid", "none", None, None]
    scores = [result["fake_probability"] for result in results]
    assert scores == pytest.approx([scores[0]] * 4, abs=1e-5), "never blended into the score"


# ---------------------------------------------------------------- videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """The videos of tests/video_samples.py, made once with PyAV (clips cut from OpenCV's vtest.avi)."""
    if not video_samples.VTEST.is_file():
        pytest.skip(f"{video_samples.VTEST} is missing (Debian's opencv-doc package)")
    folder = tmp_path_factory.mktemp("videos")
    makers = {"clip": lambda f: video_samples.real_clip(f, "clip.mp4", seconds=3.0)}
    makers.update({name: maker for name, (maker, _, _) in video_samples.BAD_VIDEOS.items()})
    makers["eight_k"] = video_samples.eight_k
    return {name: maker(folder) for name, maker in makers.items()}


def _upload_video(client, path: Path, filename: str | None = None, **fields):
    return _upload(client, path.read_bytes(), filename or path.name, **fields)


@pytest.mark.parametrize(("name", "status", "words"), [
    ("audio_only", 400, ("voice.m4a", "could not be read as a video", "only audio")),
    ("truncated_index", 400, ("could not be read as a video", "damaged or truncated")),
    ("no_decodable_frames", 400, ("no frame of this video could be decoded",)),
    ("ten_hours", 413, ("too long", "declares 36000 s", "the limit is 60 s")),
    ("eight_k", 413, ("frames too large", "7680x4320", "limit 2,073,600")),
])
def test_unusable_videos_are_a_4xx_before_triton_is_asked(offline_client, spec_checker, videos, name, status, words):
    """Triton is down here: these answers come from the video alone (opened before any call)."""
    _assert_json_error(_upload_video(offline_client, videos[name]), status, *words, spec=spec_checker)


def test_garbage_named_like_a_video_says_it_is_neither(offline_client, spec_checker):
    message = _assert_json_error(_upload(offline_client, b"hello, not a video\n" * 10, "clip.mp4"), 400,
                                 "clip.mp4", "not a video this server reads", "not an image", spec=spec_checker)
    assert "MP4/MOV" in message


def test_video_limits_are_configurable(spec_checker, videos):
    clip = videos["clip"].read_bytes()
    assert len(clip) > 50_000
    client = create_app(_closed_port_url(), max_video_bytes=50_000).test_client()
    _assert_json_error(_upload(client, clip, "clip.mp4"), 413, "clip.mp4", "too large", "is a video of",
                       "videos up to 48.8 KB", spec=spec_checker)
    client = create_app(_closed_port_url(), max_video_seconds=2.0).test_client()
    _assert_json_error(_upload(client, clip, "clip.mp4"), 413, "too long", "declares 3 s", "limit is 2 s",
                       "at most 2 s", spec=spec_checker)
    # The video limit does not raise the image limit: an image over max_upload_bytes is still refused.
    client = create_app(_closed_port_url(), max_upload_bytes=50_000).test_client()
    _assert_json_error(_upload(client, b"\xff" * 60_000, "big.jpg"), 413, "image of", "images up to 48.8 KB",
                       "videos up to 50 MB", spec=spec_checker)


def test_a_video_over_the_default_video_limit_is_a_413(offline_client, spec_checker, videos):
    header = videos["clip"].read_bytes()[:4096]  # a real MP4 start, padded past 50 MB: never decoded
    data = header + b"\0" * (DEFAULT_MAX_VIDEO_BYTES + 1 - len(header))
    _assert_json_error(_upload(offline_client, data, "huge.mp4"), 413, "too large", "videos up to 50 MB",
                       spec=spec_checker)


def test_a_video_needing_more_memory_than_the_budget_is_a_413(spec_checker, videos):
    client = create_app(_closed_port_url(), max_decode_bytes=32 * 2**20).test_client()
    _assert_json_error(_upload_video(client, videos["clip"]), 413, "cannot be analysed", "memory",
                       "(32 MB)", spec=spec_checker)


def test_video_schema_is_described(offline_client):
    spec = offline_client.get("/api/openapi.json").get_json()
    ok = spec["paths"]["/api/detect"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["oneOf"] == [{"$ref": "#/components/schemas/Detection"}, {"$ref": "#/components/schemas/VideoDetection"}]
    video = spec["components"]["schemas"]["VideoDetection"]
    assert {"timeline", "peak", "tracks", "video", "heatmap", "regions"} <= set(video["required"])
    assert str(DEFAULT_MAX_VIDEO_BYTES) in spec["paths"]["/api/detect"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]["properties"]["file"]["description"]


def _assert_video_answer(result: dict, frames: int | None = None) -> None:
    assert result["kind"] == "video"
    assert result["label"] in ("Real", "Fake") and re.match(VERDICT_PATTERN, result["verdict"])
    assert 0.0 <= result["fake_probability"] <= 1.0
    timeline = result["timeline"]
    if frames is not None:
        assert len(timeline) == frames, [f["time_s"] for f in timeline]
    times = [frame["time_s"] for frame in timeline]
    assert times == sorted(times) and [frame["index"] for frame in timeline] == sorted(f["index"] for f in timeline)
    peak = next(frame for frame in timeline if frame["index"] == result["peak"]["index"])
    assert peak["fake_probability"] == max(frame["fake_probability"] for frame in timeline)
    assert result["peak"]["time_s"] == peak["time_s"]
    assert result["regions"] == peak["regions"]
    width, height = result["video"]["width"], result["video"]["height"]
    for frame in timeline:
        for region in frame["regions"]:
            x0, y0, x1, y1 = region["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (region, width, height)
    assert [m["name"] for m in result["models"]] == [result["model"]] and result["models"][0]["role"] == "primary"
    assert any("deepfake_cnn" in note and "not run" in note for note in result["notes"]), result["notes"]


@pytest.mark.server
def test_a_short_video_gets_a_verdict_a_timeline_and_its_peak_frame(live_web_url, live_spec, videos, tmp_path,
                                                                      monkeypatch):
    """3 s of street footage at 2 frames a second: 6 frames scored, the peak frame with its heatmap; and nothing
    written to disk on the way (the upload stays in memory), on success as on failure."""
    spool = tmp_path / "tmpdir"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))  # also what FFmpeg (C) would read
    monkeypatch.setattr(tempfile, "tempdir", None)
    audit = DiskWriteAudit()
    detect = f"{live_web_url}/api/detect"
    assert post_file(detect, "warm.mp4", videos["clip"].read_bytes())[0] == 200  # lazy imports happen here
    audit.armed = True
    try:
        status, result = _post_checked(live_spec, detect, "clip.mp4", videos["clip"].read_bytes())
        failed, _ = _post_checked(live_spec, detect, "cut.mp4", videos["truncated_index"].read_bytes())
    finally:
        audit.armed = False
    assert status == 200, result
    assert failed == 400
    assert audit.events == [], audit.events
    assert list(spool.iterdir()) == []

    _assert_video_answer(result, frames=6)
    assert result["filename"] == "clip.mp4" and result["mode"] == "whole"
    served_card = read_card(Path(__file__).resolve().parents[1] / DEMO_CHECKPOINTS[0])  # what conftest serves
    assert result["rule"] == served_card.video_rule, "the rule calibrated on validation videos travels with the model"
    assert result["threshold"] == pytest.approx(served_card.video_threshold_for(6), abs=1e-6)
    assert (result["video"]["width"], result["video"]["height"]) == (384, 288)
    assert result["video"]["codec"] == "h264" and result["video"]["duration_s"] == pytest.approx(3.0, abs=0.15)
    assert [frame["time_s"] for frame in result["timeline"]] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    frame_scores = [frame["fake_probability"] for frame in result["timeline"]]
    assert result["fake_probability"] == pytest.approx(video_score(result["rule"], frame_scores), abs=1e-5)
    heatmap = result["heatmap"]
    image, overlay = _decode_data_url(heatmap["image"], "JPEG"), _decode_data_url(heatmap["overlay"], "PNG")
    assert image.size == overlay.size == (heatmap["width"], heatmap["height"]) == (384, 288)
    assert image.tobytes() != overlay.tobytes()


@pytest.mark.server
def test_videos_are_told_by_content_not_name(live_web_url, live_spec, videos):
    detect = f"{live_web_url}/api/detect"
    status, result = _post_checked(live_spec, detect, "holiday.jpg", videos["video_named_jpg"].read_bytes())
    assert status == 200, result
    _assert_video_answer(result, frames=2)  # 1 s at 2 frames a second
    assert result["notes"][0] == "named .jpg but the content is a video: analysed as a video"
    status, result = _post_checked(live_spec, detect, "photo.mp4", videos["jpeg_named_mp4"].read_bytes())
    assert status == 200, result
    assert result["kind"] == "image" and result["notes"][0] == "named .mp4 but the content is an image: analysed as an image"
    assert [m["name"] for m in result["models"]] == ["deepfake_b0", "deepfake_cnn"]


@pytest.mark.server
@pytest.mark.parametrize(("name", "note"), [
    ("truncated", r"stopped at 1\.\d s of the declared 3\.0 s"),
    ("corrupt_middle", r"damaged packet"),
    ("lying_header", r"timed at 36000 s, past the 60 s limit \(the header declares 2\.0 s\)"),
])
def test_damaged_videos_keep_what_decodes_and_say_so(live_web_url, live_spec, videos, name, note):
    status, result = _post_checked(live_spec, f"{live_web_url}/api/detect", videos[name].name,
                                   videos[name].read_bytes(), fields={"heatmap": "0"})
    assert status == 200, result
    _assert_video_answer(result)
    assert result["heatmap"] is None
    assert any(re.search(note, text) for text in result["notes"]), result["notes"]


@pytest.mark.server
def test_a_video_in_fast_mode(live_web_url, live_spec, videos):
    status, result = _post_checked(live_spec, f"{live_web_url}/api/detect", "clip.mp4", videos["clip"].read_bytes(),
                                   fields={"mode": "fast"})
    assert status == 200, result
    _assert_video_answer(result, frames=6)
    assert result["mode"] == "fast" and result["regions"] == [] and result["heatmap"]["overlay"]


@pytest.mark.server
def test_a_video_past_its_deadline_is_a_504(triton_server, spec_checker, videos):
    client = create_app(triton_server.grpc_url, video_timeout_s=0.001).test_client()
    _assert_json_error(_upload_video(client, videos["clip"]), 504, "clip.mp4", "0.001 s", spec=spec_checker)


def test_a_decoder_error_the_reader_missed_is_a_400_not_a_500(monkeypatch, spec_checker, videos, caplog):
    import av

    import deepfake_edge.webapp.app as webapp

    def failing_probe(*args, **kwargs):
        raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(webapp, "probe", failing_probe)
    client = create_app(_closed_port_url()).test_client()
    _assert_json_error(_upload_video(client, videos["clip"]), 400, "clip.mp4", "decoder failed", "InvalidDataError",
                       spec=spec_checker)
    assert "PyAV error not turned into BadVideoError" in caplog.text
