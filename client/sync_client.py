"""``DeepfakeClient``: classify images with a deepfake-edge model served by Triton (gRPC or HTTP).

    with DeepfakeClient("127.0.0.1:8001") as client:
        detection = client.detect("photo.jpg", heatmap=True)
        results = client.detect_many(paths, concurrency=4)   # one Detection or Failure per path, in order

Everything the client needs about the model (input size, crop rule, labels, threshold, max batch size)
is read from the server's model config. Images are preprocessed with the project's one shared
definition, sent as batched UINT8 requests from several threads at once (so Triton's dynamic batcher
has work to combine), optionally through system shared memory.

What the client does (which calls, retries, chunking, what a failure means) is written once, as plans, in
client/analysis.py; this module performs their steps with blocking tritonclient on worker threads that each
own a connection (client/workers.py).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Iterator, Optional, Sequence, TypeVar, Unpack

import numpy as np

from deepfake_edge.client import analysis, triton_io
from deepfake_edge.client.endpoints import ClientSettings
from deepfake_edge.client.errors import RequestTimeoutError
from deepfake_edge.client.results import Detection, Result
from deepfake_edge.client.shared_memory import InputRegion
from deepfake_edge.client.workers import LanePool, Worker
from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, ImageSource
from deepfake_edge.regions import DEFAULT_MODE
from deepfake_edge.server.admin_key import find_admin_key
from deepfake_edge.serving_contract import DEFAULT_MODEL

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class _Lane:
    """One worker thread's tritonclient client and, with shared memory on, its registered input region."""

    triton: Any
    url: str
    region: Optional[InputRegion] = None
    headers: Optional[dict[str, str]] = None  # the admin key, which unregistering the region needs

    def close(self) -> None:
        try:
            if self.region is not None:
                self.triton.unregister_system_shared_memory(self.region.name, headers=self.headers)
        except Exception as error:  # a stopped server dropped its registrations with its process
            log.warning("could not unregister shared-memory region %s: %s", self.region.name, error)
        finally:
            if self.region is not None:
                self.region.close()
            self.triton.close()


@dataclass
class _Endpoint:
    """Where the steps of one plan go: the client's endpoint when it started, then what it reconnects to."""

    url: str


class DeepfakeClient(ClientSettings):
    """A thread-safe client for one model on a Triton server, or several with failover (concurrent calls run
    concurrently).

    ``url`` is ``host:port`` (default 127.0.0.1 and the protocol's default port); ``urls`` instead names
    several servers serving the same model, in failover order: a call that cannot reach one is retried on
    the next at once, and later calls stay there (docs/client.md). Every call is bounded by ``timeout_s``;
    connection failures are retried ``retries`` times with exponential back-off.
    ``shared_memory=True`` passes inputs through system shared memory (server on this host only); registering
    a region is an admin API, so it needs ``admin_key`` (default: ``find_admin_key()``, which raises
    ``AdminKeyError`` when there is none). A given ``admin_key`` also lets a not-ready error list the models.
    ``provenance`` (default on): read each file's Content Credentials (C2PA) and EXIF/XMP metadata into
    ``Detection.provenance``, beside the verdict (docs/provenance.md); off, it is None.
    """

    def __init__(self, url: Optional[str] = None, protocol: str = "grpc", model: str = DEFAULT_MODEL,
                 timeout_s: float = analysis.DEFAULT_TIMEOUT_S, retries: int = 2, shared_memory: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, admin_key: Optional[str] = None, provenance: bool = True,
                 urls: Optional[Sequence[str]] = None):
        if url is not None and urls is not None:
            raise ValueError("give url or urls, not both")
        if shared_memory and admin_key is None:
            admin_key = find_admin_key(required_for="shared-memory mode (it registers regions with Triton)")
        super().__init__(url if urls is None else urls, protocol, model, timeout_s, retries, max_pixels, admin_key,
                         provenance)
        self.shared_memory = shared_memory
        self._pool: LanePool[_Lane] = LanePool(self._make_lane)
        self._lock = threading.Lock()
        self._callers = 0

    def __enter__(self) -> "DeepfakeClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection; unregister and unlink every shared-memory region."""
        self._pool.shutdown(timeout_s=self.timeout_s + 5.0)

    def model_info(self) -> triton_io.ModelInfo:
        """The served model's card and limits (fetched once). Raises ServerUnreachableError,
        ModelNotReadyError or ServerError."""
        if self._info is not None:  # no trip through the worker threads, which may all be busy
            return self._info
        return self._run(analysis.model_info(self))

    def preprocess(self, source: ImageSource, mode: str = DEFAULT_MODE) -> np.ndarray:
        """The UINT8 (N, 3, H, W) rows this client sends for ``source`` in ``mode`` (raises BadImageError)."""
        return analysis.prepare(self.model_info(), source, analysis.check_mode(mode), self.max_pixels).rows

    def detect(self, source: ImageSource, heatmap: bool = False, mode: str = DEFAULT_MODE,
               copy_move: bool = True) -> Detection:
        """Classify one image (``mode``: "whole" scores every face, tiles over the whole frame and the global
        view in one request; "fast" the global view alone; ``copy_move`` as in :meth:`iter_detect`). Raises
        BadImageError or a DeepfakeClientError."""
        with self._lock:
            self._callers += 1
            # One connection per concurrent caller: threads sharing this client are not serialised.
            self._pool.ensure(self._callers)
        try:
            return self._run(analysis.detect(self, source, heatmap, mode, copy_move))
        finally:
            with self._lock:
                self._callers -= 1

    def detect_many(self, sources: Iterable[ImageSource], **options: Unpack[analysis.DetectOptions]) -> list[Result]:
        """One Detection or Failure per source, in order; takes the keyword options of :meth:`iter_detect`
        (``concurrency``, ``heatmap``, ``batch_size``, ``mode``)."""
        return list(self.iter_detect(sources, **options))

    def iter_detect(self, sources: Iterable[ImageSource], concurrency: int = 4, heatmap: bool = False,
                    batch_size: Optional[int] = None, mode: str = DEFAULT_MODE, copy_move: bool = True
                    ) -> Iterator[Result]:
        """Yield one Detection or Failure per source, in input order, as results arrive.

        Sources are read lazily, ``batch_size`` images per request (default: 8 in fast mode, at most the
        model's max_batch_size; 1 in whole mode, whose image is already a batch of regions) with
        ``concurrency`` requests in flight, so memory stays bounded for any number of
        inputs. Nothing raises per input: a bad image, a server error or an unreachable server becomes
        that input's Failure. Once the server is unreachable (after retries), the remaining inputs fail
        with that error without being sent. ``copy_move`` runs the copy-move check of whole mode when the
        served card is calibrated for it (video frames too: ``calibrate --videos`` scores them with it).
        """
        analysis.check_options(concurrency, batch_size, mode)
        info = self._run(analysis.info_or_error(self))
        self._pool.ensure(concurrency)
        pending: deque[Future] = deque()
        # One chunk started beyond the ones in flight, so that no worker waits for the consumer.
        plans = analysis.chunk_plans(self, info, sources, concurrency + 1, heatmap, batch_size, mode, copy_move)
        try:
            for plan in plans:
                if plan is None:
                    yield from pending.popleft().result()
                else:
                    pending.append(self._pool.submit(partial(self._drive, plan=plan)))
        finally:
            for future in pending:
                future.cancel()

    def check_ready(self, timeout_s: Optional[float] = None) -> None:
        """Ask the server, now and once, whether the model is ready (nothing cached, no retries), waiting at
        most ``timeout_s`` (default the client's): returns if it is; raises ModelNotReadyError,
        ServerUnreachableError, RequestTimeoutError or ServerError."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        future = self._pool.submit(partial(self._drive, plan=analysis.check_ready(self, timeout_s)))
        try:
            future.result(timeout=timeout_s + 1.0)
        except FutureTimeout:
            future.cancel()
            raise RequestTimeoutError(self.url, timeout_s) from None

    def _run(self, plan: triton_io.Plan[T]) -> T:
        return self._pool.submit(partial(self._drive, plan=plan)).result()

    def _drive(self, worker: Worker[_Lane], plan: triton_io.Plan[T]) -> T:
        """Run ``plan`` on a worker thread, with that thread's connection to the endpoint the plan is on."""
        return triton_io.drive(plan, partial(self._perform, worker, _Endpoint(self.url)))

    def _perform(self, worker: Worker[_Lane], endpoint: "_Endpoint", step: triton_io.Step) -> Any:
        """Do ``step``, blocking, on this worker thread's connection to ``endpoint``."""
        match step:
            case triton_io.Call():
                return step.on(worker.lane(endpoint.url).triton)
            case triton_io.Send(batches, heatmap):
                return self._send(worker.lane(endpoint.url), batches, heatmap)
            case triton_io.Compute(function, args):
                return function(*args)
            case triton_io.Pause(seconds):
                time.sleep(seconds)
            case triton_io.Reconnect(url, broken):
                if broken:
                    worker.reset_lane()
                endpoint.url = url or endpoint.url  # the lane follows on its next use

    def _make_lane(self, url: str) -> _Lane:
        if self.protocol == "grpc":
            return _Lane(self._module.InferenceServerClient(url), url)
        return _Lane(
            self._module.InferenceServerClient(
                url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s,
                concurrency=analysis.MAX_PARALLEL_PARTS,  # the parts of one image's regions go out at once
            ),
            url,
        )

    def _send(self, lane: _Lane, batches: list[np.ndarray], heatmap: bool) -> list[Any]:
        if len(batches) == 1 or self.shared_memory:  # one shared-memory region per connection: one at a time
            return [self._infer(lane, batch, heatmap) for batch in batches]
        return self._infer_concurrently(lane, batches, heatmap)

    def _infer_concurrently(self, lane: _Lane, batches: list[np.ndarray], heatmap: bool) -> list[Any]:
        """Send ``batches`` at once on ``lane``'s connection (tritonclient's async_infer) and wait for all."""
        outputs = triton_io.make_outputs(self._module, heatmap)
        if self.protocol == "http":
            requests = [lane.triton.async_infer(self.model, triton_io.make_inputs(self._module, batch),
                                                outputs=outputs) for batch in batches]
            return [request.get_result(timeout=self.timeout_s) for request in requests]
        answers: queue.Queue = queue.Queue()
        for index, batch in enumerate(batches):
            lane.triton.async_infer(self.model, triton_io.make_inputs(self._module, batch),
                                    partial(lambda i, result, error: answers.put((i, result, error)), index),
                                    outputs=outputs, client_timeout=self.timeout_s)
        results: list[Any] = [None] * len(batches)
        for _ in batches:
            try:
                index, result, error = answers.get(timeout=self.timeout_s + 1.0)
            except queue.Empty:
                raise RequestTimeoutError(lane.url, self.timeout_s) from None
            if error is not None:
                raise error
            results[index] = result
        return results

    def _infer(self, lane: _Lane, batch: np.ndarray, heatmap: bool) -> Any:
        region = self._region(lane) if self.shared_memory else None
        if region is not None:
            region.write(batch)
        inputs = triton_io.make_inputs(self._module, batch, shm_region=None if region is None else region.name)
        return lane.triton.infer(self.model, inputs, outputs=triton_io.make_outputs(self._module, heatmap),
                                 **self._call_options)

    def _region(self, lane: _Lane) -> InputRegion:
        if lane.region is None:
            info = self._info
            assert info is not None, "a plan fetches the model info before it sends"
            region = InputRegion(info.max_batch_size * info.request_bytes_per_image)
            try:
                lane.triton.register_system_shared_memory(
                    region.name, region.key, region.byte_size, headers=self._admin_headers, **self._call_options
                )
            except BaseException:
                region.close()
                raise
            region.forget_name()
            lane.region, lane.headers = region, self._admin_headers
        return lane.region
