"""Forward one decoded image to every configured Triton model through the project's client.

The web app holds no model. :class:`DetectionService` keeps one :class:`~deepfake_edge.client.DeepfakeClient`
per Triton model, shared by every request (the client is thread-safe: concurrent ``detect`` calls run
concurrently, one connection per concurrent caller), asks the primary model for its verdict and heatmap
and every other model for its score (on scoring threads, so that a request stops waiting at its
deadline), and renders the heatmap with :func:`deepfake_edge.heatmap.overlay_heatmap`.

Videos (:meth:`DetectionService.detect_video`) are scored by the primary model alone, frame by frame through
:func:`deepfake_edge.client.video.detect_video`, on the request's own thread.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from deepfake_edge.client import (
    DeepfakeClient,
    DeepfakeClientError,
    Detection,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnreachableError,
)
from deepfake_edge.client.results import format_verdict, region_record
from deepfake_edge.client.video import VideoDetection, detect_video, video_record
from deepfake_edge.heatmap import overlay_heatmap
from deepfake_edge.model_card import ModelCard
from deepfake_edge.regions import DEFAULT_MODE
from deepfake_edge.video import VideoLimits, VideoSource

# Longest side of the images the page shows: enough for a sharp view, small enough to send as PNG.
DISPLAY_MAX_SIDE = 512
_ARCH_TITLES = {"efficientnet_b0": "EfficientNet-B0", "small_cnn": "CNN baseline"}
log = logging.getLogger(__name__)
# Scoring runs on these threads so that a request can stop waiting at its deadline. DeepfakeClient.detect
# takes no deadline: each attempt is bounded by the client's timeout_s, but a call can make several
# attempts (retries with back-off; the model config is fetched with three more calls the first time), and
# the request's deadline started before its upload was decoded (a SIGSTOPped Triton held one web request
# 20 s against a 10 s timeout). Threads left waiting on a stalled server end with their own timeouts.
# 16: the web server's 8 threads times the page's 2 models.
_SCORING_THREADS = 16
# Errors after which the shared client is replaced by a fresh one (new connections, model config read
# again): the server restarted, the model was unloaded or reloaded, or Triton rejected a request built
# from a config that may be stale. Not after a timeout (a busy server is not helped by new connections)
# nor a bad image.
_REPLACE_AFTER = (ModelNotReadyError, ServerError, ServerUnreachableError)
# A client younger than this is not replaced again: while the server is down every request fails, and
# one fresh client per second is enough to pick up the restarted server.
_MIN_CLIENT_AGE_S = 1.0
_HEALTH_TIMEOUT_S = 5.0
# Requests in flight per video: the frames of one video are scored two at a time (client/video.py's
# default), so that one video cannot take every Triton instance from the other uploads.
VIDEO_CONCURRENCY = 2


class VideoTimeoutError(Exception):
    """A video's analysis passed its deadline; it was stopped between two frames."""

    def __init__(self, timeout_s: float):
        super().__init__(f"the video was not analysed within {timeout_s:g} s")
        self.timeout_s = timeout_s


class _DeadlineClient:
    """The shared client as :func:`detect_video` uses it, stopping the video at ``deadline``.

    :func:`detect_video` takes no deadline and each frame's call is only bounded by the client's timeout, so
    120 frames against a stalled server could take 120 timeouts. Past ``deadline`` the frame results stop
    with :class:`VideoTimeoutError` (the frames still in flight are cancelled as the iterator closes), and
    no heatmap is asked for.
    """

    def __init__(self, client: DeepfakeClient, deadline: float, timeout_s: float):
        self._client, self._deadline, self._timeout_s = client, deadline, timeout_s

    def _check(self) -> None:
        if time.monotonic() > self._deadline:
            raise VideoTimeoutError(self._timeout_s)

    def model_info(self) -> Any:
        return self._client.model_info()

    def iter_detect(self, sources: Any, **options: Any) -> Iterator[Any]:
        results = self._client.iter_detect(sources, **options)
        try:
            for result in results:
                self._check()
                yield result
        finally:
            results.close()

    def detect(self, source: Any, **options: Any) -> Detection:
        self._check()
        return self._client.detect(source, **options)


def data_url(image: Image.Image, image_format: str = "PNG") -> str:
    """``image`` encoded as a ``data:`` URL (PNG at a fast compression level, or JPEG quality 90)."""
    buffer = io.BytesIO()
    if image_format == "PNG":
        image.save(buffer, format="PNG", compress_level=3)  # level 6 takes ~3x longer for ~4% less
    else:
        image.save(buffer, format="JPEG", quality=90)
    return f"data:image/{image_format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@dataclass(frozen=True)
class ModelScore:
    """One model's answer for one image (``error`` set instead when that model failed)."""

    name: str
    title: str
    role: str
    version: str | None = None
    label: str | None = None
    confidence: float | None = None
    fake_probability: float | None = None
    logit: float | None = None
    threshold: float | None = None
    verdict: str | None = None
    error: str | None = None


class _Generation:
    """One client of a :class:`_SharedClient`, with the requests using it right now."""

    def __init__(self, client: DeepfakeClient):
        self.client = client
        self.created = time.monotonic()
        self.users = 0
        self.retired = False


class _SharedClient:
    """The one :class:`DeepfakeClient` for one model, shared by every request thread.

    Created on first use (a model that is not ready yet does not stop the app from starting; the client
    reads the model config on its first successful call). After an error in ``_REPLACE_AFTER`` the
    client is retired under a lock and the next request gets a fresh one: the client resets a broken
    connection itself, but it keeps the model config it read once, which a restarted or reloaded model
    may have changed. A retired client is closed once its last in-flight call has returned.
    """

    def __init__(self, url: str, protocol: str, model: str, timeout_s: float):
        self._args = dict(url=url, protocol=protocol, model=model, timeout_s=timeout_s)
        self._lock = threading.Lock()
        self._current: _Generation | None = None

    @contextmanager
    def use(self) -> Iterator[DeepfakeClient]:
        with self._lock:
            if self._current is None:
                self._current = _Generation(DeepfakeClient(**self._args))
            generation = self._current
            generation.users += 1
        try:
            yield generation.client
        except _REPLACE_AFTER as error:
            if not isinstance(error, RequestTimeoutError):
                self._retire(generation, error)
            raise
        finally:
            with self._lock:
                generation.users -= 1
                closing = generation.retired and generation.users == 0
            if closing:
                # Off this thread: closing joins the client's connection threads, the request need not wait.
                threading.Thread(target=generation.client.close, name="webapp-client-close", daemon=True).start()

    def _retire(self, generation: _Generation, error: Exception) -> None:
        with self._lock:
            if self._current is not generation or time.monotonic() - generation.created < _MIN_CLIENT_AGE_S:
                return  # already replaced by another request, or too recently
            generation.retired = True
            self._current = None
        log.info("replacing the client for %s after: %s", self._args["model"], error)

    def ready(self) -> None:
        """Ask the server whether the model is ready now, on one of the shared client's connections.

        Returns when it is; raises ModelNotReadyError, ServerUnreachableError or RequestTimeoutError.
        """
        with self.use() as client:
            client.check_ready(timeout_s=_HEALTH_TIMEOUT_S)


class DetectionService:
    """Scores images with ``models[0]`` (the verdict and heatmap) and ``models[1:]`` (for comparison)."""

    def __init__(self, triton_url: str, protocol: str, models: tuple[str, ...], timeout_s: float):
        if not models:
            raise ValueError("at least one model name is needed")
        self.triton_url = triton_url
        self.protocol = protocol
        self.models = tuple(models)
        self.timeout_s = timeout_s
        self._clients = {name: _SharedClient(triton_url, protocol, name, timeout_s) for name in self.models}
        self._executor = ThreadPoolExecutor(max_workers=_SCORING_THREADS, thread_name_prefix="webapp-scoring")

    def detect(self, image: Image.Image, heatmap_alpha: float | None = 0.5,
               deadline: float | None = None, mode: str = DEFAULT_MODE) -> dict[str, Any]:
        """The JSON-ready result for one RGB image analysed in ``mode`` ("whole" or "fast", see
        deepfake_edge/regions.py) by the primary model (comparison models: fast); ``heatmap_alpha=None``
        skips the heatmap.

        ``deadline`` (``time.monotonic()`` seconds; default ``timeout_s`` from now) bounds the whole call:
        past it the primary model's answer is a :class:`RequestTimeoutError`, a comparison model's an
        ``error`` field. Raises the client's exceptions when the primary model fails; a failing
        comparison model only fills that model's ``error`` field.
        """
        started = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s if deadline is None else deadline
        # Comparison models score the single view: the small CNN's whole-image analysis is ~170 tiles of
        # 112 px per photo, as much memory and CPU as the verdict's own, for a score shown beside it.
        others = [self._executor.submit(self._score_other, name, image, "fast") for name in self.models[1:]]
        primary_future = self._executor.submit(self._score_primary, image, heatmap_alpha is not None, mode)
        primary, detection, card = self._result_by(primary_future, deadline)
        scores = [primary] + [self._other_by(future, name, deadline) for future, name in zip(others, self.models[1:])]
        result: dict[str, Any] = {
            "kind": "image",
            "label": primary.label,
            "confidence": primary.confidence,
            "fake_probability": primary.fake_probability,
            "logit": primary.logit,
            "verdict": primary.verdict,
            "threshold": primary.threshold,
            "model": primary.name,
            "model_title": primary.title,
            "model_version": primary.version,
            "models": [asdict(score) for score in scores],
            "raw_scores": {
                s.name: {"logit": s.logit, "fake_probability": s.fake_probability} for s in scores if not s.error
            },
            "image": {"width": image.width, "height": image.height},
            "mode": detection.mode,
            "regions": [region_record(region) for region in detection.regions],
            "notes": list(detection.notes),
            "heatmap": None,
        }
        if heatmap_alpha is not None and detection.heatmap is not None:
            result["heatmap"] = self._render_heatmap(image, detection, heatmap_alpha)
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        return result

    def detect_video(self, source: VideoSource, limits: VideoLimits, heatmap_alpha: float | None = 0.5,
                     deadline: float | None = None, mode: str = DEFAULT_MODE,
                     timeout_s: float | None = None) -> dict[str, Any]:
        """The JSON-ready result for one video: :func:`video_record` of the primary model's verdict, plus what
        the page shows (``filename`` is the caller's to add).

        Only the primary model scores videos: the comparison models are skipped (a note says so). Added to the
        record (whose ``provenance`` is None: the app adds it): ``model_title``, ``models`` and ``raw_scores``
        (the primary's entry, as for an image),
        ``regions`` (the peak frame's, boxes in video pixels), ``heatmap`` (the peak frame and its overlay, as
        an image's ``heatmap``; None when ``heatmap_alpha`` is None) and ``elapsed_ms``. Raises
        ``BadVideoError``, the client's errors, and :class:`VideoTimeoutError` past ``deadline``
        (``time.monotonic()`` seconds, ``timeout_s`` after the start by default; ``timeout_s`` is named in
        the error).
        """
        started = time.perf_counter()
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s if deadline is None else deadline
        name = self.models[0]
        with self._clients[name].use() as client:
            detection = detect_video(_DeadlineClient(client, deadline, timeout_s), source, limits,
                                     heatmap=heatmap_alpha is not None, mode=mode, concurrency=VIDEO_CONCURRENCY,
                                     provenance=False)  # the app reads it from the upload's bytes
            card = client.model_info().card.for_mode(mode)
        result = video_record(detection)
        title = _ARCH_TITLES.get(card.arch, card.arch)
        score = ModelScore(name=name, title=title, role="primary", version=detection.model_version,
                           label=detection.label, confidence=float(detection.confidence),
                           fake_probability=float(detection.fake_probability), logit=float(detection.logit),
                           threshold=float(detection.threshold), verdict=detection.verdict)
        if len(self.models) > 1:
            result["notes"].append(f"only {name} analyses videos: {', '.join(self.models[1:])} "
                                   f"{'was' if len(self.models) == 2 else 'were'} not run")
        result.update({
            "model_title": title,
            "models": [asdict(score)],
            "raw_scores": {name: {"logit": score.logit, "fake_probability": score.fake_probability}},
            "regions": [region_record(region) for region in detection.peak.regions],
            "heatmap": None,
        })
        if heatmap_alpha is not None and detection.heatmap is not None and detection.peak_image is not None:
            result["heatmap"] = self._render_video_heatmap(detection, heatmap_alpha)
        result["elapsed_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        return result

    def health(self) -> dict[str, Any]:
        """Readiness of each model, asked of the server at each call (never raises, nothing cached)."""
        states: dict[str, str] = {}
        for name in self.models:
            try:
                self._clients[name].ready()
                states[name] = "ready"
            except DeepfakeClientError as error:
                states[name] = f"unavailable: {error}"
        return {"triton_url": self.triton_url, "protocol": self.protocol, "models": states}

    def _result_by(self, future: Future, deadline: float) -> Any:
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            raise RequestTimeoutError(self.triton_url, self.timeout_s) from None

    def _other_by(self, future: Future, name: str, deadline: float) -> ModelScore:
        try:
            return self._result_by(future, deadline)
        except RequestTimeoutError as error:
            return ModelScore(name=name, title=name, role="baseline", error=str(error))

    def _score_primary(self, image: Image.Image, want_heatmap: bool,
                       mode: str) -> tuple[ModelScore, Detection, ModelCard]:
        name = self.models[0]
        with self._clients[name].use() as client:
            detection = client.detect(image, heatmap=want_heatmap, mode=mode)
            card = client.model_info().card.for_mode(mode)
        return _score(name, "primary", detection, card), detection, card

    def _score_other(self, name: str, image: Image.Image, mode: str) -> ModelScore:
        try:
            with self._clients[name].use() as client:
                detection = client.detect(image, heatmap=False, mode=mode)
                return _score(name, "baseline", detection, client.model_info().card.for_mode(mode))
        except DeepfakeClientError as error:
            return ModelScore(name=name, title=name, role="baseline", error=str(error))

    @staticmethod
    def _render_heatmap(image: Image.Image, detection: Detection, alpha: float) -> dict[str, Any]:
        return _heatmap_record(image, detection.heatmap, detection.heatmap_box, image.size, alpha)

    @staticmethod
    def _render_video_heatmap(detection: VideoDetection, alpha: float) -> dict[str, Any]:
        # The peak frame as analysed (at most 1280 px); its heatmap box, like every box of a video, is in
        # the video's own pixels.
        return _heatmap_record(detection.peak_image, detection.heatmap, detection.heatmap_box,
                               (detection.video.width, detection.video.height), alpha)


def _heatmap_record(image: Image.Image, heatmap: Any, heatmap_box: Any, box_of_size: tuple[int, int],
                    alpha: float) -> dict[str, Any]:
    """``image`` (at most ``DISPLAY_MAX_SIDE``) and its heatmap overlay as data URLs; ``heatmap_box`` is in
    pixels of an image of ``box_of_size``."""
    # Downscale first: the heatmap's box is scaled to the copy, so the overlay lines up the same.
    # resize(), not thumbnail(): that needs a full-size copy first, which doubled the web app's decode
    # memory (4 bytes a pixel: 144 MB for 6000 x 6000).
    scale = DISPLAY_MAX_SIDE / max(image.size)
    shown = image if scale >= 1 else image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
        Image.Resampling.LANCZOS, reducing_gap=2.0)
    overlay = overlay_heatmap(shown, heatmap, heatmap_box, alpha, box_of_size=box_of_size)
    return {
        "alpha": alpha,
        "width": shown.width,
        "height": shown.height,
        # The plain picture only sits under the overlay in the page: JPEG is 5x smaller and faster.
        "image": data_url(shown, "JPEG"),
        "overlay": data_url(overlay, "PNG"),
    }


def _score(name: str, role: str, detection: Detection, card: ModelCard) -> ModelScore:
    return ModelScore(
        name=name,
        title=_ARCH_TITLES.get(card.arch, card.arch),
        role=role,
        version=detection.model_version,
        label=detection.label,
        confidence=float(detection.confidence),
        fake_probability=float(detection.fake_probability),
        logit=float(detection.logit),
        threshold=float(card.threshold),
        verdict=format_verdict(detection.label, float(detection.confidence)),
    )
