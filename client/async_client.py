"""``AsyncDeepfakeClient``: the asyncio twin of :class:`DeepfakeClient` (tritonclient grpc.aio / http.aio).

    async with AsyncDeepfakeClient("127.0.0.1:8001") as client:
        detection = await client.detect("photo.jpg")
        results = await client.detect_many(paths, concurrency=4)

Same contract as the sync client: model configuration read from the server, the shared preprocessing
(run in a worker thread so decoding never blocks the event loop), batched concurrent requests, one
result per input in order, timeouts on every call, retries with back-off only for connection failures:
both perform the same plans (client/analysis.py); this one with tritonclient's aio clients.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, AsyncIterator, Awaitable, Iterable, Optional, Sequence, TypeVar, Unpack

import numpy as np

from deepfake_edge.client import analysis, triton_io
from deepfake_edge.client.endpoints import ClientSettings
from deepfake_edge.client.results import Detection, Result
from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, ImageSource
from deepfake_edge.regions import DEFAULT_MODE
from deepfake_edge.serving_contract import DEFAULT_MODEL

T = TypeVar("T")


class AsyncDeepfakeClient(ClientSettings):
    """Asyncio client for one model on a Triton server, or several with failover (``urls``, as in
    ``DeepfakeClient``); use it from one event loop.

    ``admin_key`` (optional) lets a not-ready error list the server's models (an admin API). ``provenance``
    as in ``DeepfakeClient`` (read in the worker thread that decodes, never on the event loop).
    """

    def __init__(self, url: Optional[str] = None, protocol: str = "grpc", model: str = DEFAULT_MODEL,
                 timeout_s: float = analysis.DEFAULT_TIMEOUT_S, retries: int = 2,
                 max_pixels: int = DEFAULT_MAX_PIXELS, admin_key: Optional[str] = None, provenance: bool = True,
                 urls: Optional[Sequence[str]] = None):
        if url is not None and urls is not None:
            raise ValueError("give url or urls, not both")
        super().__init__(url if urls is None else urls, protocol, model, timeout_s, retries, max_pixels, admin_key,
                         provenance)
        if protocol == "grpc":
            import tritonclient.grpc.aio as aio_module
        else:
            import tritonclient.http.aio as aio_module
        self._aio_module = aio_module
        # One aio client per endpoint, created inside the running loop (grpc.aio and aiohttp bind to it).
        self._tritons: dict[str, Any] = {}

    async def __aenter__(self) -> "AsyncDeepfakeClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        tritons, self._tritons = self._tritons, {}
        for triton in tritons.values():
            await triton.close()

    async def model_info(self) -> triton_io.ModelInfo:
        """The served model's card and limits (fetched once)."""
        return await self._drive(analysis.model_info(self))

    async def detect(self, source: ImageSource, heatmap: bool = False, mode: str = DEFAULT_MODE,
                     copy_move: bool = True) -> Detection:
        """Classify one image (``mode`` and ``copy_move`` as in ``DeepfakeClient.detect``). Raises
        BadImageError or a DeepfakeClientError subclass."""
        return await self._drive(analysis.detect(self, source, heatmap, mode, copy_move))

    async def detect_many(self, sources: Iterable[ImageSource],
                          **options: Unpack[analysis.DetectOptions]) -> list[Result]:
        """One Detection or Failure per source, in order; takes the keyword options of :meth:`iter_detect`."""
        return [result async for result in self.iter_detect(sources, **options)]

    async def iter_detect(self, sources: Iterable[ImageSource], concurrency: int = 4, heatmap: bool = False,
                          batch_size: Optional[int] = None, mode: str = DEFAULT_MODE, copy_move: bool = True
                          ) -> AsyncIterator[Result]:
        """Yield one Detection or Failure per source in input order; same contract as the sync
        ``DeepfakeClient.iter_detect`` (lazy, bounded memory, nothing raises per input)."""
        analysis.check_options(concurrency, batch_size, mode)
        info = await self._drive(analysis.info_or_error(self))
        pending: deque[asyncio.Task] = deque()
        try:
            for plan in analysis.chunk_plans(self, info, sources, concurrency, heatmap, batch_size, mode, copy_move):
                if plan is None:
                    for result in await pending.popleft():
                        yield result
                else:
                    pending.append(asyncio.create_task(self._drive(plan)))
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _drive(self, plan: triton_io.Plan[T]) -> T:
        run, url = triton_io.Run(plan), self.url  # the endpoint this plan's steps go to
        while run.step is not None:
            if isinstance(run.step, triton_io.Reconnect):
                # An endpoint's aio client serves concurrent tasks and reconnects by itself: only the target moves.
                url, outcome = run.step.url or url, None
            else:
                # The step's answer, or the exception it raised, for the plan to handle.
                [outcome] = await asyncio.gather(self._perform(run.step, url), return_exceptions=True)
            run.settle(outcome)
        return run.result

    async def _perform(self, step: triton_io.Step, url: str) -> Any:
        match step:
            case triton_io.Call():
                return await self._bounded(step.on(self._client(url)))
            case triton_io.Send(batches, heatmap):
                return await self._bounded(asyncio.gather(*(self._infer(url, batch, heatmap) for batch in batches)))
            case triton_io.Compute(function, args):
                return await asyncio.to_thread(function, *args)
            case triton_io.Pause(seconds):
                await asyncio.sleep(seconds)

    async def _bounded(self, call: Awaitable[T]) -> T:
        # The outer bound also covers connection setup, which the per-call timeouts do not.
        return await asyncio.wait_for(call, self.timeout_s + 1.0)

    def _client(self, url: str) -> Any:
        if url not in self._tritons:
            if self.protocol == "grpc":
                self._tritons[url] = self._aio_module.InferenceServerClient(url)
            else:
                self._tritons[url] = self._aio_module.InferenceServerClient(url, conn_timeout=self.timeout_s)
        return self._tritons[url]

    async def _infer(self, url: str, batch: np.ndarray, heatmap: bool) -> Any:
        return await self._client(url).infer(self.model, triton_io.make_inputs(self._module, batch),
                                             outputs=triton_io.make_outputs(self._module, heatmap),
                                             **self._call_options)
