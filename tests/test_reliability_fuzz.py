"""Hostile input, property-based: random bytes and mutated real images thrown at the shared preprocessing
and at the web API. The only allowed failure is ``BadImageError`` (a 4xx from the API); no input may take
longer than a few seconds or more than a bounded amount of memory.

Hypothesis runs derandomized without an example database, so CI sees the same inputs every time.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from reliability_inputs import bombs, mutated_images, seed_images

from deepfake_edge.preprocessing import BadImageError, Preprocessor, load_image

# Small enough that one decode stays fast on a loaded 2-core machine; the guard logic is the same at 40 M.
FUZZ_MAX_PIXELS = 4_000_000
PER_INPUT_LIMIT_S = 30.0  # generous: shared CI machines; a hang is what it catches
MEMORY_BUDGET_MB = 400  # peak RSS while one example runs, above the RSS at the start of the fuzz test
PREPROCESSOR = Preprocessor(input_size=128, resize_size=146)
FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


class PeakRSS:
    """The peak RSS of this process between ``start()`` and ``peak_mb()``, not since the process began.

    Linux keeps the peak (VmHWM) for the process's whole life, so an earlier test's peak would hide or
    cause a failure here; writing 5 to /proc/self/clear_refs resets it to the current RSS. Where that is
    not allowed, a thread samples RSS every millisecond instead (a multi-GB allocation takes far longer).
    """

    def __init__(self) -> None:
        self._sampled: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "PeakRSS":
        self.stop()
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            self._sampled = _status_mb("VmRSS")
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, name="peak-rss-sampler", daemon=True)
            self._thread.start()
        self.start_mb = _status_mb("VmRSS")
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._sampled = max(self._sampled or 0.0, _status_mb("VmRSS"))

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._thread = None

    def peak_mb(self) -> float:
        if self._thread is not None:
            return max(self._sampled or 0.0, _status_mb("VmRSS"))
        return _status_mb("VmHWM")

    __enter__ = start

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _Bounds:
    """Checks that an example finished in time and that RSS stayed within the budget *while it ran*: the
    peak since the example started, compared with the RSS when the test started."""

    def __init__(self) -> None:
        self.baseline_mb = psutil.Process().memory_info().rss / 2**20
        self.peak = PeakRSS()

    def begin(self) -> float:
        self.peak.start()
        return time.perf_counter()

    def check(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        peak_mb = self.peak.peak_mb()
        self.peak.stop()
        assert elapsed < PER_INPUT_LIMIT_S, f"one input took {elapsed:.1f} s"
        assert peak_mb < self.baseline_mb + MEMORY_BUDGET_MB, (
            f"peak RSS {peak_mb:.0f} MB while handling one input (start of test {self.baseline_mb:.0f} MB)")


def _preprocess_or_reject(data: bytes, bounds: _Bounds) -> None:
    started = bounds.begin()
    try:
        tensor = PREPROCESSOR(data, max_pixels=FUZZ_MAX_PIXELS)
    except BadImageError as error:
        assert str(error), "the reason must be told"
    else:
        assert tensor.dtype == np.uint8 and tensor.shape == (3, 128, 128)
    bounds.check(started)


@pytest.mark.timeout(120)
def test_preprocessing_survives_random_bytes():
    bounds = _Bounds()

    @settings(FUZZ, max_examples=150)
    @given(st.one_of(st.binary(max_size=2048), st.sampled_from(sorted(seed_images().values())).flatmap(
        lambda seed: st.binary(max_size=256).map(lambda tail: seed[:16] + tail))))
    def check(data: bytes) -> None:
        _preprocess_or_reject(data, bounds)

    check()


@pytest.mark.timeout(180)
def test_preprocessing_survives_mutated_real_images():
    bounds = _Bounds()

    @settings(FUZZ, max_examples=400)
    @given(mutated_images())
    def check(data: bytes) -> None:
        _preprocess_or_reject(data, bounds)

    check()


def test_unmutated_seeds_decode_in_every_format():
    for name, data in seed_images().items():
        assert PREPROCESSOR(data).shape == (3, 128, 128), name


@pytest.mark.parametrize("size", [(20_000, 1), (1, 60_000), (3, 40_000)])
def test_an_elongated_image_is_refused_before_resizing_blows_up(size):
    """Regression: a 144-byte 20,000 x 1 PNG used to be resized to 5,120,000 x 256 (3.9 GB) before cropping."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 2_000
    started = time.perf_counter()
    with pytest.raises(BadImageError, match="too elongated"):
        Preprocessor(input_size=224, resize_size=256)(buffer.getvalue())
    assert time.perf_counter() - started < 2.0
    # A wide panorama is still fine.
    assert Preprocessor(224, 256)(Image.new("RGB", (4000, 400))).shape == (3, 224, 224)


@pytest.mark.attack("E5", "decompression bombs in PNG, GIF, BMP, JPEG, TIFF, PPM")
def test_bombs_in_every_format_are_refused_within_bounded_memory():
    """In a fresh interpreter limited to 2 GiB of address space, after importing everything the services
    import (none may disarm Pillow's guard): every bomb is a BadImageError and the peak RSS stays small."""
    script = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        sys.path.insert(0, sys.argv[1])
        import deepfake_edge.webapp.app, deepfake_edge.client  # everything the services import
        from PIL import Image
        from deepfake_edge.preprocessing import BadImageError, DEFAULT_MAX_PIXELS, Preprocessor
        from reliability_inputs import bombs
        assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS >= DEFAULT_MAX_PIXELS
        for name, data in bombs().items():
            try:
                Preprocessor(224, 256)(data)
            except BadImageError as error:
                print(name, "->", error)
            else:
                raise SystemExit(f"{name} was decoded")
        # VmHWM, not ru_maxrss: ru_maxrss keeps the forking parent's peak across exec on Linux.
        hwm_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print("peak_rss_mb", hwm_kb // 1024)
        """
    )
    tests_dir = str(Path(__file__).resolve().parent)
    result = subprocess.run([sys.executable, "-c", script, tests_dir], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" -> ", 1) for line in result.stdout.splitlines() if " -> " in line)
    assert set(lines) == set(bombs()), result.stdout
    assert all("too large" in reason or "truncated" in reason for reason in lines.values()), lines
    peak_mb = int(result.stdout.rsplit("peak_rss_mb", 1)[1])
    assert peak_mb < 400, f"peak RSS {peak_mb} MB while refusing bombs"


def test_sixteen_bit_images_convert_exactly_without_float64_temporaries():
    """Regression: a 40 KB 16-bit PNG of 4000 x 4000 peaked at ~500 MB RSS through float64 temporaries."""
    values = np.arange(65_536, dtype=np.uint16).reshape(256, 256)
    expected = np.clip(values / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)  # the float definition
    for image in (Image.fromarray(values), Image.frombytes("I;16B", (256, 256), values.byteswap().tobytes()),
                  Image.fromarray(values.astype(np.int32))):
        assert np.array_equal(np.asarray(load_image(image))[..., 0], expected), image.mode
    script = textwrap.dedent(
        """
        import io, numpy as np
        from PIL import Image
        from deepfake_edge.preprocessing import Preprocessor
        buffer = io.BytesIO()
        Image.fromarray(np.full((4000, 4000), 1000, np.uint16)).save(buffer, format="PNG")
        Preprocessor(224, 256)(buffer.getvalue())
        # VmHWM, not ru_maxrss: ru_maxrss keeps the forking parent's peak across exec on Linux.
        print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) < 350, f"peak RSS {result.stdout.strip()} MB for a 16 M-pixel 16-bit image"


def test_project_pixel_limit_fires_before_pillows_and_both_are_armed():
    from reliability_inputs import png_declaring

    with pytest.raises(BadImageError, match=r"64,000,000 pixels \(limit 40,000,000\)"):
        load_image(png_declaring(8_000, 8_000))  # between our 40 M and Pillow's 89 M
    with pytest.raises(BadImageError, match="limit 1,000"):
        load_image(png_declaring(100, 100), max_pixels=1_000)  # configurable downwards
    with pytest.raises(BadImageError, match="decompression bomb"):
        load_image(png_declaring(30_000, 30_000), max_pixels=10**10)  # Pillow's guard stays underneath
    assert Image.MAX_IMAGE_PIXELS is not None


# -- the web API ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def web_client(triton_server):
    """The real Flask app (Flask's test client) in front of the session's real Triton server."""
    from deepfake_edge.webapp.app import create_app

    return create_app(triton_server.grpc_url, timeout_s=60.0).test_client()


def _check_answer(response, bounds: _Bounds, started: float) -> None:
    assert response.status_code in (200, 400, 413), (response.status_code, response.get_data()[:300])
    body = response.get_json()
    assert isinstance(body, dict)
    if response.status_code == 200:
        assert body["label"] in ("Real", "Fake") and body["verdict"]
    else:
        assert isinstance(body["error"], str) and body["error"]
    bounds.check(started)


@pytest.mark.attack("E6", "mutated uploads, random file names and form fields (Hypothesis)")
@pytest.mark.server
@pytest.mark.timeout(240)
def test_web_api_survives_mutated_uploads_names_and_fields(web_client):
    bounds = _Bounds()

    @settings(FUZZ, max_examples=60)
    @given(data=st.one_of(mutated_images(), st.binary(max_size=512)),
           filename=st.text(max_size=300), alpha=st.one_of(st.none(), st.text(max_size=20)),
           heatmap=st.sampled_from([None, "0", "1", "off", "\x00"]))
    def check(data: bytes, filename: str, alpha, heatmap) -> None:
        fields = {"file": (io.BytesIO(data), filename)}
        if alpha is not None:
            fields["heatmap_alpha"] = alpha
        if heatmap is not None:
            fields["heatmap"] = heatmap
        started = bounds.begin()
        _check_answer(web_client.post("/api/detect", data=fields, content_type="multipart/form-data"), bounds, started)

    check()


@pytest.mark.attack("E7", "malformed multipart bodies (Hypothesis)")
@pytest.mark.server
@pytest.mark.timeout(120)
def test_web_api_survives_malformed_request_bodies(web_client):
    bounds = _Bounds()
    content_types = st.sampled_from([
        "multipart/form-data; boundary=xyz", "multipart/form-data", "multipart/form-data; boundary=",
        "application/octet-stream", "image/jpeg", "text/plain; charset=utf-7", "application/x-www-form-urlencoded",
    ])

    @settings(FUZZ, max_examples=80)
    @given(body=st.one_of(st.binary(max_size=1024), st.builds(
        lambda head, tail: b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + head + tail,
        st.binary(max_size=64), st.binary(max_size=256))), content_type=content_types)
    def check(body: bytes, content_type: str) -> None:
        started = bounds.begin()
        response = web_client.post("/api/detect", data=body, content_type=content_type)
        assert response.status_code in (400, 413, 415), (response.status_code, response.get_data()[:300])
        assert response.get_json()["error"]
        bounds.check(started)

    check()


@pytest.mark.server
def test_web_api_refuses_an_elongated_image_quickly(web_client):
    buffer = io.BytesIO()
    Image.new("RGB", (20_000, 1)).save(buffer, format="PNG")
    with PeakRSS() as peak:  # this request's peak, not the test process's lifetime peak
        started = time.perf_counter()
        response = web_client.post("/api/detect", data={"file": (io.BytesIO(buffer.getvalue()), "line.png")},
                                   content_type="multipart/form-data")
        elapsed = time.perf_counter() - started
        grown_mb = peak.peak_mb() - peak.start_mb
    assert response.status_code == 400 and "too elongated" in response.get_json()["error"]
    assert elapsed < 10.0
    # The regression resized to 5,120,000 x 256 (3.9 GB); refusing the image costs a few MB.
    assert grown_mb < 100, f"RSS peaked {grown_mb:.0f} MB above its level before the request"


def test_peak_rss_sees_this_tests_allocation_and_not_an_earlier_one():
    """The meter behind the memory bounds: an earlier peak does not count, a transient one does."""
    earlier = np.ones(300 * 2**20 // 8)  # an earlier test's peak, freed before the measurement
    earlier[::4096] = 2.0
    del earlier
    with PeakRSS() as peak:
        assert peak.peak_mb() - peak.start_mb < 50
        transient = np.ones(200 * 2**20 // 8)  # touched, then freed before the reading
        transient[::512] = 3.0
        del transient
        assert peak.peak_mb() - peak.start_mb > 150
