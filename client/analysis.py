"""What both clients (sync and asyncio) do, independent of the protocol and of how they wait: the clients
are transports that only perform the I/O these functions ask for ("sans-IO").

:func:`prepare` turns one source into the rows of one request (one row in fast mode; every region of
the image in whole mode, deepfake_edge/regions.py) and starts the image's copy-move check, which runs
while Triton answers the rows; :func:`request_slices` says how the rows go out;
:func:`to_detections` turns the answered rows (and the checks) back into one :class:`Detection` per source;
:func:`merge_chunk` gives every source of a chunk its Detection or Failure. Every operation runs under
client/endpoints.py's :func:`retried` (which endpoint, what is retried, the back-off).

The client's operations are *plans*: generators that yield each piece of I/O they need as a step
(:class:`Call`, :class:`Send`, :class:`Compute`, :class:`Pause`, :class:`Reconnect`), get back its answer,
or its exception thrown in, and return the operation's result. :func:`model_info`, :func:`detect`,
:func:`check_ready` and :func:`chunk_plans` (``iter_detect``) are the entry points; the sync client
performs the steps with blocking tritonclient on its worker threads, the asyncio client with tritonclient's
aio clients (client/triton_io.py runs a plan for either). So which calls are made, what a failure means and when
to retry is written once, here.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterable, Iterator, Optional, TypedDict

import numpy as np
from PIL import Image

from deepfake_edge.client.endpoints import ClientSettings, retried
from deepfake_edge.client.errors import DeepfakeClientError, ModelNotReadyError, ServerUnreachableError
from deepfake_edge.client.results import Detection, Failure, RegionScore, Result
from deepfake_edge.client.triton_io import (
    Call,
    Compute,
    ModelInfo,
    Outputs,
    Plan,
    Send,
    config_as_dict,
    not_ready_message,
    parse_model_config,
    read_outputs,
)
from deepfake_edge.copy_move import CopyMove, copy_move_score, start_copy_move
from deepfake_edge.preprocessing import BadImageError, ImageSource, load_image
from deepfake_edge.provenance import Provenance, provenance_for
from deepfake_edge.regions import MODES, RegionPlan, analyse, stitch_heatmap, strongest

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_IMAGES_PER_REQUEST = 8  # fast mode: with several requests in flight the server batches across them
MIN_ROWS_TO_SPLIT = 8
MAX_PARALLEL_PARTS = 4


@dataclass(frozen=True)
class Prepared:
    """One source ready to send: its UINT8 (N, 3, S, S) ``rows``; ``plan`` in whole mode, else the crop
    box of the single view (for the heatmap); its ``provenance`` when it was read; in whole mode, when the
    card is calibrated for it, its ``copy_move`` check, started (deepfake_edge/copy_move.py; its result is
    the finding or None)."""

    source: ImageSource
    rows: np.ndarray
    plan: Optional[RegionPlan]
    crop_box: tuple[int, int, int, int]
    provenance: Optional[Provenance] = None
    copy_move: "Optional[Future[Optional[CopyMove]]]" = None

    @property
    def mode(self) -> str:
        return "fast" if self.plan is None else "whole"


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    return mode


class DetectOptions(TypedDict, total=False):
    """The keyword options of ``iter_detect``, which ``detect_many`` takes too (defaults: ``iter_detect``'s)."""

    concurrency: int
    heatmap: bool
    batch_size: Optional[int]
    mode: str
    copy_move: bool


def check_options(concurrency: int, batch_size: Optional[int], mode: str) -> None:
    if concurrency < 1 or (batch_size is not None and batch_size < 1):
        raise ValueError("concurrency and batch_size must be >= 1")
    check_mode(mode)


def prepare(info: ModelInfo, source: ImageSource, mode: str, max_pixels: int, provenance: bool = False,
            copy_move: bool = True) -> Prepared:
    """Decode ``source`` and cut its rows; every way a source can be unusable (missing file, not an image,
    too large ...) is a BadImageError naming the reason. With ``provenance``, also read what the file says
    about where it came from (:func:`read_source_provenance`); ``copy_move`` as in :func:`analyse_whole`."""
    decoded, found = read_source_provenance(source) if provenance else (source, None)
    image = read_image(decoded, max_pixels)
    preprocessor = info.preprocessor
    if mode == "fast":
        view = preprocessor.resize_and_crop(image, max_pixels=max_pixels)
        rows = np.asarray(view, dtype=np.uint8).transpose(2, 0, 1)[None]
        box = tuple(round(v) for v in preprocessor.crop_box(image.size))
        return Prepared(source, np.ascontiguousarray(rows), None, box, found)  # type: ignore[arg-type]
    return analyse_whole(source, image, info, copy_move, found)


def analyse_whole(source: ImageSource, image: Image.Image, info: ModelInfo, copy_move: bool = True,
                  provenance: Optional[Provenance] = None) -> Prepared:
    """Whole mode's regions of a decoded ``image`` and, when ``copy_move`` is asked for and the served card
    is calibrated for it, its copy-move check, started: it runs while the rows are sent and answered, so at
    concurrency 1 its time no longer adds to the round trip's (:func:`wait_for_copy_moves`)."""
    plan, rows = analyse(image, info.preprocessor)
    check = None
    if copy_move and info.card.copy_move_calibration is not None:
        check = start_copy_move(image)
    return Prepared(source, rows, plan, (0, 0, *image.size), provenance, check)


def wait_for_copy_moves(prepared: list[Prepared]) -> None:
    """Return once the copy-move checks of ``prepared`` have finished (a plan waits here, in a Compute step,
    so that :func:`to_detections` does not block an event loop)."""
    for item in prepared:
        if item.copy_move is not None:
            item.copy_move.exception()


def read_source_provenance(source: ImageSource) -> tuple[ImageSource, Optional[Provenance]]:
    """The source to decode and its provenance (None for a decoded image), from the same bytes: a file object
    is read once, into memory, for both; a path is memory-mapped. Never raises: the decoder reports errors."""
    if hasattr(source, "read") and not isinstance(source, Image.Image):
        try:
            data = source.read()  # type: ignore[union-attr]
        except (OSError, ValueError):
            return source, None  # the decoder says why it cannot be read
        if not isinstance(data, (bytes, bytearray, memoryview)):
            return source, provenance_for(source)  # not a binary file: the reader says so
        source = bytes(data)
    return source, provenance_for(source)


def prepare_chunk(info: ModelInfo, chunk: list[ImageSource], mode: str, max_pixels: int,
                  provenance: bool = False, copy_move: bool = True) -> tuple[list[Prepared], list[Optional[Failure]]]:
    """The sources of ``chunk`` that could be prepared, and a Failure (or None) per source."""
    prepared, failures = [], []
    for source in chunk:
        try:
            prepared.append(prepare(info, source, mode, max_pixels, provenance, copy_move))
            failures.append(None)
        except BadImageError as error:
            failures.append(Failure(source, error))
    return prepared, failures


def read_image(source: ImageSource, max_pixels: int) -> Image.Image:
    """``load_image`` with file-system errors turned into BadImageError."""
    try:
        return load_image(source, max_pixels=max_pixels)
    except FileNotFoundError:
        raise BadImageError("file not found") from None
    except IsADirectoryError:
        raise BadImageError("is a directory, not an image file") from None
    except PermissionError:
        raise BadImageError("permission denied") from None
    except OSError as error:
        raise BadImageError(f"cannot read file: {error.strerror or error}") from None
    except MemoryError:
        raise BadImageError("not enough memory to decode this image") from None


def stacked_rows(prepared: list[Prepared]) -> np.ndarray:
    return prepared[0].rows if len(prepared) == 1 else np.concatenate([p.rows for p in prepared])


def request_slices(rows: int, info: ModelInfo) -> list[slice]:
    """How ``rows`` rows go out: one request when they fit the model's batch limit and the server runs one
    instance; split evenly over its instances (at most the batch limit each) from :data:`MIN_ROWS_TO_SPLIT`
    rows on, so that one image's regions run on all of them at once instead of one core (the embedded
    server runs two single-threaded instances on two cores)."""
    parts = min(info.instances, MAX_PARALLEL_PARTS) if rows >= MIN_ROWS_TO_SPLIT else 1
    size = min(info.max_batch_size, math.ceil(rows / parts))
    return [slice(start, min(start + size, rows)) for start in range(0, rows, size)]


def to_detections(prepared: list[Prepared], outputs: Outputs, info: ModelInfo) -> list[Detection]:
    """One Detection per prepared source from the answered rows of all of them and their copy-move checks
    (waited for, if still running), in order."""
    detections, start = [], 0
    for item in prepared:
        rows = slice(start, start + len(item.rows))
        start = rows.stop
        probabilities, logits = outputs.probabilities[rows], outputs.logits[rows]
        heatmaps = None if outputs.heatmaps is None else outputs.heatmaps[rows]
        card = info.card.for_mode(item.mode)
        decider = strongest(probabilities)
        probability, logit = float(probabilities[decider]), float(logits[decider])
        regions: tuple[RegionScore, ...] = ()
        notes: tuple[str, ...] = ()
        heatmap = None
        if item.plan is not None:
            regions = tuple(RegionScore(region.kind, region.box, float(p))
                            for region, p in zip(item.plan.regions, probabilities))
            notes = item.plan.notes
            if heatmaps is not None:
                heatmap = stitch_heatmap(item.plan, probabilities, heatmaps)
            found = None if item.copy_move is None else item.copy_move.result()
            if found is not None and card.copy_move_calibration is not None:
                copied, copied_logit = copy_move_score(found.support, card.copy_move_calibration)
                regions += tuple(RegionScore("copy_move", area, copied) for area in found.areas)
                if copied > probability:  # a copy-move competes with the regions, as one more region
                    probability, logit = copied, copied_logit
        elif heatmaps is not None:
            heatmap = np.array(heatmaps[0], dtype=np.float32)
        detections.append(Detection(
            source=item.source, label=card.label_for(probability), confidence=card.confidence_for(probability),
            fake_probability=probability, logit=logit, model=info.name,
            model_version=outputs.version, mode=item.mode, regions=regions, notes=notes, heatmap=heatmap,
            heatmap_box=item.crop_box if heatmap is not None else None, provenance=item.provenance))
    return detections


def images_per_request(mode: str, batch_size: Optional[int], info: ModelInfo) -> int:
    """Images per request for ``detect_many``: ``batch_size`` if given, else 8 in fast mode (several
    requests in flight let the server batch across them) and 1 in whole mode (an image is already a
    batch of its regions); never more than the model's ``max_batch_size``."""
    default = DEFAULT_IMAGES_PER_REQUEST if mode == "fast" else 1
    return min(batch_size or default, info.max_batch_size)


def merge_chunk(prepared: list[Prepared], failures: list[Optional[Failure]],
                outcome: "list[Result] | DeepfakeClientError",
                unreachable: list[ServerUnreachableError]) -> list[Result]:
    """One result per source of a chunk, in order: its Failure from :func:`prepare_chunk`, else its answer
    from ``outcome`` (the answers of the prepared sources, or the error they all failed with). The first
    unreachable-server error is remembered in ``unreachable``, so later chunks fail without being sent."""
    if isinstance(outcome, DeepfakeClientError):
        if isinstance(outcome, ServerUnreachableError) and not unreachable:
            unreachable.append(outcome)
        outcome = [Failure(item.source, outcome) for item in prepared]
    answers = iter(outcome)
    return [failure if failure is not None else next(answers) for failure in failures]


# -- plans: the client's operations, as steps (client/triton_io.py) a transport performs -----------------


def model_info(settings: ClientSettings) -> Plan[ModelInfo]:
    """The served model's card and limits, fetched (with retries) once per client."""
    if settings._info is None:
        settings._info = yield from retried(settings, partial(fetch_info, settings))
    return settings._info


def fetch_info(settings: ClientSettings) -> Plan[ModelInfo]:
    """One attempt: is the server live, is the model ready, then its config."""
    if not (yield Call("is_server_live", **settings._call_options)):
        raise ServerUnreachableError(settings.url, "the server is not live")
    if not (yield Call("is_model_ready", settings.model, **settings._call_options)):
        index = yield from repository_index(settings)
        raise ModelNotReadyError(not_ready_message(settings.model, settings.url, index))
    config = yield Call("get_model_config", settings.model, **settings._json_options)
    return parse_model_config(settings.model, config_as_dict(config))


def repository_index(settings: ClientSettings) -> Plan[Any]:
    """The server's models, or None without the admin key (the repository index is an admin API)."""
    from tritonclient.utils import InferenceServerException

    if settings._admin_headers is None:
        return None
    try:
        return (yield Call("get_model_repository_index", headers=settings._admin_headers, **settings._json_options))
    except InferenceServerException:
        return None  # only a nicer error message was at stake


def check_ready(settings: ClientSettings, timeout_s: float) -> Plan[None]:
    """Whether the model is ready, asked once: nothing cached, no retries, ``timeout_s`` for the call."""
    options = {"client_timeout": timeout_s} if settings.protocol == "grpc" else {}

    def probe() -> Plan[None]:
        if not (yield Call("is_model_ready", settings.model, **options)):
            raise ModelNotReadyError(not_ready_message(settings.model, settings.url, None))

    yield from retried(settings, probe, retries=0)


def infer(settings: ClientSettings, info: ModelInfo, prepared: list[Prepared], heatmap: bool) -> Plan[list[Detection]]:
    """One attempt at answering ``prepared``; their rows go out as :func:`request_slices` says."""
    rows = stacked_rows(prepared)
    batches = [rows[part] for part in request_slices(len(rows), info)]
    results = yield Send(batches, heatmap)
    parts = [read_outputs(result, len(batch), info, heatmap) for result, batch in zip(results, batches)]
    yield Compute(wait_for_copy_moves, (prepared,))  # they ran while Triton answered
    return to_detections(prepared, Outputs.concat(parts), info)


def detect(settings: ClientSettings, source: ImageSource, heatmap: bool, mode: str,
           copy_move: bool = True) -> Plan[Detection]:
    """``detect``: raises BadImageError or a DeepfakeClientError."""
    info = yield from model_info(settings)
    prepared = [(yield Compute(prepare, (info, source, check_mode(mode), settings.max_pixels, settings.provenance,
                                         copy_move)))]
    detections = yield from retried(settings, partial(infer, settings, info, prepared, heatmap))
    return detections[0]


def run_chunk(settings: ClientSettings, info: ModelInfo, chunk: list[ImageSource], heatmap: bool, mode: str,
              unreachable: list[ServerUnreachableError], copy_move: bool = True) -> Plan[list[Result]]:
    """One result per source of ``chunk``, in order; nothing raises. Once the server was found unreachable
    (``unreachable``, shared by a run's chunks), a chunk fails with that error without being sent."""
    prepared, failures = yield Compute(prepare_chunk, (info, chunk, mode, settings.max_pixels, settings.provenance,
                                                       copy_move))
    if not prepared:
        return failures
    outcome: "list[Result] | DeepfakeClientError"
    if unreachable:
        outcome = unreachable[0]
    else:
        try:
            outcome = yield from retried(settings, partial(infer, settings, info, prepared, heatmap))
        except DeepfakeClientError as error:
            outcome = error
    return merge_chunk(prepared, failures, outcome, unreachable)


def info_or_error(settings: ClientSettings) -> Plan["ModelInfo | DeepfakeClientError"]:
    """:func:`model_info`, or the error it failed with (``iter_detect`` raises nothing per input)."""
    try:
        return (yield from model_info(settings))
    except DeepfakeClientError as error:
        return error


def failed(chunk: list[ImageSource], error: DeepfakeClientError) -> Plan[list[Result]]:
    """A Failure with ``error`` per source of ``chunk``: a plan with no I/O to do."""
    yield from ()
    return [Failure(source, error) for source in chunk]


def chunk_plans(settings: ClientSettings, info: "ModelInfo | DeepfakeClientError", sources: Iterable[ImageSource],
                most_started: int, heatmap: bool, batch_size: Optional[int],
                mode: str, copy_move: bool = True) -> Iterator[Optional[Plan[list[Result]]]]:
    """What an ``iter_detect`` run does, in order: the plan of the next chunk of sources, to start, or None:
    wait for the oldest plan started and hand on its results. Sources are read as chunks are cut, and at most
    ``most_started`` plans are started and not yet waited for, so memory stays bounded for any number of
    sources. ``info`` is :func:`info_or_error`'s: without it every source fails with the error, unsent."""
    sources = iter(sources)
    if isinstance(info, DeepfakeClientError):
        size, start = DEFAULT_IMAGES_PER_REQUEST, partial(failed, error=info)
    else:
        size = images_per_request(mode, batch_size, info)
        unreachable: list[ServerUnreachableError] = []
        start = partial(run_chunk, settings, info, heatmap=heatmap, mode=mode, unreachable=unreachable,
                        copy_move=copy_move)
    started = 0
    while chunk := list(itertools.islice(sources, size)):
        yield start(chunk)
        started += 1
        if started == most_started:
            yield None
            started -= 1
    yield from itertools.repeat(None, started)
