"""The Python client (sync and asyncio, gRPC and HTTP) against the real tritonserver (``triton_server``)."""

from __future__ import annotations

import asyncio
import io
import math
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client_samples import copied_astronaut, photo, write_good_images
from deepfake_edge.client import (
    AsyncDeepfakeClient,
    BadImageError,
    DeepfakeClient,
    Detection,
    Failure,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnreachableError,
)
from deepfake_edge.server.admin_key import admin_headers
from deepfake_edge.server.triton import TritonServer, free_port

pytestmark = pytest.mark.server

MODEL = "deepfake_b0"
PROTOCOLS = ("grpc", "http")
SCORE_TOLERANCE = 1e-5  # same ONNX model; only the batch composition differs between requests


def url_of(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


def jpeg_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    photo(name).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("client_api_images")
    write_good_images(folder)
    return folder


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_detect_reads_everything_from_the_served_model(triton_server, good_folder, protocol):
    import tritonclient.http as httpclient

    with DeepfakeClient(url_of(triton_server, protocol), protocol=protocol, model=MODEL) as client:
        info = client.model_info()
        detection = client.detect(good_folder / "astronaut.jpg", heatmap=True, mode="fast")
        plain = client.detect(str(good_folder / "astronaut.jpg"), mode="fast")
    config = httpclient.InferenceServerClient(triton_server.http_url).get_model_config(MODEL)
    assert info.max_batch_size == config["max_batch_size"]
    assert info.input_shape == (3, info.card.input_size, info.card.input_size)
    card = info.card
    assert isinstance(detection, Detection) and detection.model == MODEL and detection.model_version
    assert detection.mode == "fast" and detection.regions == () and detection.heatmap_box is not None
    assert 0.0 <= detection.fake_probability <= 1.0
    assert math.isclose(1 / (1 + math.exp(-detection.logit)), detection.fake_probability, abs_tol=1e-5)
    assert detection.label == card.label_for(detection.fake_probability)
    assert detection.confidence == pytest.approx(card.confidence_for(detection.fake_probability))
    heatmap_dims = next(o["dims"] for o in config["output"] if o["name"] == "heatmap")
    assert list(detection.heatmap.shape) == [int(d) for d in heatmap_dims]
    assert detection.heatmap.dtype == np.float32 and 0.0 <= detection.heatmap.min() <= detection.heatmap.max() <= 1.0
    assert plain.heatmap is None
    assert plain.fake_probability == pytest.approx(detection.fake_probability, abs=SCORE_TOLERANCE)


def stock_scores(url: str, batch: np.ndarray) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    stock = grpcclient.InferenceServerClient(url)
    request = grpcclient.InferInput("image", list(batch.shape), "UINT8")
    request.set_data_from_numpy(batch)
    try:
        return stock.infer(MODEL, [request]).as_numpy("fake_probability").reshape(-1)
    finally:
        stock.close()


def test_client_sends_exactly_the_shared_preprocessing(triton_server, good_folder):
    """Same scores as stock tritonclient fed Preprocessor.from_card(served card) by hand."""
    from deepfake_edge.preprocessing import Preprocessor

    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        detection = client.detect(good_folder / "coffee_cmyk.jpg", mode="fast")
        card = client.model_info().card
    tensor = Preprocessor.from_card(card)(good_folder / "coffee_cmyk.jpg")[None]
    expected = stock_scores(triton_server.grpc_url, tensor)[0]
    assert detection.fake_probability == pytest.approx(float(expected), abs=SCORE_TOLERANCE)


def test_whole_image_analysis_sends_the_shared_regions_in_one_request(triton_server, good_folder):
    """Whole mode: every region's score equals stock tritonclient fed regions.analyse() by hand, the image
    score is the highest of them, the boxes cover the whole image and the heatmap all of it."""
    from deepfake_edge.preprocessing import Preprocessor, load_image
    from deepfake_edge.regions import analyse

    path = good_folder / "astronaut.jpg"
    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        detection = client.detect(path, heatmap=True)
        card = client.model_info().card
    image = load_image(path)
    plan, rows = analyse(image, Preprocessor.from_card(card))
    expected = stock_scores(triton_server.grpc_url, rows)
    assert detection.mode == "whole"
    assert [(r.kind, r.box) for r in detection.regions] == [(r.kind, r.box) for r in plan.regions]
    assert [r.fake_probability for r in detection.regions] == pytest.approx(expected.tolist(), abs=SCORE_TOLERANCE)
    assert detection.fake_probability == pytest.approx(float(expected.max()), abs=SCORE_TOLERANCE)
    kinds = [r.kind for r in detection.regions]
    assert kinds.count("face") == 1 and kinds.count("global") == 1 and kinds.count("tile") >= 4
    tiles = np.zeros(image.size[::-1], dtype=bool)
    for region in detection.regions:
        if region.kind == "tile":
            x0, y0, x1, y1 = region.box
            tiles[y0:y1, x0:x1] = True
    assert tiles.all(), "the tiles cover every pixel, borders included"
    assert detection.heatmap_box == (0, 0, *image.size)
    assert detection.heatmap.shape[1] / detection.heatmap.shape[0] == pytest.approx(image.width / image.height, rel=0.01)
    assert detection.label == card.for_mode("whole").label_for(detection.fake_probability)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_detect_many_keeps_order_and_reports_every_failure(triton_server, good_folder, protocol):
    good = [good_folder / "astronaut.jpg", jpeg_bytes("chelsea"), photo("rocket"), str(good_folder / "animated.gif")]
    bad = [b"", b"not an image at all", good_folder / "missing.jpg", jpeg_bytes("coffee")[:3000]]
    # 19 inputs in batches of 4 with 3 in flight: order must survive batching and concurrency.
    sources = [good[i % 4] if i % 3 else bad[(i // 3) % 4] for i in range(19)]
    with DeepfakeClient(url_of(triton_server, protocol), protocol=protocol, model=MODEL) as client:
        results = client.detect_many(sources, concurrency=3, batch_size=4)
        singles = [client.detect(source) for source in good]
    assert len(results) == len(sources)
    for index, (source, result) in enumerate(zip(sources, results)):
        assert result.source is source, f"result {index} belongs to another input"
        if index % 3:
            expected = singles[index % 4]
            assert isinstance(result, Detection)
            assert result.fake_probability == pytest.approx(expected.fake_probability, abs=SCORE_TOLERANCE)
        else:
            assert isinstance(result, Failure) and isinstance(result.error, BadImageError) and result.reason


def test_iter_detect_reads_its_input_lazily(triton_server):
    image = jpeg_bytes("astronaut")
    pulled = []

    def sources():
        for index in range(24):
            pulled.append(index)
            yield image

    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        results = client.iter_detect(sources(), concurrency=2, batch_size=2)
        first = next(results)
        assert first.ok
        # In flight: `concurrency` batches plus one queued, plus the batch being cut: bounded memory.
        assert len(pulled) <= (2 + 2) * 2
        assert sum(1 for _ in results) == 23


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_shared_memory_gives_the_same_scores_and_cleans_up(triton_server, good_folder, protocol):
    sources = [good_folder / name for name in sorted(os.listdir(good_folder))]
    with DeepfakeClient(url_of(triton_server, protocol), protocol=protocol, model=MODEL) as client:
        expected = [r.fake_probability for r in client.detect_many(sources, concurrency=2)]
    with DeepfakeClient(url_of(triton_server, protocol), protocol=protocol, model=MODEL, shared_memory=True,
                        admin_key=triton_server.admin_key) as client:
        results = client.detect_many(sources, concurrency=2, batch_size=2)  # two regions, three batches
        assert _registered_regions(triton_server), "no region was registered: shared memory was not used"
        # The server mapped the regions when they were registered; their names are already gone.
        assert not list(Path("/dev/shm").glob(f"deepfake_edge_{os.getpid()}_*"))
    assert [r.fake_probability for r in results] == pytest.approx(expected, abs=SCORE_TOLERANCE)
    assert not _registered_regions(triton_server), "a region stayed registered on the server"


def _registered_regions(server: TritonServer) -> list:
    import tritonclient.http as httpclient

    stock = httpclient.InferenceServerClient(server.http_url)
    try:
        regions = stock.get_system_shared_memory_status(headers=admin_headers(server.admin_key))
        return [r for r in regions if r["name"].startswith("deepfake_edge_")]
    finally:
        stock.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_client_matches_the_sync_client(triton_server, good_folder, protocol):
    sources = [good_folder / name for name in sorted(os.listdir(good_folder))] + [b"\x89PNG broken"]
    with DeepfakeClient(url_of(triton_server, protocol), protocol=protocol, model=MODEL) as client:
        expected = client.detect_many(sources)

    async def run():
        async with AsyncDeepfakeClient(url_of(triton_server, protocol), protocol=protocol, model=MODEL) as client:
            single = await client.detect(sources[0], heatmap=True)
            many = await client.detect_many(sources, concurrency=3, batch_size=2)
            return single, many

    single, many = asyncio.run(run())
    assert single.heatmap is not None
    assert single.fake_probability == pytest.approx(expected[0].fake_probability, abs=SCORE_TOLERANCE)
    assert [r.source for r in many] == sources
    assert [r.ok for r in many] == [True] * (len(sources) - 1) + [False]
    expected_scores = [r.fake_probability for r in expected[:-1]]
    assert [r.fake_probability for r in many[:-1]] == pytest.approx(expected_scores, abs=SCORE_TOLERANCE)
    assert isinstance(many[-1].error, BadImageError)


def test_the_served_card_runs_the_copy_move_check_unless_the_caller_turns_it_off(triton_server):
    """The demo B0's card is calibrated for the copy-move check: a copied patch comes back as two regions,
    in every entry point, and ``copy_move=False`` leaves them out (as video frames do)."""
    copied = Image.fromarray(copied_astronaut())

    def copies(detection: Detection) -> list:
        return [region for region in detection.regions if region.kind == "copy_move"]

    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        assert client.model_info().card.copy_move_calibration is not None
        assert len(copies(client.detect(copied))) == 2
        assert not copies(client.detect(copied, copy_move=False))
        checked, unchecked = client.detect_many([copied, copied], concurrency=1), client.detect_many(
            [copied], copy_move=False)
        assert [len(copies(result)) for result in checked + unchecked] == [2, 2, 0]

    async def run():
        async with AsyncDeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
            return await client.detect(copied), await client.detect(copied, copy_move=False)

    with_check, without = asyncio.run(run())
    assert len(copies(with_check)) == 2 and not copies(without)
    assert with_check.fake_probability >= without.fake_probability


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_nothing_listening_is_server_unreachable_after_retries(protocol):
    url = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with DeepfakeClient(url, protocol=protocol, timeout_s=5, retries=2) as client:
        with pytest.raises(ServerUnreachableError, match=url.replace(".", r"\.")):
            client.detect(photo())
        assert time.monotonic() - started >= 0.7, "connection refused must be retried with back-off (0.25 + 0.5 s)"
        results = client.detect_many([b"a", photo(), photo()])
    assert [type(r.error) for r in results] == [ServerUnreachableError] * 3

    async def run():
        async with AsyncDeepfakeClient(url, protocol=protocol, timeout_s=5, retries=0) as client:
            await client.detect(photo())

    with pytest.raises(ServerUnreachableError, match=url.replace(".", r"\.")):
        asyncio.run(run())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_model_not_ready(triton_server, protocol):
    url, key = url_of(triton_server, protocol), triton_server.admin_key
    # With the admin key the message lists the server's models; without it (an admin API) it still says why.
    for admin_key, expected in ((key, f"no_such_model.*{MODEL}"), (None, "no_such_model.*not ready")):
        with DeepfakeClient(url, protocol=protocol, model="no_such_model", admin_key=admin_key) as client:
            with pytest.raises(ModelNotReadyError, match=expected):
                client.model_info()

    async def run():
        async with AsyncDeepfakeClient(url, protocol=protocol, model="no_such_model", admin_key=key) as c:
            await c.detect(photo())

    with pytest.raises(ModelNotReadyError, match=f"no_such_model.*{MODEL}"):
        asyncio.run(run())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_request_slower_than_the_timeout_fails_with_request_timeout(triton_server, protocol):
    with DeepfakeClient(url_of(triton_server, protocol), protocol=protocol, model=MODEL, timeout_s=1e-4) as client:
        with pytest.raises(RequestTimeoutError, match="within 0.0001 s"):
            client.detect(photo())


def test_server_killed_mid_run_fails_the_rest_and_invents_nothing(demo_repository, tmp_path):
    """Our own server (the session one must survive): stop it while detect_many is half way through."""
    repository = tmp_path / "repository"
    shutil.copytree(demo_repository / "embedded" / "deepfake_cnn", repository / "deepfake_cnn")
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    image = jpeg_bytes("chelsea")
    with TritonServer(repository, **ports) as server:

        def sources():
            for index in range(64):
                if index == 24:
                    server.stop()
                yield image

        with DeepfakeClient(server.grpc_url, model="deepfake_cnn", retries=1) as client:
            results = client.detect_many(sources(), concurrency=2, batch_size=4)
    assert len(results) == 64
    detections = [r for r in results if r.ok]
    assert 0 < len(detections) <= 24, "only inputs sent before the server stopped can have a result"
    assert len({round(r.fake_probability, 5) for r in detections}) == 1, "the same image must get the same score"
    # While stopping, Triton first unloads its models (requests then fail as "no available versions").
    assert all(isinstance(r.error, (ServerUnreachableError, ModelNotReadyError)) for r in results if not r.ok)
    assert not any(r.ok for r in results[24:]) and isinstance(results[-1].error, ServerUnreachableError)


def test_threads_sharing_one_client_run_concurrently(triton_server):
    from concurrent.futures import ThreadPoolExecutor

    def client_threads() -> set[threading.Thread]:  # the client's connection lanes are named deepfake-client-N
        return {t for t in threading.enumerate() if t.name.startswith("deepfake-client-")}

    image = jpeg_bytes("rocket")
    before = client_threads()  # other clients' lanes, if any are still open
    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        expected = client.detect(image).fake_probability
        with ThreadPoolExecutor(4) as threads:
            scores = list(threads.map(lambda _: client.detect(image).fake_probability, range(12)))
        lanes = client_threads() - before
        assert len(lanes) >= 2, f"concurrent callers were serialised on one connection: {sorted(t.name for t in lanes)}"
    assert not any(lane.is_alive() for lane in lanes), "close() ends the client's threads"
    assert scores == pytest.approx([expected] * 12, abs=SCORE_TOLERANCE)


def test_detection_carries_the_provenance_of_its_source(triton_server, tmp_path):
    """Content Credentials and metadata read from the same source as the verdict: a path, bytes, a file object
    (read once; a non-seekable one too), none for a decoded image or when turned off; the asyncio client and
    detect_many alike, and a video. Never blended into the score."""
    import provenance_samples as samples
    from PIL import Image

    from deepfake_edge.client.video import detect_video

    ai = samples.ai_png(tmp_path)
    tampered = samples.tampered_jpeg(tmp_path)
    data = ai.read_bytes()

    class Pipe(io.RawIOBase):  # a stream that cannot seek, like a socket or a pipe
        def __init__(self, payload: bytes):
            self._stream = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            return self._stream.readinto(buffer)

    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        by_path = client.detect(ai, mode="fast")
        sources = [str(ai), data, io.BytesIO(data), Pipe(data), Image.open(ai), tampered]
        many = client.detect_many(sources, mode="fast")
        video = detect_video(client, samples.signed_mp4(tmp_path), mode="fast")
    assert (by_path.provenance.status, by_path.provenance.ai_generated) == ("valid", True)
    assert by_path.provenance.claim_generator == f"{samples.AI_APP} 2.1"
    assert all(result.ok for result in many), many
    assert [result.provenance and result.provenance.status for result in many] == [
        "valid", "valid", "valid", "valid", None, "invalid"]
    assert many[0].provenance == by_path.provenance and many[5].provenance.validation == "tampered"
    scores = [result.fake_probability for result in many[:5]]
    assert scores == pytest.approx([by_path.fake_probability] * 5, abs=SCORE_TOLERANCE), "never part of the score"
    assert video.provenance.status == "valid" and video.provenance.format == "video/mp4"

    with DeepfakeClient(triton_server.grpc_url, model=MODEL, provenance=False) as client:
        off = client.detect(ai, mode="fast")
        off_video = detect_video(client, tmp_path / "camera.mp4", mode="fast")
    assert off.provenance is None and off_video.provenance is None
    assert off.fake_probability == pytest.approx(by_path.fake_probability, abs=SCORE_TOLERANCE)

    async def run() -> Detection:
        async with AsyncDeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
            return await client.detect(data, mode="fast")

    assert asyncio.run(run()).provenance == by_path.provenance
