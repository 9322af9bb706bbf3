"""The web server against hostile clients: slow uploads are cut, the page cannot be framed, the request log is
plain text. Everything runs against the real server (waitress, ``make_web_server``) on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest
from web_support import running_web_server, stop_process

from deepfake_edge.server.triton import free_port
from deepfake_edge.webapp.app import create_app, make_web_server

SLOW_CLIENTS = 60
REQUEST_TIMEOUT_S = 2.0
_SLOW_HEAD = (b"POST /api/detect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: multipart/form-data; boundary=slow\r\nContent-Length: 100000\r\n\r\n--slow\r\n")


def _offline_app(**options):
    return create_app(f"127.0.0.1:{free_port()}", **options)  # nothing listens there: Triton is never reached


def _address(base_url: str) -> tuple[str, int]:
    host, port = base_url.removeprefix("http://").split(":")
    return host, int(port)


def _get(base_url: str, path: str, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(*_address(base_url), timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class _Dribbler:
    """Slow clients: each sends ``head`` then one byte per second (headers or body) until the server answers."""

    def __init__(self, address: tuple[str, int], count: int, head: bytes):
        self.sockets: dict[socket.socket, float] = {}
        self.answers: list[tuple[float, bytes]] = []  # (seconds it was open, what the server sent)
        for _ in range(count):
            sock = socket.create_connection(address, timeout=5)
            self.sockets[sock] = time.monotonic()
            sock.sendall(head)
            sock.setblocking(False)

    def tick(self) -> None:
        """Send every open connection one more byte; collect those the server answered or closed."""
        for sock, opened in list(self.sockets.items()):
            try:
                received = sock.recv(65536)
            except BlockingIOError:
                try:
                    sock.send(b"x")
                    continue
                except BlockingIOError:
                    continue
                except OSError:
                    received = b""
            except OSError:
                received = b""
            sock.setblocking(True)
            sock.settimeout(2)
            try:  # the rest of the answer, if any, up to the close
                while chunk := sock.recv(65536):
                    received += chunk
            except OSError:
                pass
            self.answers.append((time.monotonic() - opened, received))
            sock.close()
            del self.sockets[sock]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


@pytest.mark.attack("10", "60 connections to the web page sending an upload 1 byte/s (werkzeug never dropped "
                                "them despite its 60 s idle timeout: one thread each)")
def test_sixty_clients_dribbling_uploads_are_cut_and_others_still_served(record_property):
    with running_web_server(_offline_app(), request_timeout_s=REQUEST_TIMEOUT_S) as base_url:
        dribbler = _Dribbler(_address(base_url), SLOW_CLIENTS, _SLOW_HEAD)
        probes = []
        try:
            deadline = time.monotonic() + REQUEST_TIMEOUT_S + 10
            while dribbler.sockets and time.monotonic() < deadline:
                tick = time.monotonic()
                dribbler.tick()
                if len(dribbler.sockets) == SLOW_CLIENTS:  # all of them still holding on
                    status, _, body = _get(base_url, "/api/openapi.json")
                    probes.append((status, time.monotonic() - tick))
                    assert status == 200 and json.loads(body)["openapi"].startswith("3.")
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
            still_open = len(dribbler.sockets)
        finally:
            dribbler.close()
        assert still_open == 0, f"{still_open} slow clients were never cut"
        assert len(probes) >= 2, "the normal requests should have run while the slow clients dribbled"
        assert max(seconds for _, seconds in probes) < 1.0, probes
        assert len(dribbler.answers) == SLOW_CLIENTS
        for seconds, answer in dribbler.answers:
            # cut by the request deadline (the idle timeout is 60 s), not before it, and told why
            assert REQUEST_TIMEOUT_S - 0.5 <= seconds <= REQUEST_TIMEOUT_S + 4, seconds
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
            assert "did not arrive within 2 s" in body["error"]
        cut_after = sorted(seconds for seconds, _ in dribbler.answers)
        record_property("outcome", f"all {SLOW_CLIENTS} answered 408 and closed {cut_after[0]:.1f}-{cut_after[-1]:.1f} s "
                                   f"after connecting (deadline {REQUEST_TIMEOUT_S:g} s); GET answered meanwhile in "
                                   f"<= {1000 * max(seconds for _, seconds in probes):.0f} ms")


def test_clients_dribbling_headers_are_cut_too():
    with running_web_server(_offline_app(), request_timeout_s=REQUEST_TIMEOUT_S) as base_url:
        dribbler = _Dribbler(_address(base_url), 5, b"GET /api/openapi.json HTTP/1.1\r\nX-Slow: ")
        try:
            deadline = time.monotonic() + REQUEST_TIMEOUT_S + 10
            while dribbler.sockets and time.monotonic() < deadline:
                dribbler.tick()
                time.sleep(1.0)
            still_open = len(dribbler.sockets)
        finally:
            dribbler.close()
    assert still_open == 0
    assert all(answer.startswith(b"HTTP/1.1 408 ") or answer.startswith(b"HTTP/1.0 408 ")
               for _, answer in dribbler.answers), dribbler.answers


def test_a_connection_that_never_sends_a_byte_is_closed_at_the_request_deadline():
    with running_web_server(_offline_app(), request_timeout_s=REQUEST_TIMEOUT_S) as base_url:  # idle: 60 s
        with socket.create_connection(_address(base_url), timeout=REQUEST_TIMEOUT_S + 5) as silent:
            started = time.monotonic()
            assert silent.recv(1024) == b""
            assert REQUEST_TIMEOUT_S - 0.5 <= time.monotonic() - started <= REQUEST_TIMEOUT_S + 3


def test_an_upload_over_the_limit_is_refused_in_json_while_the_client_sends_it():
    """The body is read and thrown away (never buffered), so the client reads the 413 rather than a reset."""
    with running_web_server(_offline_app(max_upload_bytes=100_000)) as base_url:
        connection = http.client.HTTPConnection(*_address(base_url), timeout=30)
        try:
            connection.request("POST", "/api/detect", body=b"\xff" * 3_000_000,
                               headers={"Content-Type": "multipart/form-data; boundary=b"})
            response = connection.getresponse()
            assert response.status == 413
            assert response.getheader("Content-Type") == "application/json"
            assert response.getheader("X-Frame-Options") == "DENY"
            assert "images up to 97.7 KB" in json.loads(response.read())["error"]
        finally:
            connection.close()


@pytest.mark.attack("x-frame", "frame the web page from another site (no X-Frame-Options; only CSP frame-ancestors)")
def test_no_page_can_be_framed(record_property):
    with running_web_server(_offline_app()) as base_url:
        for path in ("/", "/api/openapi.json", "/api/no-such-endpoint"):
            status, headers, _ = _get(base_url, path)
            assert status in (200, 404)
            assert headers["X-Frame-Options"] == "DENY", path
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"], path
    record_property("outcome", "X-Frame-Options: DENY and CSP frame-ancestors 'none' on the page, the API and a 404")


def test_the_request_log_is_plain_text(caplog):
    caplog.set_level(logging.INFO, logger="deepfake_edge.webapp.requests")
    with running_web_server(_offline_app()) as base_url:
        assert _get(base_url, "/api/openapi.json")[0] == 200
        assert _get(base_url, "/no-such-page")[0] == 404  # werkzeug's log coloured 4xx lines
        assert _get(base_url, "/%1b%5b31mred")[0] == 404  # an escape sequence sent in the path
        deadline = time.monotonic() + 5  # the line is written once the answer is out
        while not any("31mred" in record.getMessage() for record in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = [record.getMessage() for record in caplog.records if record.name == "deepfake_edge.webapp.requests"]
    assert not any("\x1b" in line for line in lines), lines
    assert any(re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /no-such-page HTTP/1\.1" 404 \d+', line)
               for line in lines), lines
    assert any(r'"GET /\x1b[31mred HTTP/1.1" 404' in line for line in lines), lines


def test_the_web_verb_logs_requests_in_plain_text():
    """``deepfake-edge web`` as a user runs it: its output (request log included) has no ANSI escape code."""
    command = [sys.executable, "-m", "deepfake_edge.cli", "web", "--triton-url", f"127.0.0.1:{free_port()}",
               "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output: list[bytes] = []
    reader = threading.Thread(target=lambda: output.extend(process.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not re.search(rb"http://127\.0\.0\.1:\d+", b"".join(output)) and time.monotonic() < deadline:
            assert process.poll() is None, b"".join(output)
            time.sleep(0.05)
        base_url = re.search(rb"http://127\.0\.0\.1:\d+", b"".join(output)).group(0).decode()
        assert _get(base_url, "/missing")[0] == 404
        assert _get(base_url, "/")[0] == 200
    finally:
        stop_process(process)
        reader.join(timeout=5)
    text = b"".join(output)
    assert b'"GET /missing HTTP/1.1" 404' in text and b'"GET / HTTP/1.1" 200' in text, text
    assert b"\x1b" not in text, text
    assert process.returncode == 0


def test_the_server_object_keeps_the_interface_serve_uses():
    """``serve`` and the tests drive it like a socketserver: port 0, serve_forever in a thread, shutdown, close."""
    server = make_web_server(_offline_app(), "127.0.0.1", 0, socket_timeout_s=5.0, request_timeout_s=5.0)
    port = server.server_port
    assert port > 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert _get(f"http://127.0.0.1:{port}", "/api/openapi.json")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
