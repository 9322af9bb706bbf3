"""``DeepfakeClient``: classify images with a deepfake-edge model served by Triton (gRPC or HTTP).

    with DeepfakeClient("127.0.0.1:8001") as client:
        detection = client.detect("photo.jpg", heatmap=True)
        results = client.detect_many(paths, concurrency=4)   # one Detection or Failure per path, in order

Everything the client needs about the model (input size, crop rule, labels, threshold, max batch size)
is read from the server's model config. Images are preprocessed with the project's one shared
definition, sent as batched UINT8 requests from several threads at once (so Triton's dynamic batcher
has work to combine), optionally through system shared memory.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Optional, TypeVar

import numpy as np

from deepfake_edge.client.errors import (
    DeepfakeClientError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnreachableError,
)
from deepfake_edge.client.analysis import (
    DEFAULT_TIMEOUT_S,
    ClientSettings,
    MAX_PARALLEL_PARTS,
    Prepared,
    merge_chunk,
    retry_delay,
    check_mode,
    images_per_request,
    prepare,
    prepare_chunk,
    request_slices,
    stacked_rows,
    to_detections,
)
from deepfake_edge.client.results import Detection, Failure, Result
from deepfake_edge.client.shared_memory import InputRegion
from deepfake_edge.client.triton_io import (
    ModelInfo,
    Outputs,
    config_as_dict,
    make_inputs,
    make_outputs,
    not_ready_message,
    parse_model_config,
    read_outputs,
)
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


class DeepfakeClient(ClientSettings):
    """A thread-safe client for one model on one Triton server (concurrent calls run concurrently).

    ``url`` is ``host:port`` (default 127.0.0.1 and the protocol's default port). Every call is bounded
    by ``timeout_s``; connection failures are retried ``retries`` times with exponential back-off.
    ``shared_memory=True`` passes inputs through system shared memory (server on this host only); registering
    a region is an admin API, so it needs ``admin_key`` (default: ``find_admin_key()``, which raises
    ``AdminKeyError`` when there is none). A given ``admin_key`` also lets a not-ready error list the models.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        protocol: str = "grpc",
        model: str = DEFAULT_MODEL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        shared_memory: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        admin_key: Optional[str] = None,
    ):
        if shared_memory and admin_key is None:
            admin_key = find_admin_key(required_for="shared-memory mode (it registers regions with Triton)")
        super().__init__(url, protocol, model, timeout_s, retries, max_pixels, admin_key)
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

    def model_info(self) -> ModelInfo:
        """The served model's card and limits (fetched once). Raises ServerUnreachableError,
        ModelNotReadyError or ServerError."""
        if self._info is None:
            self._info = self._pool.submit(partial(self._with_retries, operation=self._fetch_info)).result()
        return self._info

    def preprocess(self, source: ImageSource, mode: str = DEFAULT_MODE) -> np.ndarray:
        """The UINT8 (N, 3, H, W) rows this client sends for ``source`` in ``mode`` (raises BadImageError)."""
        return prepare(self.model_info(), source, check_mode(mode), self.max_pixels).rows

    def detect(self, source: ImageSource, heatmap: bool = False, mode: str = DEFAULT_MODE) -> Detection:
        """Classify one image (``mode``: "whole" scores every face, tiles over the whole frame and the global
        view in one request; "fast" the global view alone). Raises BadImageError or a DeepfakeClientError."""
        info = self.model_info()
        prepared = [prepare(info, source, check_mode(mode), self.max_pixels)]
        infer = partial(self._infer, prepared=prepared, heatmap=heatmap)
        with self._lock:
            self._callers += 1
            # One connection per concurrent caller: threads sharing this client are not serialised.
            self._pool.ensure(self._callers)
        try:
            return self._pool.submit(partial(self._with_retries, operation=infer)).result()[0]
        finally:
            with self._lock:
                self._callers -= 1

    def detect_many(
        self,
        sources: Iterable[ImageSource],
        concurrency: int = 4,
        heatmap: bool = False,
        batch_size: Optional[int] = None,
        mode: str = DEFAULT_MODE,
    ) -> list[Result]:
        """One Detection or Failure per source, in order (see :meth:`iter_detect`)."""
        return list(self.iter_detect(sources, concurrency=concurrency, heatmap=heatmap, batch_size=batch_size,
                                     mode=mode))

    def iter_detect(
        self,
        sources: Iterable[ImageSource],
        concurrency: int = 4,
        heatmap: bool = False,
        batch_size: Optional[int] = None,
        mode: str = DEFAULT_MODE,
    ) -> Iterator[Result]:
        """Yield one Detection or Failure per source, in input order, as results arrive.

        Sources are read lazily, ``batch_size`` images per request (default: 8 in fast mode, at most the
        model's max_batch_size; 1 in whole mode, whose image is already a batch of regions) with
        ``concurrency`` requests in flight, so memory stays bounded for any number of
        inputs. Nothing raises per input: a bad image, a server error or an unreachable server becomes
        that input's Failure. Once the server is unreachable (after retries), the remaining inputs fail
        with that error without being sent.
        """
        if concurrency < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError("concurrency and batch_size must be >= 1")
        check_mode(mode)
        sources = iter(sources)
        try:
            info = self.model_info()
        except DeepfakeClientError as error:
            yield from (Failure(source, error) for source in sources)
            return
        size = images_per_request(mode, batch_size, info)
        self._pool.ensure(concurrency)
        unreachable: list[ServerUnreachableError] = []
        pending: deque[Future] = deque()
        try:
            while chunk := list(itertools.islice(sources, size)):
                run = partial(self._run_chunk, info=info, chunk=chunk, heatmap=heatmap, mode=mode,
                              unreachable=unreachable)
                pending.append(self._pool.submit(run))
                # Keep one chunk queued beyond the ones in flight so no worker waits for the consumer.
                while len(pending) > concurrency:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def _run_chunk(
        self,
        worker: Worker[_Lane],
        info: ModelInfo,
        chunk: list[ImageSource],
        heatmap: bool,
        mode: str,
        unreachable: list[ServerUnreachableError],
    ) -> list[Result]:
        prepared, failures = prepare_chunk(info, chunk, mode, self.max_pixels)
        if not prepared:
            return failures  # type: ignore[return-value]
        try:
            if unreachable:
                raise unreachable[0]
            outcome: "list[Result] | DeepfakeClientError" = self._with_retries(
                worker, partial(self._infer, prepared=prepared, heatmap=heatmap))
        except DeepfakeClientError as error:
            outcome = error
        return merge_chunk(prepared, failures, outcome, unreachable)

    def check_ready(self, timeout_s: Optional[float] = None) -> None:
        """Ask the server, now and once, whether the model is ready (nothing cached, no retries), waiting at
        most ``timeout_s`` (default the client's): returns if it is; raises ModelNotReadyError,
        ServerUnreachableError, RequestTimeoutError or ServerError."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        options = {"client_timeout": timeout_s} if self.protocol == "grpc" else {}

        def probe(lane: _Lane) -> None:
            if not lane.triton.is_model_ready(self.model, **options):
                raise ModelNotReadyError(not_ready_message(self.model, self.url, None))

        future = self._pool.submit(partial(self._with_retries, operation=probe, retries=0))
        try:
            future.result(timeout=timeout_s + 1.0)
        except FutureTimeout:
            future.cancel()
            raise RequestTimeoutError(self.url, timeout_s) from None

    def _with_retries(self, worker: Worker[_Lane], operation: Callable[[_Lane], T], retries: Optional[int] = None) -> T:
        retries = self.retries if retries is None else retries
        for attempt in itertools.count():
            try:
                return operation(worker.lane())
            except Exception as raw:
                error, delay = retry_delay(raw, self.url, self.timeout_s, attempt, retries)
                if isinstance(error, ServerUnreachableError):
                    worker.reset_lane()
                if delay is None:
                    raise error from (None if error is raw else raw)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _make_lane(self) -> _Lane:
        if self.protocol == "grpc":
            return _Lane(self._module.InferenceServerClient(self.url))
        return _Lane(
            self._module.InferenceServerClient(
                self.url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s,
                concurrency=MAX_PARALLEL_PARTS,  # the parts of one image's regions go out at once
            )
        )

    def _fetch_info(self, lane: _Lane) -> ModelInfo:
        if not lane.triton.is_server_live(**self._call_options):
            raise ServerUnreachableError(self.url, "the server is not live")
        if not lane.triton.is_model_ready(self.model, **self._call_options):
            raise ModelNotReadyError(not_ready_message(self.model, self.url, self._repository_index(lane)))
        config = lane.triton.get_model_config(self.model, **self._json_options)
        return parse_model_config(self.model, config_as_dict(config))

    def _repository_index(self, lane: _Lane) -> Any:
        """The server's models, or None without the admin key (the repository index is an admin API)."""
        from tritonclient.utils import InferenceServerException

        if self._admin_headers is None:
            return None
        try:
            return lane.triton.get_model_repository_index(headers=self._admin_headers, **self._json_options)
        except InferenceServerException:
            return None

    def _infer(self, lane: _Lane, prepared: list[Prepared], heatmap: bool) -> list[Detection]:
        info = self._info
        assert info is not None
        rows = stacked_rows(prepared)
        slices = request_slices(len(rows), info)
        if len(slices) == 1 or self.shared_memory:  # one shared-memory region per connection: one at a time
            parts = [self._infer_rows(lane, info, rows[part], heatmap) for part in slices]
        else:
            parts = self._infer_concurrently(lane, info, [rows[part] for part in slices], heatmap)
        return to_detections(prepared, Outputs.concat(parts), info)

    def _infer_concurrently(self, lane: _Lane, info: ModelInfo, batches: list[np.ndarray],
                            heatmap: bool) -> list[Outputs]:
        """Send ``batches`` at once on ``lane``'s connection (tritonclient's async_infer) and wait for all."""
        outputs = make_outputs(self._module, heatmap)
        if self.protocol == "grpc":
            answers: queue.Queue = queue.Queue()
            for index, batch in enumerate(batches):
                lane.triton.async_infer(self.model, make_inputs(self._module, batch),
                                        partial(lambda i, result, error: answers.put((i, result, error)), index),
                                        outputs=outputs, client_timeout=self.timeout_s)
            results: list[Any] = [None] * len(batches)
            for _ in batches:
                try:
                    index, result, error = answers.get(timeout=self.timeout_s + 1.0)
                except queue.Empty:
                    raise RequestTimeoutError(self.url, self.timeout_s) from None
                if error is not None:
                    raise error
                results[index] = result
        else:
            requests = [lane.triton.async_infer(self.model, make_inputs(self._module, batch), outputs=outputs)
                        for batch in batches]
            results = [request.get_result(timeout=self.timeout_s) for request in requests]
        return [read_outputs(result, len(batch), info, heatmap) for result, batch in zip(results, batches)]

    def _infer_rows(self, lane: _Lane, info: ModelInfo, batch: np.ndarray, heatmap: bool) -> Outputs:
        region = self._region(lane, info) if self.shared_memory else None
        if region is not None:
            region.write(batch)
        result = lane.triton.infer(
            self.model,
            make_inputs(self._module, batch, shm_region=None if region is None else region.name),
            outputs=make_outputs(self._module, heatmap),
            **self._call_options,
        )
        return read_outputs(result, len(batch), info, heatmap)

    def _region(self, lane: _Lane, info: ModelInfo) -> InputRegion:
        if lane.region is None:
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
