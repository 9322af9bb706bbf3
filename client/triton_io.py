"""The Triton side of the contract, shared by the sync and asyncio clients.

A served model's configuration is read into :class:`ModelInfo` by the serving contract
(:mod:`deepfake_edge.serving_contract`; the model card travels in the config's ``model_card`` parameter, so
input size, crop rule, labels and threshold are never re-typed here); this module turns a broken one into
a :class:`ServerError`, builds the request tensors and reads a response's outputs.

It also names the I/O a client's plans (client/analysis.py) ask their transport for, as steps:
:class:`Call`, :class:`Send`, :class:`Compute`, :class:`Pause` and :class:`Reconnect`, and runs a plan
(:class:`Run`, :func:`drive`).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Generator, Generic, Mapping, Optional, Sequence, TypeVar, Union

import numpy as np

from deepfake_edge.client.errors import ServerError
from deepfake_edge.serving_contract import (
    DEFAULT_HOST,
    DEFAULT_PORTS,
    HEATMAP_OUTPUT,
    INPUT_NAME,
    LOGIT_OUTPUT,
    PROBABILITY_OUTPUT,
    SCORE_OUTPUTS,
    ModelConfigError,
    ModelInfo,
    config_as_dict,
)
from deepfake_edge.serving_contract import parse_model_config as _parse_model_config

__all__ = ["Call", "Compute", "ModelInfo", "Outputs", "Pause", "Plan", "Reconnect", "Run", "Send", "Step",
           "config_as_dict", "drive", "make_inputs", "make_outputs", "normalize_url", "normalize_urls",
           "not_ready_message", "parse_model_config", "read_outputs", "response_version"]

T = TypeVar("T")


def normalize_url(url: str | None, protocol: str) -> str:
    """``host:port`` as tritonclient wants it: scheme stripped, default port of the protocol added."""
    if protocol not in DEFAULT_PORTS:
        raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
    url = (url or DEFAULT_HOST).strip()
    for scheme in ("http://", "https://", "grpc://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    url = url.rstrip("/")
    if ":" not in url.rsplit("]", 1)[-1]:
        url = f"{url}:{DEFAULT_PORTS[protocol]}"
    return url


def normalize_urls(urls: str | Sequence[str] | None, protocol: str) -> tuple[str, ...]:
    """One endpoint or several (failover order), each as :func:`normalize_url` makes it, repeats dropped."""
    given = [urls] if urls is None or isinstance(urls, str) else list(urls)
    if not given:
        raise ValueError("urls must name at least one endpoint")
    return tuple(dict.fromkeys(normalize_url(url, protocol) for url in given))


def parse_model_config(name: str, config: Mapping[str, Any]) -> ModelInfo:
    """The contract's :func:`~deepfake_edge.serving_contract.parse_model_config`; a config that breaks the
    contract is a :class:`ServerError` (the server answered, with a model that is not ours)."""
    try:
        return _parse_model_config(name, config)
    except ModelConfigError as error:
        raise ServerError(str(error)) from None


def make_inputs(module: ModuleType, batch: np.ndarray, shm_region: str | None = None) -> list:
    """The request's ``image`` input: ``batch`` inline, or (if ``shm_region`` names a registered region
    already holding it) a reference to system shared memory."""
    infer_input = module.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
    if shm_region is None:
        infer_input.set_data_from_numpy(batch)
    else:
        infer_input.set_shared_memory(shm_region, batch.nbytes)
    return [infer_input]


def make_outputs(module: ModuleType, heatmap: bool) -> list:
    names = SCORE_OUTPUTS + ((HEATMAP_OUTPUT,) if heatmap else ())
    return [module.InferRequestedOutput(name) for name in names]


def response_version(result: Any) -> str:
    """The version that answered (gRPC responses are protobufs, HTTP ones dicts)."""
    response = result.get_response()
    if isinstance(response, dict):
        return str(response.get("model_version", ""))
    return str(getattr(response, "model_version", ""))


@dataclass(frozen=True)
class Outputs:
    """A response's rows: fake probabilities and logits (float32 [N]), heatmaps (float32 [N, h, w]) if
    asked for, and the model version that answered."""

    probabilities: np.ndarray
    logits: np.ndarray
    heatmaps: np.ndarray | None
    version: str

    @classmethod
    def concat(cls, parts: Sequence["Outputs"]) -> "Outputs":
        if len(parts) == 1:
            return parts[0]
        heatmaps = None if parts[0].heatmaps is None else np.concatenate([p.heatmaps for p in parts])
        return cls(np.concatenate([p.probabilities for p in parts]), np.concatenate([p.logits for p in parts]),
                   heatmaps, parts[0].version)


def read_outputs(result: Any, rows: int, info: ModelInfo, heatmap: bool) -> Outputs:
    """The outputs of a response to ``rows`` rows; missing outputs or a wrong row count are a ServerError."""
    probabilities = result.as_numpy(PROBABILITY_OUTPUT)
    logits = result.as_numpy(LOGIT_OUTPUT)
    heatmaps = result.as_numpy(HEATMAP_OUTPUT) if heatmap else None
    if probabilities is None or logits is None or (heatmap and heatmaps is None):
        raise ServerError(f"model {info.name!r} answered without the expected outputs")
    probabilities, logits = probabilities.reshape(-1), logits.reshape(-1)
    if len(probabilities) != rows or len(logits) != rows:
        raise ServerError(f"model {info.name!r} answered {len(probabilities)} scores for {rows} images")
    return Outputs(probabilities, logits, heatmaps, response_version(result))


def not_ready_message(model: str, url: str, index: Any) -> str:
    """Names the models the server does have (``index``: the repository index of either protocol, or None
    when the caller may not read it: it is an admin API)."""
    if index is None:
        return (f"model {model!r} is not ready on the Triton server at {url} (unknown, loading or failed to "
                f"load); 'deepfake-edge serve' lists its models when it starts")
    entries = index.get("models", []) if isinstance(index, dict) else index
    states = ", ".join(f"{m.get('name')} ({m.get('state') or 'UNAVAILABLE'})" for m in entries) or "none"
    return f"model {model!r} is not ready on the Triton server at {url}; its models: {states}"


# -- the steps of a plan: what a transport performs --------------------------------------------------------


class Call:
    """Call tritonclient's ``method`` with these arguments; answer: what it returns."""

    def __init__(self, method: str, *args: Any, **kwargs: Any):
        self.method, self.args, self.kwargs = method, args, kwargs

    def on(self, triton: Any) -> Any:
        """The call made on ``triton`` (an aio client returns an awaitable)."""
        return getattr(triton, self.method)(*self.args, **self.kwargs)


@dataclass(frozen=True)
class Send:
    """Infer ``batches`` (UINT8 rows), at once where the transport can; answer: tritonclient's results, in
    order."""

    batches: list[np.ndarray]
    heatmap: bool


@dataclass(frozen=True)
class Compute:
    """CPU work (decoding an image, cutting its regions); answer: ``function(*args)``. The asyncio client
    runs it in a worker thread, so that it never blocks the event loop."""

    function: Callable[..., Any]
    args: tuple


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` before the next attempt."""

    seconds: float


@dataclass(frozen=True)
class Reconnect:
    """The plan's next steps go to ``url`` (None: where they went so far). ``broken``: a call found the server
    unreachable, and a connection the transport owns alone is better replaced than reused half-dead; without
    it (a plan pinning its endpoint, client/analysis.py's ``retried``) a healthy connection to ``url`` is kept."""

    url: Optional[str] = None
    broken: bool = True


Step = Union[Call, Send, Compute, Pause, Reconnect]
Plan = Generator[Step, Any, T]


class Run(Generic[T]):
    """A plan being performed: ``step`` is the I/O it waits for, None once it has returned ``result`` (an
    exception it raises comes out of :meth:`settle`)."""

    def __init__(self, plan: Plan[T]):
        self._plan = plan
        self.result: Any = None
        self.step: Optional[Step] = None
        self._resume(plan.send, None)

    def settle(self, outcome: Any) -> None:
        """Hand the plan the answer of ``step``, or the exception it raised (no step answers with one)."""
        self._resume(self._plan.throw if isinstance(outcome, BaseException) else self._plan.send, outcome)

    def _resume(self, resume: Callable[[Any], Step], outcome: Any) -> None:
        try:
            self.step = resume(outcome)
        except StopIteration as finished:
            self.step, self.result = None, finished.value


def drive(plan: Plan[T], perform: Callable[[Step], Any]) -> T:
    """Run ``plan`` with ``perform`` doing each step, blocking (the sync client)."""
    run = Run(plan)
    while run.step is not None:
        try:
            outcome = perform(run.step)
        except Exception as error:
            outcome = error
        run.settle(outcome)
    return run.result
