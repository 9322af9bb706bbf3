"""The web page and its JSON API: upload an image, get the verdict of the models served by Triton.

The app holds no model: each upload is decoded in memory with the project's one preprocessing
definition (:func:`deepfake_edge.preprocessing.load_image`) and forwarded through
:class:`deepfake_edge.client.DeepfakeClient`. Uploads never touch the disk: werkzeug would spool
multipart parts over 500 KB to a temporary file, so :class:`InMemoryRequest` keeps them in a
``BytesIO``, and ``MAX_CONTENT_LENGTH`` bounds how much memory one request can take.

Every error answers JSON ``{"error": "<message for a person>"}``: 4xx for bad input, 503 when
Triton is unreachable or the model not ready, 504 when it does not answer within the timeout, 502
when Triton fails on a valid image.
"""

from __future__ import annotations

import ctypes
import io
import ipaddress
import logging
import math
import os
import threading
from typing import Any, BinaryIO

from flask import Flask, Request, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from deepfake_edge.client import (
    BadImageError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerError,
    ServerUnreachableError,
)
from deepfake_edge.preprocessing import DEFAULT_MAX_PIXELS, load_image
from deepfake_edge.webapp.inference import DetectionService
from deepfake_edge.webapp.openapi import openapi_spec

log = logging.getLogger(__name__)
_M_ARENA_MAX = -8  # glibc malloc.h

DEFAULT_MODELS = ("deepfake_b0", "deepfake_cnn")
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
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

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    triton_url: str,
    protocol: str = "grpc",
    models: tuple[str, ...] = DEFAULT_MODELS,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout_s: float = 10.0,
    max_concurrent_detections: int = 8,
) -> Flask:
    """The Flask app answering the page (``/``) and the API (``/api/...``) for ``models`` on Triton.

    ``models[0]`` gives the verdict and the heatmap, the others are shown for comparison.
    ``max_upload_bytes`` bounds the uploaded file, ``max_pixels`` the declared image size
    (decompression bombs); ``timeout_s`` bounds every call to Triton. At most
    ``max_concurrent_detections`` uploads are decoded and scored at once (the rest wait), which
    bounds the memory decoded images can take.
    """
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config.update(
        MAX_CONTENT_LENGTH=max_upload_bytes + _MULTIPART_SLACK_BYTES,
    )
    app.json.sort_keys = False  # keep the documented field order
    app.json.ensure_ascii = False  # "Fake – 97.3%" stays readable in curl output
    service = DetectionService(triton_url, protocol, tuple(models), timeout_s)
    detection_slots = threading.BoundedSemaphore(max_concurrent_detections)

    @app.get("/")
    def index() -> Any:
        return render_template(
            "index.html",
            max_upload_bytes=max_upload_bytes,
            max_upload_text=_format_bytes(max_upload_bytes),
        )

    @app.post("/api/detect")
    def detect() -> Any:
        upload = request.files.get("file")
        if upload is None:
            raise ApiError(400, "No image received: send the image file in the multipart form field 'file'.")
        name = (upload.filename or "upload")[:120]
        data = upload.stream.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise ApiError(413, _too_large_message(max_upload_bytes))
        if not data:
            raise ApiError(400, f"'{name}' is empty (0 bytes). Please choose an image file.")
        alpha = _heatmap_alpha(request.values.get("heatmap_alpha"), request.values.get("heatmap"))
        with detection_slots:
            try:
                image = load_image(data, max_pixels=max_pixels)
            except BadImageError as error:
                raise ApiError(400, f"'{name}' could not be read as an image: {str(error).rstrip('.')}.") from None
            result = service.detect(image, heatmap_alpha=alpha)
        result["filename"] = name
        return jsonify(result)

    @app.get("/api/health")
    def health() -> Any:
        report = service.health()
        ready = report["models"].get(service.models[0]) == "ready"
        report["status"] = "ok" if ready else "unavailable"
        return jsonify(report), 200 if ready else 503

    @app.get("/api/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_spec(max_upload_bytes, service.models))

    @app.after_request
    def secure_headers(response: Any) -> Any:
        for header, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    _register_error_handlers(app, triton_url, service.models[0], max_upload_bytes)
    return app


def _register_error_handlers(app: Flask, triton_url: str, primary: str, max_upload_bytes: int) -> None:
    def answer(status: int, message: str) -> Any:
        return jsonify({"error": message}), status

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Any:
        return answer(error.status, error.message)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge) -> Any:
        return answer(413, _too_large_message(max_upload_bytes))

    @app.errorhandler(ServerUnreachableError)
    def unreachable(error: ServerUnreachableError) -> Any:
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


def _too_large_message(max_upload_bytes: int) -> str:
    return f"The upload is too large: images up to {_format_bytes(max_upload_bytes)} are accepted."


def _format_bytes(size: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{size} bytes"


def make_web_server(
    app: Flask, host: str = "127.0.0.1", port: int = 8080, socket_timeout_s: float = 60.0
) -> BaseWSGIServer:
    """A threaded werkzeug server for ``app``; the caller runs ``serve_forever()`` and ``shutdown()``.

    Binds 127.0.0.1 by default; pass another ``host`` deliberately to expose the page. ``port=0``
    picks a free port (read it back from ``server.server_port``). A connection that sends nothing
    for ``socket_timeout_s`` is dropped, so a stalled client cannot hold a thread forever.
    """
    if not _is_loopback(host):
        log.warning("the web page is reachable from other machines on %s:%s", host, port)
    limit_malloc_arenas()
    handler = type("TimeoutRequestHandler", (WSGIRequestHandler,), {"timeout": socket_timeout_s})
    return make_server(host, port, app, threaded=True, request_handler=handler)


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process (``MALLOC_ARENA_MAX`` in the environment wins).

    glibc gives busy threads arenas of their own (up to 8 per core) and keeps their freed pages: under
    16 concurrent uploads the web app's median RSS drifted +10 % over 150,000 requests while its Python
    heap stayed flat (RELIABILITY.md). Returns whether the cap was set (False off glibc).
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
