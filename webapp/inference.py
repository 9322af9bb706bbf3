"""Forward one decoded image to every configured Triton model through the project's client.

The web app holds no model. :class:`DetectionService` lends each request a
:class:`~deepfake_edge.client.DeepfakeClient` per Triton model from a small pool, asks the primary model
for its verdict and heatmap and every other model for its score (on scoring threads, so that a request
stops waiting at its deadline), and renders the heatmap with :func:`deepfake_edge.heatmap.overlay_heatmap`.
"""

from __future__ import annotations

import base64
import io
import queue
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image

from deepfake_edge.client import DeepfakeClient, DeepfakeClientError, Detection, RequestTimeoutError
from deepfake_edge.client.results import format_verdict, region_record
from deepfake_edge.heatmap import overlay_heatmap
from deepfake_edge.model_card import ModelCard
from deepfake_edge.regions import DEFAULT_MODE

# Longest side of the images the page shows: enough for a sharp view, small enough to send as PNG.
DISPLAY_MAX_SIDE = 512
_ARCH_TITLES = {"efficientnet_b0": "EfficientNet-B0", "small_cnn": "CNN baseline"}
_IDLE_CLIENTS_PER_MODEL = 8
# Scoring runs on these threads so that a request can stop waiting at its deadline: a fresh client makes
# several calls to Triton, each with its own timeout (a SIGSTOPped Triton held one web request 20 s
# against a 10 s timeout). Threads left waiting on a stalled server end with their own timeouts.
_SCORING_THREADS = 16


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


class _ClientPool:
    """Idle :class:`DeepfakeClient` instances for one model, lent to one request thread at a time.

    One client runs its calls on one connection, one at a time; lending a client per request lets
    concurrent uploads reach Triton concurrently, where its dynamic batcher can combine them.
    """

    def __init__(self, url: str, protocol: str, model: str, timeout_s: float):
        self._args = dict(url=url, protocol=protocol, model=model, timeout_s=timeout_s)
        self._idle: queue.Queue[DeepfakeClient] = queue.Queue(maxsize=_IDLE_CLIENTS_PER_MODEL)

    @contextmanager
    def borrow(self) -> Iterator[DeepfakeClient]:
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = DeepfakeClient(**self._args)
        try:
            yield client
        except BaseException:
            # After a failure (server restarted, model reloaded) a fresh client, with a new
            # connection and the model config read again, is the safe one to lend next.
            client.close()
            raise
        try:
            self._idle.put_nowait(client)
        except queue.Full:
            client.close()


class DetectionService:
    """Scores images with ``models[0]`` (the verdict and heatmap) and ``models[1:]`` (for comparison)."""

    def __init__(self, triton_url: str, protocol: str, models: tuple[str, ...], timeout_s: float):
        if not models:
            raise ValueError("at least one model name is needed")
        self.triton_url = triton_url
        self.protocol = protocol
        self.models = tuple(models)
        self.timeout_s = timeout_s
        self._pools = {name: _ClientPool(triton_url, protocol, name, timeout_s) for name in self.models}
        self._executor = ThreadPoolExecutor(max_workers=_SCORING_THREADS, thread_name_prefix="webapp-scoring")

    def detect(self, image: Image.Image, heatmap_alpha: float | None = 0.5,
               deadline: float | None = None, mode: str = DEFAULT_MODE) -> dict[str, Any]:
        """The JSON-ready result for one RGB image analysed in ``mode`` ("whole" or "fast", see
        deepfake_edge/regions.py); ``heatmap_alpha=None`` skips the heatmap.

        ``deadline`` (``time.monotonic()`` seconds; default ``timeout_s`` from now) bounds the whole call:
        past it the primary model's answer is a :class:`RequestTimeoutError`, a comparison model's an
        ``error`` field. Raises the client's exceptions when the primary model fails; a failing
        comparison model only fills that model's ``error`` field.
        """
        started = time.perf_counter()
        deadline = time.monotonic() + self.timeout_s if deadline is None else deadline
        others = [self._executor.submit(self._score_other, name, image, mode) for name in self.models[1:]]
        primary_future = self._executor.submit(self._score_primary, image, heatmap_alpha is not None, mode)
        primary, detection, card = self._result_by(primary_future, deadline)
        scores = [primary] + [self._other_by(future, name, deadline) for future, name in zip(others, self.models[1:])]
        result: dict[str, Any] = {
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

    def health(self) -> dict[str, Any]:
        """Readiness of each model as the client sees it right now (never raises)."""
        states: dict[str, str] = {}
        for name in self.models:
            # A fresh client without retries: pooled clients cache what they learnt from the server.
            client = DeepfakeClient(self.triton_url, protocol=self.protocol, model=name, timeout_s=5.0, retries=0)
            try:
                client.model_info()
                states[name] = "ready"
            except DeepfakeClientError as error:
                states[name] = f"unavailable: {error}"
            finally:
                client.close()
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
        with self._pools[name].borrow() as client:
            detection = client.detect(image, heatmap=want_heatmap, mode=mode)
            card = client.model_info().card.for_mode(mode)
        return _score(name, "primary", detection, card), detection, card

    def _score_other(self, name: str, image: Image.Image, mode: str) -> ModelScore:
        try:
            with self._pools[name].borrow() as client:
                detection = client.detect(image, heatmap=False, mode=mode)
                return _score(name, "baseline", detection, client.model_info().card.for_mode(mode))
        except DeepfakeClientError as error:
            return ModelScore(name=name, title=name, role="baseline", error=str(error))

    @staticmethod
    def _render_heatmap(image: Image.Image, detection: Detection, alpha: float) -> dict[str, Any]:
        # Downscale first: the heatmap's box is scaled to the copy, so the overlay lines up the same.
        # resize(), not thumbnail(): that needs a full-size copy first, which doubled the web app's decode
        # memory (4 bytes a pixel: 144 MB for 6000 x 6000).
        scale = DISPLAY_MAX_SIDE / max(image.size)
        shown = image if scale >= 1 else image.resize(
            (max(1, round(image.width * scale)), max(1, round(image.height * scale))),
            Image.Resampling.LANCZOS, reducing_gap=2.0)
        overlay = overlay_heatmap(shown, detection.heatmap, detection.heatmap_box, alpha, box_of_size=image.size)
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
