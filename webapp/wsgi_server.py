"""The web page's production WSGI server: waitress, with a deadline on receiving each request.

waitress reads requests in one event loop (asyncore style) and buffers headers and body before it hands the
request to one of a fixed pool of worker threads, so a slow client holds a socket, not a thread. Its own
``channel_timeout`` only drops *inactive* connections, though: a client sending one byte per second stays
active forever. :class:`WebServer` adds what is missing:

- a **request deadline**: a connection whose request (headers and body) has not fully arrived
  ``request_timeout_s`` after its first byte is answered ``408`` and closed; one that has sent nothing
  ``request_timeout_s`` after connecting is closed;
- an **idle timeout** in seconds (not whole seconds) for connections with no request in progress;
- JSON error bodies (``{"error": ...}``) for what waitress answers itself (408, 413, 400, 431), with
  the app's message for 413;
- a refused upload (``Content-Length`` over the limit) is read and discarded rather than buffered (up to
  4x the limit or 64 MB, whichever is larger), so that the client, which is still sending, reads the 413 instead of a reset connection;
- a plain-text request log (logger ``deepfake_edge.webapp.requests``; control characters escaped);
- the ``socketserver``-like interface the rest of the project uses: ``serve_forever()``, ``shutdown()``
  (from another thread), ``server_close()`` and ``server_port``.

Built on waitress 3.0 internals (``HTTPChannel.parser_class``/``error_task_class``/``task_class``/
``service``, ``HTTPRequestParser.received``, ``BaseWSGIServer.maintenance``/``readable``, ``wasyncore``),
read from waitress 3.0.2; ``pyproject.toml`` keeps waitress below 4 and ``tests/test_security_web.py``
checks the behaviour.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.receiver import FixedStreamReceiver
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import Error, RequestEntityTooLarge

request_log = logging.getLogger("deepfake_edge.webapp.requests")

# Control characters (ANSI escapes included) are written escaped in the request log, as werkzeug did.
_CONTROL_CHARACTERS = str.maketrans(
    {c: rf"\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]} | {ord("\\"): r"\\"}
)
# A refused body up to the larger of these is read and thrown away (costs no memory; the deadline bounds it).
_DISCARD_FACTOR, _DISCARD_MIN_BYTES = 4, 64 * 1024 * 1024


def _has_handler_for(logger: logging.Logger, level: int) -> bool:
    current: logging.Logger | None = logger
    while current is not None:
        if any(handler.level <= level for handler in current.handlers):
            return True
        current = current.parent if current.propagate else None
    return False


class RequestTimeout(Error):
    code = 408
    reason = "Request Timeout"


class _DiscardedBody:
    """The buffer of a refused upload: counts the bytes and keeps none."""

    def __init__(self) -> None:
        self.length = 0

    def append(self, data: bytes) -> None:
        self.length += len(data)

    def __len__(self) -> int:
        return 0

    def getfile(self) -> io.BytesIO:
        return io.BytesIO()

    def close(self) -> None:
        pass


class _RequestParser(HTTPRequestParser):
    """waitress's parser, plus when the request began and the discarding of refused bodies."""

    _discarding = None  # the receiver swallowing a refused body

    def __init__(self, adj):
        super().__init__(adj)
        # waitress makes a parser when the first byte of a request arrives.
        self.started = time.time()

    def received(self, data: bytes) -> int:
        if self._discarding is not None:
            consumed = self._discarding.received(data)
            if self._discarding.completed or self._discarding.error or self._discarded.length > self._discard_limit:
                self.completed = True
            return consumed
        consumed = super().received(data)
        if isinstance(self.error, RequestEntityTooLarge):
            if self.expect_continue:
                self.expect_continue = False  # the client waits for "100 Continue": answer 413 at once, no 100
            else:
                self._discard_rest()
        return consumed

    def _discard_rest(self) -> None:
        """Read the rest of a refused body and throw it away, then answer 413 (the client is still sending)."""
        self._discard_limit = max(_DISCARD_FACTOR * self.adj.max_request_body_size, _DISCARD_MIN_BYTES)
        self._discarded = _DiscardedBody()
        receiver = self.body_rcv
        if self.chunked and receiver is not None and not receiver.completed:
            receiver.getbuf().close()  # what was buffered so far
            receiver.buf = self._discarded
        elif not self.chunked and 0 < self.content_length <= self._discard_limit:
            if receiver is not None:
                receiver.getbuf().close()
            receiver = self.body_rcv = FixedStreamReceiver(self.content_length, self._discarded)
        else:
            return  # answer at once
        self._discarding = receiver
        self.completed = False


class _LoggedTask:
    """Writes the request line, status and size to the request log when a response is finished."""

    def finish(self) -> None:
        super().finish()
        request = self.request
        line = f"{getattr(request, 'command', '-')} {getattr(request, 'path', '-')}"
        if getattr(request, "query", ""):
            line += f"?{request.query}"
        line = f"{line} HTTP/{request.version}".translate(_CONTROL_CHARACTERS)
        address = self.channel.addr[0] if isinstance(self.channel.addr, tuple) else "-"
        size = self.content_length if self.content_length is not None else "-"
        request_log.info('%s - - [%s] "%s" %s %s', address, time.strftime("%d/%b/%Y %H:%M:%S"), line,
                         self.status.split(" ", 1)[0], size)


class _AppTask(_LoggedTask, WSGITask):
    pass


class _JsonErrorTask(_LoggedTask, ErrorTask):
    """What waitress answers itself (408, 413, 400, 431, 500), as JSON like every error of the app."""

    def execute(self) -> None:
        error = self.request.error
        server = self.channel.server
        body = json.dumps({"error": server.error_message(error)}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), *server.extra_headers])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class _Channel(HTTPChannel):
    parser_class = _RequestParser
    task_class = _AppTask
    error_task_class = _JsonErrorTask

    def service(self) -> None:
        super().service()
        request = self.request
        if request is not None:
            # Part of the next request arrived with this one; its clock starts once this one is answered.
            request.started = max(request.started, time.time())

    def answer_timeout(self, timeout_s: float) -> None:
        """Give up on the request being received: answer 408 and close (called from the event loop)."""
        with self.requests_lock:
            request = self.request
            if request is None or self.requests or self.will_close or self.close_when_flushed:
                return
            if not request.headers_finished:
                request.parse_header(b"GET / HTTP/1.0\r\n")  # what waitress does for its own early errors
            request.error = RequestTimeout(f"the request did not arrive within {timeout_s:g} s")
            request.expect_continue = False
            request.completed = True
            self.request = None
            self.requests.append(request)
            self.server.add_task(self)


class WebServer(TcpWSGIServer):
    """A waitress server with a request deadline and an idle timeout (see the module's docstring).

    ``port=0`` picks a free port; read it back from ``server_port``.
    """

    channel_class = _Channel

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 8080, *,
                 request_timeout_s: float = 30.0, idle_timeout_s: float = 60.0, threads: int = 8,
                 connection_limit: int = 100, max_body_bytes: int | None = None,
                 too_large_message: str = "The upload is too large.",
                 extra_headers: Iterable[tuple[str, str]] = ()):
        if request_timeout_s <= 0 or idle_timeout_s <= 0:
            raise ValueError("request_timeout_s and idle_timeout_s must be positive")
        self.request_timeout_s = float(request_timeout_s)
        self.idle_timeout_s = float(idle_timeout_s)
        self.too_large_message = too_large_message
        self.extra_headers = list(extra_headers)
        options = {}
        if max_body_bytes is not None:
            # waitress refuses a body of max_request_body_size bytes or more; the app accepts max_body_bytes.
            # Bodies stay in memory (inbuf_overflow): uploads never touch the disk; nor do responses.
            options.update(max_request_body_size=max_body_bytes + 1, inbuf_overflow=max_body_bytes + 1)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(threads)
        super().__init__(
            app, map={}, dispatcher=dispatcher, host=host, port=port, threads=threads,
            connection_limit=connection_limit, cleanup_interval=1, asyncore_loop_timeout=1,
            asyncore_use_poll=True, outbuf_overflow=16 * 1024 * 1024, ident="deepfake-edge", **options,
        )
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        # Like werkzeug's: the request log is at INFO and goes to stderr unless a handler already takes it.
        if request_log.level == logging.NOTSET:
            request_log.setLevel(logging.INFO)
        if not _has_handler_for(request_log, logging.INFO):
            request_log.addHandler(logging.StreamHandler(sys.stderr))
        queue_log = logging.getLogger("waitress.queue")
        if queue_log.level == logging.NOTSET:
            # It warns on every request that waits for a free thread, i.e. on any burst of uploads.
            queue_log.setLevel(logging.ERROR)

    @property
    def server_port(self) -> int:
        return int(self.effective_port)

    def error_message(self, error: Error) -> str:
        if isinstance(error, RequestEntityTooLarge):
            return self.too_large_message
        if isinstance(error, RequestTimeout):
            return f"The request did not arrive within {self.request_timeout_s:g} s; the connection was closed."
        return f"{error.reason}: {error.body}"

    def maintenance(self, now: float) -> None:
        """Every second: answer 408 to requests past their deadline, close connections idle too long."""
        for channel in list(self.active_channels.values()):
            if channel.requests or channel.will_close or channel.close_when_flushed:
                continue  # being answered (the app bounds its own time) or closing already
            request = channel.request
            if request is not None and now - request.started > self.request_timeout_s:
                channel.answer_timeout(self.request_timeout_s)
            elif now - channel.last_activity > self.idle_timeout_s:
                channel.will_close = True
            elif channel.last_activity == channel.creation_time and now - channel.creation_time > self.request_timeout_s:
                channel.will_close = True  # connected and never sent a byte (waitress sets both times at once)

    def serve_forever(self) -> None:
        """Run the event loop until :meth:`shutdown` (from another thread) or KeyboardInterrupt."""
        self._stopped.clear()
        try:
            while not self._stop:
                wasyncore.poll2(self.adj.asyncore_loop_timeout, self._map)
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned."""
        self._stop = True
        self.pull_trigger()
        self._stopped.wait()

    def server_close(self) -> None:
        """Close every connection and the listening socket; stop the worker threads (up to 5 s)."""
        for channel in list(self.active_channels.values()):
            channel.handle_close()
        self.close()
        self.task_dispatcher.shutdown(timeout=5)


@contextmanager
def serving_in_thread(server: WebServer, name: str = "web-server") -> Iterator[str]:
    """Run ``server`` in a daemon thread; yields its base URL (``http://host:port``); always shuts it down."""
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://{server.effective_host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
