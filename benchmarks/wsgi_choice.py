"""Which WSGI server for the web page: throughput and slow-client behaviour of the candidates.

    python -m deepfake_edge.benchmarks.wsgi_choice                 # every server, ~5 min on 2 cores
    python -m deepfake_edge.benchmarks.wsgi_choice --servers ours waitress --duration 5

Each server runs in its own process(es) on a free 127.0.0.1 port, serving a stand-in Flask app (no Triton):
``GET /ping`` answers a small JSON; ``POST /upload`` reads the uploaded file (multipart, kept in memory as
the real app does) and opens it with Pillow. Then, per server:

- throughput: ``--concurrency`` client threads, one new connection per request (werkzeug closes every
  connection anyway), for ``--duration`` s each on ``/ping`` and on a ~200 KB JPEG upload;
- slow clients: ``--slow-clients`` connections send their headers (``Content-Length: 100000``) then one
  body byte per second for ``--slow-window`` s, while a probe GETs ``/ping`` every 0.5 s (5 s timeout).
  Every server is told to give up on a client after ``--cut-after`` s (its closest setting: werkzeug's
  socket timeout, gunicorn's worker ``--timeout``, waitress's ``channel_timeout``, our request deadline).

The load generator shares the machine's cores with the server, as a reverse proxy would. gunicorn is no
dependency of the project: its rows need ``pip install gunicorn`` and are skipped without it.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

SERVERS = ("werkzeug", "waitress", "gunicorn-sync", "gunicorn-gthread", "ours")
_SLOW_BODY_BYTES = 100_000


def create_app():
    """The stand-in app: the real app's request class, one cheap route and one upload route."""
    from flask import Flask, jsonify, request
    from PIL import Image

    from deepfake_edge.webapp.app import InMemoryRequest

    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = 10 * 1024 * 1024 + 64 * 1024

    @app.get("/ping")
    def ping():
        return jsonify(status="ok")

    @app.post("/upload")
    def upload():
        data = request.files["file"].read()
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        return jsonify(bytes=len(data), width=width, height=height)

    return app


# For gunicorn, which imports the app by name (``deepfake_edge.benchmarks.wsgi_choice:app``).
app = create_app() if os.environ.get("WSGI_CHOICE_APP") == "1" else None


def serve(kind: str, port: int, cut_after_s: float, threads: int) -> None:
    """Run ``kind`` (werkzeug, waitress, ours) in this process until SIGTERM."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    application = create_app()
    if kind == "werkzeug":
        from werkzeug.serving import WSGIRequestHandler, make_server

        handler = type("Handler", (WSGIRequestHandler,), {"timeout": cut_after_s})
        server = make_server("127.0.0.1", port, application, threaded=True, request_handler=handler)
    elif kind == "waitress":
        from waitress.server import create_server

        server = create_server(application, host="127.0.0.1", port=port, threads=threads,
                               channel_timeout=cut_after_s, cleanup_interval=1)
        server.serve_forever = server.run
    else:
        from deepfake_edge.webapp.app import make_web_server

        server = make_web_server(application, "127.0.0.1", port, request_timeout_s=cut_after_s, threads=threads)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def start(kind: str, port: int, cut_after_s: float, threads: int) -> subprocess.Popen:
    if kind.startswith("gunicorn"):
        worker = ["-w", str(os.cpu_count() * 2), "-k", "sync"] if kind == "gunicorn-sync" else [
            "-w", str(os.cpu_count()), "-k", "gthread", "--threads", str(threads // (os.cpu_count() or 1))]
        command = [sys.executable, "-m", "gunicorn", *worker, "--timeout", str(int(cut_after_s)),
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                   "deepfake_edge.benchmarks.wsgi_choice:app"]
        env = {**os.environ, "WSGI_CHOICE_APP": "1"}
    else:
        command = [sys.executable, "-m", "deepfake_edge.benchmarks.wsgi_choice", "--serve", kind,
                   "--port", str(port), "--cut-after", str(cut_after_s), "--threads", str(threads)]
        env = os.environ
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _get(port, "/ping", 2.0) == 200:
                return process
        except OSError:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"{kind} did not start")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _get(port: int, path: str, timeout_s: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _post(port: int, body: bytes, content_type: str, timeout_s: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("POST", "/upload", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def sample_jpeg(target_bytes: int = 200_000) -> bytes:
    """A JPEG of about ``target_bytes``: a gradient with noise (noise keeps it from compressing away)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    side = 480
    while True:
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8) // 4 + np.uint8(96)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
        if buffer.tell() >= target_bytes:
            return buffer.getvalue()
        side += 32


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def throughput(port: int, send, concurrency: int, duration_s: float) -> dict:
    """Requests per second and latency percentiles of ``send()`` from ``concurrency`` threads."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + duration_s

    def worker():
        while time.monotonic() < stop_at:
            started = time.monotonic()
            try:
                ok = send() == 200
            except OSError:
                ok = False
            with lock:
                if ok:
                    latencies.append(time.monotonic() - started)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    ordered = sorted(latencies) or [float("nan")]
    return {"requests_per_s": round(len(latencies) / elapsed, 1), "errors": errors[0],
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 1),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 1)}


def slow_clients(port: int, clients: int, window_s: float) -> dict:
    """Open ``clients`` connections dribbling a body at 1 byte/s; probe ``/ping`` meanwhile."""
    # A multipart upload, so that the app reads the body (it would refuse any other content type at once).
    head = (f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=slow\r\n"
            f"Content-Length: {_SLOW_BODY_BYTES}\r\n\r\n--slow\r\n").encode()
    sockets: dict[socket.socket, float] = {}
    opened = 0
    for _ in range(clients):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(head)
            sock.setblocking(False)
            sockets[sock] = time.monotonic()
            opened += 1
        except OSError:
            pass
    cut_after: list[float] = []
    probes: list[float] = []
    probe_failures = [0]
    began = time.monotonic()
    done = threading.Event()

    def probe():
        while not done.is_set():
            started = time.monotonic()
            try:
                if _get(port, "/ping", 5.0) == 200:
                    probes.append(time.monotonic() - started)
                else:
                    probe_failures[0] += 1
            except OSError:
                probe_failures[0] += 1
            done.wait(max(0.0, 0.5 - (time.monotonic() - started)))

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        while time.monotonic() - began < window_s:
            for sock, since in list(sockets.items()):
                try:
                    closed = sock.recv(4096) is not None  # any answer (a 408, an EOF) ends it
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if not closed:
                    try:
                        sock.send(b"x")
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed = True
                if closed:
                    cut_after.append(time.monotonic() - since)
                    sock.close()
                    del sockets[sock]
            time.sleep(1.0)
    finally:
        done.set()
        prober.join()
        for sock in sockets:
            sock.close()
    ordered = sorted(probes) or [float("nan")]
    return {"opened": opened, "cut": len(cut_after), "still_open": len(sockets),
            "cut_after_s_median": round(statistics.median(cut_after), 1) if cut_after else None,
            "probe_ok": len(probes), "probe_failed": probe_failures[0],
            "probe_p50_ms": round(1000 * ordered[len(ordered) // 2], 1), "probe_max_ms": round(1000 * ordered[-1], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per throughput run (default 8)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8, help="worker threads per server (default 8)")
    parser.add_argument("--slow-clients", type=int, default=60)
    parser.add_argument("--slow-window", type=float, default=30.0)
    parser.add_argument("--cut-after", type=float, default=10.0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--serve", choices=("werkzeug", "waitress", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.cut_after, args.threads)
        return 0

    from deepfake_edge.server.triton import free_port

    body, content_type = multipart(sample_jpeg())
    results = {}
    for kind in args.servers:
        if kind.startswith("gunicorn") and importlib.util.find_spec("gunicorn") is None:
            print(f"{kind}: skipped, gunicorn is not installed (it is no dependency of the project: "
                  f"'.venv/bin/python -m pip install gunicorn' to compare)", file=sys.stderr)
            continue
        port = free_port()
        process = start(kind, port, args.cut_after, args.threads)
        try:
            results[kind] = {
                "ping": throughput(port, lambda: _get(port, "/ping", 30.0), args.concurrency, args.duration),
                "upload": throughput(port, lambda: _post(port, body, content_type, 30.0), args.concurrency,
                                     args.duration),
                "slow": slow_clients(port, args.slow_clients, args.slow_window),
            }
        finally:
            stop(process)
        print(f"{kind}: {json.dumps(results[kind])}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"upload_bytes": len(body), **results}, indent=2))
        return 0
    print(f"upload: {len(body) / 1000:.0f} KB multipart; {args.concurrency} clients; "
          f"{args.slow_clients} slow clients for {args.slow_window:g} s, servers cut after {args.cut_after:g} s\n")
    print("| server | /ping req/s (p99 ms) | upload req/s (p99 ms) | slow clients cut (median s) "
          "| probe ok/failed (max ms) |")
    print("|---|---|---|---|---|")
    for kind, r in results.items():
        s = r["slow"]
        print(f"| {kind} | {r['ping']['requests_per_s']} ({r['ping']['p99_ms']}) "
              f"| {r['upload']['requests_per_s']} ({r['upload']['p99_ms']}) "
              f"| {s['cut']}/{s['opened']} ({s['cut_after_s_median']}) "
              f"| {s['probe_ok']}/{s['probe_failed']} ({s['probe_max_ms']}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
