"""The web page and its JSON API: upload an image or a video, get the verdict of the models served by Triton.

The app holds no model: each upload is decoded in memory with the project's one preprocessing
definition (:func:`deepfake_edge.preprocessing.load_image`; a video's frames with
:class:`deepfake_edge.video.VideoReader`, PyAV reading the bytes from a ``BytesIO``) and forwarded through
:class:`deepfake_edge.client.DeepfakeClient`. What an upload is, image or video, is decided by its content
(:func:`deepfake_edge.video.sniff_kind`), never by its name. Uploads never touch the disk: werkzeug would
spool multipart parts over 500 KB to a temporary file, so :class:`InMemoryRequest` keeps them in a
``BytesIO``, and ``MAX_CONTENT_LENGTH`` bounds how much memory one request can take.

Every error answers JSON ``{"error": "<message for a person>"}``: 4xx for bad input, 503 when
Triton is unreachable or the model not ready, 504 when it does not answer within the timeout, 502
when Triton fails on a valid image.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import math
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable

from flask import Flask, Request, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from deepfake_edge.client import (
    BadImageError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnreachableError,
)
from deepfake_edge.client.results import provenance_record
from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, load_image, open_image
from deepfake_edge.provenance import provenance_for
from deepfake_edge.regions import DEFAULT_MODE, MODES
from deepfake_edge.serving_contract import CNN_MODEL, DEFAULT_MODEL, VIDEO_EXTENSIONS
from deepfake_edge.video import BadVideoError, VideoLimits, name_note, probe, sniff_kind
from deepfake_edge.webapp.decode_budget import (
    DEFAULT_MAX_DECODE_BYTES,
    BudgetBusyError,
    BudgetExceededError,
    DecodeBudget,
    scoring_bytes,
    video_scoring_bytes,
)
from deepfake_edge.webapp.glibc_memory import limit_malloc_arenas, unmap_freed_images
from deepfake_edge.webapp.inference import VIDEO_CONCURRENCY, DetectionService, VideoTimeoutError
from deepfake_edge.webapp.limits import (DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_MAX_VIDEO_BYTES, DEFAULT_MAX_VIDEO_PIXELS,
                                         DEFAULT_MAX_VIDEO_SECONDS, DEFAULT_VIDEO_TIMEOUT_S)
from deepfake_edge.webapp.openapi import openapi_spec
from deepfake_edge.webapp.wsgi_server import WebServer

log = logging.getLogger(__name__)

DEFAULT_MODELS = (DEFAULT_MODEL, CNN_MODEL)
# Room for the multipart envelope (boundaries, part headers, small form fields) around the file.
_MULTIPART_SLACK_BYTES = 64 * 1024

_SECURITY_HEADERS = {
    # Everything the page needs is served from here; images come back as data: URLs.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # frame-ancestors above, for browsers that ignore CSP: no other site may frame the page (clickjacking).
    "X-Frame-Options": "DENY",
}


class InMemoryRequest(Request):
    """A Flask request whose uploaded files stay in memory (werkzeug's default spools them to disk)."""

    max_form_parts = 16

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> BinaryIO:
        return io.BytesIO()


class ApiError(Exception):
    """An error the API reports as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def create_app(
    triton_url: str,
    protocol: str = "grpc",
    models: tuple[str, ...] = DEFAULT_MODELS,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout_s: float = 10.0,
    triton_outage: Callable[[], str | None] | None = None,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    max_video_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS,
    video_timeout_s: float = DEFAULT_VIDEO_TIMEOUT_S,
    provenance: bool = True,
) -> Flask:
    """The Flask app answering the page (``/``) and the API (``/api/...``) for ``models`` on Triton.

    ``models[0]`` gives the verdict and the heatmap, the others are shown for comparison.
    ``triton_outage`` (from ``serve``'s supervisor) says, while Triton is down, what is being done about it:
    503 answers then carry that sentence and a ``Retry-After``.
    ``max_upload_bytes`` bounds the uploaded file, ``max_pixels`` the declared image size
    (decompression bombs); ``timeout_s`` bounds each detection from start to end. Uploads being decoded and scored
    take at most ``max_decode_bytes`` at once: each reserves its peak, computed from its header before
    decoding, and waits up to ``timeout_s`` for it (then 503); one that needs more than the whole budget
    is refused with 413.

    Videos (told from images by their content): up to ``max_video_bytes`` (``max_upload_bytes`` bounds
    images only), ``max_video_seconds`` of declared duration and ``max_video_pixels`` a frame (over any of
    them: 413), analysed by ``models[0]`` alone within ``video_timeout_s`` (then 504). Each reserves the
    fixed :func:`~deepfake_edge.webapp.decode_budget.video_scoring_bytes` figure for ``max_video_pixels``.

    ``provenance``: answers carry the upload's Content Credentials (C2PA) and EXIF/XMP metadata, read from
    its bytes after the verdict, beside it (``"provenance": null`` when off; docs/provenance.md).
    """
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    too_large = _too_large_message(max_upload_bytes, max_video_bytes)
    app.config.update(
        MAX_CONTENT_LENGTH=max(max_upload_bytes, max_video_bytes) + _MULTIPART_SLACK_BYTES,
        UPLOAD_TOO_LARGE_MESSAGE=too_large,  # also the web server's answer to a body over MAX_CONTENT_LENGTH
    )
    app.json.sort_keys = False  # keep the documented field order
    app.json.ensure_ascii = False  # "Fake – 97.3%" stays readable in curl output
    service = DetectionService(triton_url, protocol, tuple(models), timeout_s)
    decode_budget = DecodeBudget(max_decode_bytes)
    video_limits = VideoLimits(max_duration_s=max_video_seconds, max_bytes=max_video_bytes,
                               max_frame_pixels=max_video_pixels)
    video_bytes = video_scoring_bytes(max_video_pixels, VIDEO_CONCURRENCY)
    unmap_freed_images()  # else freed image blocks stay in the process and RSS outgrows the budget

    @app.get("/")
    def index() -> Any:
        return render_template(
            "index.html",
            max_upload_bytes=max_upload_bytes,
            max_upload_text=_format_bytes(max_upload_bytes),
            max_video_bytes=max_video_bytes,
            max_video_text=_format_bytes(max_video_bytes),
            max_video_seconds=f"{max_video_seconds:g}",
        )

    @app.post("/api/detect")
    def detect() -> Any:
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "No image received: send the image or video file in the multipart form field "
                                "'file'.")
        name = (upload.filename or "upload")[:120]
        data = upload.stream.read(max(max_upload_bytes, max_video_bytes) + 1)
        upload.stream.close()  # the parser's copy: only ``data`` is needed from here
        if len(data) > max(max_upload_bytes, max_video_bytes):
            raise ApiError(413, too_large)
        if not data:
            raise ApiError(400, f"'{name}' is empty (0 bytes). Please choose an image or a video file.")
        alpha = _heatmap_alpha(request.values.get("heatmap_alpha"), request.values.get("heatmap"))
        mode = _analysis_mode(request.values.get("mode"))
        kind = sniff_kind(data)  # by content: a video named .jpg is a video, a photo named .mp4 a photo
        if kind == "video":
            return jsonify(detect_video(name, data, alpha, mode))
        if len(data) > max_upload_bytes:
            raise ApiError(413, f"'{name}' is too large: it is an image of {_format_bytes(len(data))}, and images "
                                f"up to {_format_bytes(max_upload_bytes)} are accepted (videos up to "
                                f"{_format_bytes(max_video_bytes)}).")
        # One deadline for the whole request: waiting for the budget and every call to Triton share it.
        deadline = time.monotonic() + timeout_s
        try:
            image = open_image(data, max_pixels=max_pixels)  # the header alone: no pixel decoded yet
            needed = scoring_bytes(image, len(service.models), mode)  # counts every model as in ``mode``
            with decode_budget.reserve(needed, wait_s=deadline - time.monotonic()):
                try:
                    image = load_image(image, max_pixels=max_pixels)
                    result = service.detect(image, heatmap_alpha=alpha, deadline=deadline, mode=mode)
                finally:
                    # Free the pixels inside their reservation: this frame, and the traceback of a failed
                    # decode, would keep them alive while the next upload decodes.
                    image.close()
        except BadImageError as error:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                raise ApiError(400, f"'{name}' could not be read: it is not a video this server reads (MP4/MOV, "
                                    "AVI, Matroska/WebM or animated GIF), and as an image: "
                                    f"{str(error).rstrip('.')}.") from None
            raise ApiError(400, f"'{name}' could not be read as an image: {str(error).rstrip('.')}.") from None
        except BudgetExceededError:
            raise ApiError(413, f"'{name}' is too large to process: its {image.width}x{image.height} pixels "
                                f"({image.mode}) would take about {_format_bytes(needed)} of memory to decode, "
                                f"more than this server allows ({_format_bytes(max_decode_bytes)}). "
                                "Please send a smaller image.") from None
        except BudgetBusyError:
            raise ApiError(503, "The server is busy decoding other images. Try again in a moment.",
                           retry_after_s=2) from None
        if note := name_note(name, "image"):
            result["notes"].insert(0, note)
        result["provenance"] = provenance_record(provenance_for(data)) if provenance else None
        result["filename"] = name
        return jsonify(result)

    def detect_video(name: str, data: bytes, alpha: float | None, mode: str) -> dict[str, Any]:
        """A video upload's answer. The bytes stay in memory: PyAV reads them from a ``BytesIO``."""
        if len(data) > max_video_bytes:
            raise ApiError(413, f"'{name}' is too large: it is a video of {_format_bytes(len(data))}, and videos "
                                f"up to {_format_bytes(max_video_bytes)} are accepted.")
        try:
            # The budget is waited for within the per-call timeout; the analysis has the video deadline.
            with decode_budget.reserve(video_bytes, wait_s=timeout_s):
                # Opened once before Triton is asked: a video that cannot be used (not a video, audio only,
                # too long, frames too large, no decodable frame) is a 4xx whatever the server's state.
                probe(data, video_limits)
                result = service.detect_video(data, video_limits, heatmap_alpha=alpha, mode=mode,
                                              timeout_s=video_timeout_s)
        except BadVideoError as error:
            raise _bad_video(name, error, max_video_seconds, max_video_bytes) from None
        except BudgetExceededError:
            raise ApiError(413, f"'{name}' cannot be analysed: a video with frames of up to "
                                f"{max_video_pixels:,} pixels takes about {_format_bytes(video_bytes)} of memory "
                                f"to decode, more than this server allows ({_format_bytes(max_decode_bytes)}). "
                                "Please send a photo instead, or ask the administrator to raise the "
                                "memory limit.") from None
        except BudgetBusyError:
            raise ApiError(503, "The server is busy decoding other uploads. Try again in a moment.",
                           retry_after_s=5) from None
        except VideoTimeoutError as error:
            raise ApiError(504, f"Analysing '{name}' took longer than the {error.timeout_s:g} s allowed: the "
                                "detection server is busy or the video is long. Try a shorter clip, "
                                "mode=fast, or again in a moment.") from None
        except Exception as error:
            # deepfake_edge.video turns decoder errors into BadVideoError; one it missed is still this file's
            # fault, not the server's: a 400, logged with its traceback so that the gap gets fixed.
            if not type(error).__module__.startswith("av."):
                raise
            log.exception("PyAV error not turned into BadVideoError while analysing a video")
            raise ApiError(400, f"'{name}' could not be read as a video: the decoder failed "
                                f"({type(error).__name__}).") from None
        if note := name_note(name, "video"):
            result["notes"].insert(0, note)
        result["provenance"] = provenance_record(provenance_for(data)) if provenance else None
        result["filename"] = name
        return result

    @app.get("/api/health")
    def health() -> Any:
        report = service.health()
        ready = report["models"].get(service.models[0]) == "ready"
        report["status"] = "ok" if ready else "unavailable"
        outage = triton_outage() if triton_outage is not None else None
        if outage and not ready:
            report["detail"] = outage
        return jsonify(report), 200 if ready else 503

    @app.get("/api/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_spec(max_upload_bytes, service.models, max_video_bytes=max_video_bytes,
                                    max_video_seconds=max_video_seconds, max_video_pixels=max_video_pixels))

    @app.after_request
    def secure_headers(response: Any) -> Any:
        for header, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    _register_error_handlers(app, triton_url, too_large, triton_outage)
    return app


def _bad_video(name: str, error: BadVideoError, max_seconds: float, max_bytes: int) -> ApiError:
    """413 for a video over a limit (the limit named), 400 for one that cannot be used."""
    message = str(error).rstrip(".")
    if error.over_limit == "duration":
        return ApiError(413, f"'{name}' is too long: {message.removeprefix('video too long: ')}. Please send a "
                             f"clip of at most {max_seconds:g} s.")
    if error.over_limit == "frame_pixels":
        return ApiError(413, f"'{name}' has frames too large for this server: "
                             f"{message.removeprefix('video frames too large: ')}. Please send a smaller version "
                             "of the video.")
    if error.over_limit is not None:
        return ApiError(413, f"'{name}' is too large: {message} (videos up to {_format_bytes(max_bytes)}).")
    return ApiError(400, f"'{name}' could not be read as a video: {message}.")


def _register_error_handlers(app: Flask, triton_url: str, too_large_message: str,
                             triton_outage: Callable[[], str | None] | None) -> None:
    def answer(status: int, message: str) -> Any:
        return jsonify({"error": message}), status

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Any:
        response, status = answer(error.status, error.message)
        if error.retry_after_s is not None:
            response.headers["Retry-After"] = str(error.retry_after_s)
        return response, status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> Any:
        return answer(413, too_large_message)

    @app.errorhandler(ServerUnreachableError)
    def unreachable(error: ServerUnreachableError) -> Any:
        outage = triton_outage() if triton_outage is not None else None
        if outage:
            response, status = answer(503, f"{outage[0].upper()}{outage[1:]}. Try again in a few seconds.")
            response.headers["Retry-After"] = "5"
            return response, status
        return answer(
            503,
            f"The detection server (Triton at {triton_url}) cannot be reached. "
            "Start it with 'deepfake-edge serve' and try again.",
        )

    @app.errorhandler(RequestTimeoutError)
    def timed_out(error: RequestTimeoutError) -> Any:
        # Reachable but too slow (overloaded): a gateway timeout, not "start the server".
        return answer(504, f"The detection server did not answer within {error.timeout_s:g} s; "
                           "it is busy. Try again in a moment.")

    @app.errorhandler(ModelNotReadyError)
    def not_ready(error: ModelNotReadyError) -> Any:
        return answer(503, f"The detection model is not available right now ({error}). Try again shortly.")

    @app.errorhandler(BadImageError)
    def bad_image(error: BadImageError) -> Any:
        return answer(400, f"The image could not be read: {str(error).rstrip('.')}.")

    @app.errorhandler(ServerError)
    def server_error(error: ServerError) -> Any:
        return answer(502, f"The detection server failed on this image: {error}")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Any:
        return answer(error.code or 500, f"{error.name}: {error.description}")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Any:
        log.exception("unexpected error while answering %s %s", request.method, request.path)
        return answer(500, f"Something went wrong on our side ({type(error).__name__}). Please try again.")


def _heatmap_alpha(alpha: str | None, wanted: str | None) -> float | None:
    if wanted is not None and wanted.strip().lower() in ("0", "false", "no", "off"):
        return None
    if alpha is None or not alpha.strip():
        return 0.5
    try:
        value = float(alpha)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ApiError(400, f"heatmap_alpha must be a number between 0 and 1, not {alpha!r}.")
    return value


def _analysis_mode(mode: str | None) -> str:
    if mode is None or not mode.strip():
        return DEFAULT_MODE
    if mode.strip() not in MODES:
        raise ApiError(400, f"mode must be one of {', '.join(MODES)}, not {mode!r}.")
    return mode.strip()


def _too_large_message(max_upload_bytes: int, max_video_bytes: int | None = None) -> str:
    videos = "" if max_video_bytes is None else f" and videos up to {_format_bytes(max_video_bytes)}"
    return f"The upload is too large: images up to {_format_bytes(max_upload_bytes)}{videos} are accepted."


def _format_bytes(size: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} bytes"


def make_web_server(
    app: Flask, host: str = "127.0.0.1", port: int = 8080, socket_timeout_s: float = 60.0, *,
    request_timeout_s: float = 30.0, threads: int = 8, connection_limit: int = 100,
) -> WebServer:
    """A production WSGI server (waitress) for ``app``; the caller runs ``serve_forever()`` and ``shutdown()``.

    Binds 127.0.0.1 by default; pass another ``host`` deliberately to expose the page. ``port=0``
    picks a free port (read it back from ``server.server_port``). Requests are read by one event loop and
    answered by ``threads`` worker threads (8 by default: requests mostly wait on Triton or on the decode
    budget), so a slow client holds a socket, not a thread. A request (headers and body) that has not
    fully arrived ``request_timeout_s`` after its first byte is answered 408 and its connection closed
    (a client dribbling its upload cannot hold a connection for ever), and a new connection that sends
    nothing is closed after ``request_timeout_s``; a connection with no request in progress is closed after
    ``socket_timeout_s`` without data; beyond ``connection_limit`` open
    connections new ones wait in the listen backlog. Bodies over the app's ``MAX_CONTENT_LENGTH`` are
    refused with the app's 413 message; bodies are buffered in memory, never on disk.
    """
    if not _is_loopback(host):
        log.warning("the web page is reachable from other machines on %s:%s", host, port)
    limit_malloc_arenas()
    max_body = app.config.get("MAX_CONTENT_LENGTH")
    return WebServer(
        app, host, port, request_timeout_s=request_timeout_s, idle_timeout_s=socket_timeout_s, threads=threads,
        connection_limit=connection_limit, max_body_bytes=max_body,
        too_large_message=app.config.get("UPLOAD_TOO_LARGE_MESSAGE")
        or _too_large_message(max(0, (max_body or 0) - _MULTIPART_SLACK_BYTES)),
        extra_headers=_SECURITY_HEADERS.items(),
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
