"""Where a client's requests go and what happens when they cannot get there.

:class:`ClientSettings` holds what both clients (sync and asyncio) are configured with: the endpoints in
failover order, the protocol, timeouts, the admin key, and the tritonclient call options that follow.
:func:`retried` is the one retry loop every operation of client/analysis.py runs under: connection
failures move to the next endpoint at once, and come back to an endpoint already tried only after a
back-off (:func:`backoff_s`); :func:`retry_delay` decides what a failure means.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Sequence, TypeVar

from deepfake_edge.client.errors import DeepfakeClientError, ServerUnreachableError, is_transient, translate
from deepfake_edge.client.triton_io import ModelInfo, Pause, Plan, Reconnect, normalize_urls
from deepfake_edge.server.admin_key import admin_headers

T = TypeVar("T")
log = logging.getLogger(__name__)


class ClientSettings:
    """What both clients are configured with, and the tritonclient call options that follow from it.

    ``url`` is ``host:port`` (default 127.0.0.1 and the protocol's default port), or several, in failover
    order (``urls``; :attr:`url` is the one in use, :meth:`fail_over` moves on); every call is bounded by
    ``timeout_s``; connection failures are retried ``retries`` times with back-off (and on every other
    endpoint at least once); ``admin_key`` (optional) is sent where an admin API needs it; ``provenance``:
    read each file's Content Credentials and metadata into ``Detection.provenance`` (off: None).
    """

    def __init__(self, url: "Optional[str] | Sequence[str]", protocol: str, model: str, timeout_s: float,
                 retries: int, max_pixels: int, admin_key: Optional[str], provenance: bool = True):
        self.protocol = protocol
        self.provenance = bool(provenance)
        self.urls = normalize_urls(url, protocol)
        self._endpoint = 0  # index in urls of the endpoint in use; moved by fail_over, from any thread
        self._endpoint_lock = threading.Lock()
        self.model = model
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.max_pixels = max_pixels
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self._module = module
        self._admin_headers = admin_headers(admin_key, protocol) if admin_key else None
        # gRPC takes a timeout per call and returns protobufs unless asked for JSON; HTTP has neither option.
        self._call_options = {"client_timeout": self.timeout_s} if protocol == "grpc" else {}
        self._json_options = {"as_json": True, **self._call_options} if protocol == "grpc" else {}
        self._info: Optional[ModelInfo] = None

    @property
    def url(self) -> str:
        """The endpoint new requests go to: the first of :attr:`urls` until one fails."""
        return self.urls[self._endpoint]

    def fail_over(self, failed: str) -> str:
        """The endpoint to try after ``failed`` could not be reached: the next of :attr:`urls`, in a ring.
        New requests go there too, unless another request has moved them on already (concurrent failures
        on the same endpoint move the client once, not once each)."""
        following = self.urls[(self.urls.index(failed) + 1) % len(self.urls)]
        with self._endpoint_lock:
            if self.urls[self._endpoint] == failed:
                self._endpoint = self.urls.index(following)
        return following


def backoff_s(attempt: int) -> float:
    """0.25 s, 0.5 s, 1 s, ... capped at 4 s."""
    return min(4.0, 0.25 * 2**attempt)


def retry_delay(raw: BaseException, url: str, timeout_s: float, attempt: int,
                retries: int) -> tuple[DeepfakeClientError, Optional[float]]:
    """A failed call's error as the client reports it, and the seconds to wait before trying again (None:
    give up and raise it). Only transient errors (connection failures) are retried, at most ``retries``
    times. An exception that is not a client error (a bug) is raised as it is."""
    error = translate(raw, url, timeout_s)
    if error is raw and not isinstance(raw, DeepfakeClientError):
        raise raw
    return error, backoff_s(attempt) if is_transient(error) and attempt < retries else None


def retried(settings: ClientSettings, attempt: Callable[[], Plan[T]], retries: Optional[int] = None) -> Plan[T]:
    """``attempt()`` again after each failure :func:`retry_delay` retries, at most ``retries`` times (default
    the client's, and at least once on every other endpoint); then its error as the client reports it.

    The plan pins the endpoint it talks to (``Reconnect(url, broken=False)``; with one endpoint there is
    nothing to pin). An attempt that cannot reach its endpoint goes on to the next one (:meth:`fail_over`) at
    once; the back-off comes only before an endpoint this plan has already tried. Once every endpoint has
    failed, the error names them all."""
    if retries is None:
        retries = max(settings.retries, len(settings.urls) - 1)
    number, url = 0, settings.url
    following, tried = url, [url]
    if len(settings.urls) > 1:
        yield Reconnect(url, broken=False)
    while True:
        try:
            return (yield from attempt())
        except Exception as caught:
            raw = caught
        error, delay = retry_delay(raw, url, settings.timeout_s, number, retries)
        if isinstance(error, ServerUnreachableError):
            following = settings.fail_over(url) if is_transient(error) else url
            yield Reconnect(following)
        if delay is None:
            if isinstance(error, ServerUnreachableError) and is_transient(error) and len(tried) > 1:
                error = ServerUnreachableError(" or ".join(tried), error.detail)
            raise error from (None if error is raw else raw)
        detail = getattr(error, "detail", error)
        if following in tried:
            log.debug("cannot reach %s (%s); trying again in %.2f s", url, detail, delay)
            yield Pause(delay)
        else:
            log.info("cannot reach %s (%s); trying %s", url, detail, following)
            tried.append(following)
        url, number = following, number + 1

