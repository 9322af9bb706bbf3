"""``AsyncDeepfakeClient``: the asyncio twin of :class:`DeepfakeClient` (tritonclient grpc.aio / http.aio).

    async with AsyncDeepfakeClient("127.0.0.1:8001") as client:
        detection = await client.detect("photo.jpg")
        results = await client.detect_many(paths, concurrency=4)

Same contract as the sync client: model configuration read from the server, the shared preprocessing
(run in a worker thread so decoding never blocks the event loop), batched concurrent requests, one
result per input in order, timeouts on every call, retries with back-off only for connection failures.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Optional, TypeVar

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
from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, ImageSource
from deepfake_edge.regions import DEFAULT_MODE
from deepfake_edge.serving_contract import DEFAULT_MODEL

T = TypeVar("T")


class AsyncDeepfakeClient(ClientSettings):
    """Asyncio client for one model on one Triton server; use it from one event loop.

    ``admin_key`` (optional) lets a not-ready error list the server's models (an admin API).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        protocol: str = "grpc",
        model: str = DEFAULT_MODEL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        retries: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        admin_key: Optional[str] = None,
    ):
        super().__init__(url, protocol, model, timeout_s, retries, max_pixels, admin_key)
        if protocol == "grpc":
            import tritonclient.grpc.aio as aio_module
        else:
            import tritonclient.http.aio as aio_module
        self._aio_module = aio_module
        self._triton: Any = None  # created inside the running loop (grpc.aio and aiohttp bind to it)

    async def __aenter__(self) -> "AsyncDeepfakeClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._triton is not None:
            triton, self._triton = self._triton, None
            await triton.close()

    async def model_info(self) -> ModelInfo:
        """The served model's card and limits (fetched once)."""
        if self._info is None:
            self._info = await self._with_retries(self._fetch_info)
        return self._info

    async def detect(self, source: ImageSource, heatmap: bool = False, mode: str = DEFAULT_MODE) -> Detection:
        """Classify one image (``mode`` as in ``DeepfakeClient.detect``). Raises BadImageError or a
        DeepfakeClientError subclass."""
        info = await self.model_info()
        prepared = [await asyncio.to_thread(prepare, info, source, check_mode(mode), self.max_pixels)]
        detections = await self._with_retries(lambda: self._infer(info, prepared, heatmap))
        return detections[0]

    async def detect_many(
        self,
        sources: Iterable[ImageSource],
        concurrency: int = 4,
        heatmap: bool = False,
        batch_size: Optional[int] = None,
        mode: str = DEFAULT_MODE,
    ) -> list[Result]:
        """One Detection or Failure per source, in order (see :meth:`iter_detect`)."""
        results = self.iter_detect(sources, concurrency=concurrency, heatmap=heatmap, batch_size=batch_size,
                                   mode=mode)
        return [result async for result in results]

    async def iter_detect(
        self,
        sources: Iterable[ImageSource],
        concurrency: int = 4,
        heatmap: bool = False,
        batch_size: Optional[int] = None,
        mode: str = DEFAULT_MODE,
    ) -> AsyncIterator[Result]:
        """Yield one Detection or Failure per source in input order; same contract as the sync
        ``DeepfakeClient.iter_detect`` (lazy, bounded memory, nothing raises per input)."""
        if concurrency < 1 or (batch_size is not None and batch_size < 1):
            raise ValueError("concurrency and batch_size must be >= 1")
        check_mode(mode)
        sources = iter(sources)
        try:
            info = await self.model_info()
        except DeepfakeClientError as error:
            for source in sources:
                yield Failure(source, error)
            return
        size = images_per_request(mode, batch_size, info)
        unreachable: list[ServerUnreachableError] = []
        pending: deque[asyncio.Task] = deque()
        try:
            while chunk := list(itertools.islice(sources, size)):
                pending.append(asyncio.create_task(self._run_chunk(info, chunk, heatmap, mode, unreachable)))
                while len(pending) >= concurrency:
                    for result in await pending.popleft():
                        yield result
            while pending:
                for result in await pending.popleft():
                    yield result
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run_chunk(
        self, info: ModelInfo, chunk: list[ImageSource], heatmap: bool, mode: str,
        unreachable: list[ServerUnreachableError],
    ) -> list[Result]:
        prepared, failures = await asyncio.to_thread(prepare_chunk, info, chunk, mode, self.max_pixels)
        if not prepared:
            return failures  # type: ignore[return-value]
        try:
            if unreachable:
                raise unreachable[0]
            outcome: "list[Result] | DeepfakeClientError" = await self._with_retries(
                lambda: self._infer(info, prepared, heatmap))
        except DeepfakeClientError as error:
            outcome = error
        return merge_chunk(prepared, failures, outcome, unreachable)

    async def _with_retries(self, operation: Callable[[], Awaitable[T]]) -> T:
        for attempt in itertools.count():
            try:
                # The outer bound also covers connection setup, which the per-call timeouts do not.
                return await asyncio.wait_for(operation(), self.timeout_s + 1.0)
            except asyncio.TimeoutError:
                raw: BaseException = RequestTimeoutError(self.url, self.timeout_s)
            except Exception as caught:
                raw = caught
            error, delay = retry_delay(raw, self.url, self.timeout_s, attempt, self.retries)
            if delay is None:
                raise error from (None if error is raw else raw)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _client(self) -> Any:
        if self._triton is None:
            if self.protocol == "grpc":
                self._triton = self._aio_module.InferenceServerClient(self.url)
            else:
                self._triton = self._aio_module.InferenceServerClient(self.url, conn_timeout=self.timeout_s)
        return self._triton

    async def _fetch_info(self) -> ModelInfo:
        triton = self._client()
        if not await triton.is_server_live(**self._call_options):
            raise ServerUnreachableError(self.url, "the server is not live")
        if not await triton.is_model_ready(self.model, **self._call_options):
            from tritonclient.utils import InferenceServerException

            index = None
            if self._admin_headers is not None:  # the repository index is an admin API
                try:
                    index = await triton.get_model_repository_index(headers=self._admin_headers,
                                                                    **self._json_options)
                except InferenceServerException:
                    pass
            raise ModelNotReadyError(not_ready_message(self.model, self.url, index))
        config = await triton.get_model_config(self.model, **self._json_options)
        return parse_model_config(self.model, config_as_dict(config))

    async def _infer(self, info: ModelInfo, prepared: list[Prepared], heatmap: bool) -> list[Detection]:
        rows = stacked_rows(prepared)
        parts = await asyncio.gather(*(self._infer_rows(info, rows[part], heatmap)
                                       for part in request_slices(len(rows), info)))
        return to_detections(prepared, Outputs.concat(list(parts)), info)

    async def _infer_rows(self, info: ModelInfo, batch: np.ndarray, heatmap: bool) -> Outputs:
        result = await self._client().infer(
            self.model,
            make_inputs(self._module, batch),
            outputs=make_outputs(self._module, heatmap),
            **self._call_options,
        )
        return read_outputs(result, len(batch), info, heatmap)
