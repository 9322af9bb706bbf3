"""One exception class per failure a caller can act on, and the mapping from tritonclient's errors.

tritonclient reports failures differently per protocol (gRPC status codes, HTTP status codes, raw socket
and aiohttp exceptions); :func:`translate` folds them into the classes below so callers and the CLI
never see a transport-specific exception. :func:`is_transient` says which failures deserve a retry.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from deepfake_edge.preprocessing import BadImageError
from deepfake_edge.serving_contract import GRPC_PORT, HTTP_PORT

__all__ = [
    "BadImageError",
    "DeepfakeClientError",
    "ModelNotReadyError",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnreachableError",
    "is_transient",
    "translate",
]


class DeepfakeClientError(Exception):
    """Base class of the client's own errors. ``BadImageError`` is preprocessing's (a ``ValueError``, since
    preprocessing must not depend on the client); catch ``(DeepfakeClientError, BadImageError)`` for both."""


class ServerUnreachableError(DeepfakeClientError):
    """Nothing answers at the URL (connection refused, reset, DNS, TLS ...). The message names the URL."""

    def __init__(self, url: str, detail: str = ""):
        self.url, self.detail = url, detail
        super().__init__(f"cannot reach the Triton server at {url}" + (f": {detail}" if detail else ""))


class RequestTimeoutError(ServerUnreachableError):
    """The server did not answer within the client's timeout."""

    def __init__(self, url: str, timeout_s: float):
        self.timeout_s = timeout_s
        DeepfakeClientError.__init__(self, f"no answer from the Triton server at {url} within {timeout_s:g} s")
        self.url, self.detail = url, f"no answer within {timeout_s:g} s"


class ModelNotReadyError(DeepfakeClientError):
    """The server answers but the model is unknown, still loading or failed to load."""


class ServerError(DeepfakeClientError):
    """The server answered with an error (bad request, inference failure, broken model config)."""


_UNREACHABLE_HINTS = (
    "failed to connect",
    "connection refused",
    "connect failed",
    "socket closed",
    "connection reset",
    "broken pipe",
    "dns resolution failed",
    "name resolution",
    "network is unreachable",
    "unavailable: ipv",
    # gRPC through a load balancer (HAProxy, serve --replicas): the call's HTTP/2 stream was reset, or the
    # balancer answered 502/503 itself, because the replica behind it died or none is up.
    "stream removed",
    "header with status: 502",
    "header with status: 503",
)
_NETWORK_ERRNOS = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL}
_NOT_READY_HINTS = ("unknown model", "is not found", "not ready", "no available versions", "is not loaded")


def translate(error: BaseException, url: str, timeout_s: float) -> BaseException:
    """The client exception for ``error`` raised by tritonclient, or ``error`` itself if it is not a
    transport or server failure (a programming error must surface unchanged)."""
    if isinstance(error, (DeepfakeClientError, BadImageError)):
        return error
    from tritonclient.utils import InferenceServerException

    if isinstance(error, InferenceServerException):
        return _translate_server_exception(error, url, timeout_s)
    if isinstance(error, (TimeoutError, socket.timeout, asyncio.TimeoutError)) or _is_gevent_timeout(error):
        return RequestTimeoutError(url, timeout_s)
    if type(error).__name__ == "HTTPParseError":  # geventhttpclient: the answer was not HTTP/1.x
        return ServerUnreachableError(url, "this port does not speak HTTP/1.1 (is it Triton's gRPC port? "
                                           f"use --protocol grpc, or Triton's HTTP port, {HTTP_PORT} by default)")
    if type(error).__module__ == "rapidjson" or type(error).__name__ == "JSONDecodeError":
        return ServerUnreachableError(url, "something answers there, but not Triton's HTTP API (is it the "
                                           f"metrics port? Triton's HTTP port is {HTTP_PORT} by default)")
    if isinstance(error, (ConnectionError, socket.gaierror)) or _is_aiohttp_connection_error(error):
        return ServerUnreachableError(url, _describe(error))
    if isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS:
        return ServerUnreachableError(url, _describe(error))
    return error


def is_transient(error: BaseException) -> bool:
    """Worth retrying after a back-off: the server was unreachable (not slow: a timeout is not retried,
    retrying would only add load to a server that is already behind)."""
    return isinstance(error, ServerUnreachableError) and not isinstance(error, RequestTimeoutError)


def _translate_server_exception(error, url: str, timeout_s: float) -> DeepfakeClientError:
    status = str(error.status() or "")
    message = str(error.message() or "")
    lowered = message.lower()
    if status == "StatusCode.DEADLINE_EXCEEDED":
        return RequestTimeoutError(url, timeout_s)
    if "is restricted, expecting header" in message:  # HTTP 403, gRPC UNAVAILABLE
        return ServerError(f"{message}: this Triton API needs the server's admin key (server {url})")
    # 502: a gateway (HAProxy in front of replicas) lost the server that had the request; 503: none is up.
    if status in ("StatusCode.UNAVAILABLE", "502", "503") and not any(h in lowered for h in _NOT_READY_HINTS):
        if status == "StatusCode.UNAVAILABLE" and "socket closed" in lowered:
            # What gRPC reports when the port answers HTTP/1.1 (Triton's HTTP or metrics port).
            message += (f" (if this is Triton's HTTP or metrics port: gRPC is {GRPC_PORT} by default, "
                        f"or use --protocol http)")
        if status in ("502", "503") or any(h in lowered for h in _UNREACHABLE_HINTS):
            return ServerUnreachableError(url, message)
    if status == "StatusCode.NOT_FOUND" or any(h in lowered for h in _NOT_READY_HINTS):
        return ModelNotReadyError(f"{message} (server {url})")
    if status == "StatusCode.UNAVAILABLE":  # e.g. the model is being unloaded
        return ModelNotReadyError(f"{message} (server {url})")
    if not status:  # raised inside tritonclient before anything was sent
        return DeepfakeClientError(message)
    return ServerError(f"{message} (server {url}, status {status})")


def _describe(error: BaseException) -> str:
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def _is_gevent_timeout(error: BaseException) -> bool:
    try:
        from gevent import Timeout
    except ImportError:  # pragma: no cover - gevent comes with tritonclient[http]
        return False
    return isinstance(error, Timeout)


def _is_aiohttp_connection_error(error: BaseException) -> bool:
    try:
        from aiohttp import ClientConnectionError
    except ImportError:  # pragma: no cover - aiohttp comes with tritonclient[http]
        return False
    return isinstance(error, ClientConnectionError)
