"""Client failover between several endpoints (``urls=[...]``, ``detect --url a --url b``) against the real
tritonserver (``triton_server``) and a port where nothing listens: no load balancer involved."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client_samples import photo
from deepfake_edge.client import AsyncDeepfakeClient, DeepfakeClient, Detection, ServerUnreachableError
from deepfake_edge.server.triton import TritonServer, free_port

pytestmark = pytest.mark.server

MODEL = "deepfake_cnn"  # the small model: these tests are about where requests go, not about the model
PROTOCOLS = ("grpc", "http")
SCORE_TOLERANCE = 1e-5
NAMES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")


def url_of(server: TritonServer, protocol: str) -> str:
    return server.grpc_url if protocol == "grpc" else server.http_url


@pytest.fixture(scope="module")
def sources() -> list[bytes]:
    encoded = []
    for name in NAMES:
        buffer = io.BytesIO()
        photo(name).convert("RGB").save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded * 4


@pytest.fixture(scope="module")
def reference(triton_server: TritonServer, sources: list[bytes]) -> list[float]:
    """Each source's score from the live server alone, over one endpoint."""
    with DeepfakeClient(triton_server.grpc_url, model=MODEL, provenance=False) as client:
        return [client.detect(source, mode="fast").fake_probability for source in sources[:len(NAMES)]]


def dead_url() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there: connections are refused


def assert_all_scored(results: list, reference: list[float]) -> None:
    assert all(isinstance(result, Detection) for result in results), [r for r in results if not r.ok][:2]
    for index, result in enumerate(results):
        assert abs(result.fake_probability - reference[index % len(reference)]) <= SCORE_TOLERANCE


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sync_client_answers_everything_from_the_second_endpoint_when_the_first_is_dead(
        triton_server, sources, reference, protocol, caplog):
    caplog.set_level("INFO", logger="deepfake_edge.client.endpoints")
    dead, live = dead_url(), url_of(triton_server, protocol)
    with DeepfakeClient(urls=[dead, live], protocol=protocol, model=MODEL, provenance=False) as client:
        assert client.url == dead
        results = client.detect_many(sources, concurrency=4, batch_size=1, mode="fast")
        assert client.url == live, "later requests go straight to the endpoint that answers"
        assert_all_scored(results, reference)
        assert_all_scored([client.detect(sources[0], mode="fast")], reference)
    assert any(f"cannot reach {dead}" in record.getMessage() and f"trying {live}" in record.getMessage()
               for record in caplog.records)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_client_fails_over_the_same_way(triton_server, sources, reference, protocol):
    dead, live = dead_url(), url_of(triton_server, protocol)

    async def main() -> list:
        async with AsyncDeepfakeClient(urls=[dead, live], protocol=protocol, model=MODEL, provenance=False) as client:
            results = await client.detect_many(sources, concurrency=4, batch_size=1, mode="fast")
            assert client.url == live
            return results

    assert_all_scored(asyncio.run(main()), reference)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_when_every_endpoint_is_dead_each_source_fails_with_an_error_naming_them_all(sources, protocol):
    first, second = dead_url(), dead_url()
    with DeepfakeClient(urls=[first, second], protocol=protocol, model=MODEL, retries=1, provenance=False) as client:
        with pytest.raises(ServerUnreachableError, match=f"{first} or {second}"):
            client.model_info()
        results = client.detect_many(sources[:3], concurrency=2, mode="fast")
    assert [type(result.error) for result in results] == [ServerUnreachableError] * 3
    assert all(f"{first} or {second}" in result.reason for result in results)


def test_detect_takes_repeated_urls(triton_server, tmp_path: Path):
    photos = tmp_path / "photos"
    photos.mkdir()
    photo("astronaut").save(photos / "astronaut.jpg", quality=90)
    photo("chelsea").save(photos / "chelsea.png")
    command = [sys.executable, "-m", "deepfake_edge.cli", "detect", "--model", MODEL, "--mode", "fast", str(photos)]
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    dead = dead_url()
    answered = subprocess.run(command + ["--url", dead, "--url", triton_server.grpc_url], capture_output=True,
                              text=True, timeout=120, env=environment)
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.count("%") == 2 and f"cannot reach {dead}" in answered.stderr
    other = dead_url()
    unreachable = subprocess.run(command + ["--url", dead, "--url", other], capture_output=True, text=True,
                                 timeout=120, env=environment)
    assert unreachable.returncode == 3, unreachable.stderr
    assert f"cannot reach the Triton server at {dead} or {other}" in unreachable.stderr
