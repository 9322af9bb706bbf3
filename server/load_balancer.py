"""HAProxy in front of several tritonservers: one HTTP and one gRPC address, health checks, failover.

``serve --replicas N`` (:mod:`deepfake_edge.server.replicas`) runs N embedded Triton processes on private
loopback ports and Debian's HAProxy (package ``haproxy``; ``make serve`` installs it) on the public ones:

* HTTP (KServe v2 REST): an HTTP/1.1 frontend, ``balance leastconn`` over the replicas' HTTP ports;
* gRPC: an h2 (cleartext, prior knowledge, as gRPC clients speak it) frontend, ``proto h2`` to the
  replicas' gRPC ports, balanced per call (each gRPC call is one HTTP/2 stream);
* health: an active check, ``GET /v2/health/ready`` on each replica's HTTP port every second (every
  250 ms once one failed); two failures mark the replica DOWN, two successes UP again. The gRPC server
  of a replica *tracks* its HTTP one, so one check decides for both protocols. A refused connection from
  live HTTP traffic marks a replica DOWN at once (``observe layer4``), without waiting for the check;
* retries: a connection that cannot be opened is retried (``retries 3``) on another replica
  (``option redispatch 1``). A request whose replica dies after it was sent is answered 502 (HTTP) or
  UNAVAILABLE (gRPC), never replayed here: the client retries it (client/analysis.py);
* the public metrics port serves HAProxy's own Prometheus exporter (replica states, retries,
  redispatches); each replica's Triton metrics stay on its own loopback port.

HAProxy passes every header through unchanged, so Triton's admin APIs still answer only requests that
carry the admin key (every replica gets the same one); HAProxy's own control (its stats socket) is a
Unix socket in a private 0700 folder, not a network port. The configuration is generated here, written to
that folder with HAProxy's log (``log stdout``: health changes, errors, retries), checked with
``haproxy -c`` and run as a child process that dies with its launcher (:class:`ChildProcess`).
"""

from __future__ import annotations

import csv
import grp
import io
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from deepfake_edge.server.processes import ChildProcess, file_tail
from deepfake_edge.server.triton import TritonServerError, client_host, accepts_connections, remove_stale_workdirs

WORKDIR_PREFIX = "deepfake-edge-haproxy-"
HTTP_BACKEND, GRPC_BACKEND = "triton_http", "triton_grpc"

# Answers HAProxy itself gives, in Triton's JSON error shape (the client reads "error"). 502/503 tell the
# client a replica could not be reached, which it retries; 504 is a timeout, which it does not.
_ERRORS = {
    502: "a Triton replica failed while answering (bad gateway); try again",
    503: "no Triton replica is answering (all restarting or overloaded); try again shortly",
    504: "the Triton replica did not answer in time (gateway timeout)",
}

_CONFIG = """\
global
    log stdout format raw local0 info
    maxconn 4096
    # One thread: proxying costs little next to inference, and the cores belong to the replicas.
    nbthread 1
    stats socket {workdir}/haproxy.sock mode 600 level user
    {user}

defaults
    mode http
    log global
    option httplog
    # Only errors, retries and redispatches are logged, plus every health change: readable under load.
    option dontlog-normal
    option dontlognull
    timeout connect 2s
    timeout client {client_timeout_s}s
    timeout http-request {client_timeout_s}s
    timeout http-keep-alive 60s
    timeout server {upstream_timeout_s}s
    timeout check 2s
    # A connection that cannot be opened is retried on another replica; an empty answer (the replica
    # closed without a byte) is replayed when the whole request is still in HAProxy's buffer. Both are
    # safe: an inference is a pure function of its input and changes nothing on the server.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    default-server inter {check_interval_ms}ms fastinter 250ms downinter {check_interval_ms}ms rise 2 fall 2
{errors}

frontend http_in
    bind {http_bind}
    default_backend {http_backend}

frontend grpc_in
    bind {grpc_bind} proto h2
    # gRPC channels stay open between calls, as they do on Triton's own port.
    timeout client 1h
    default_backend {grpc_backend}
{metrics}
backend {http_backend}
    balance leastconn
    option httpchk
    http-check send meth GET uri /v2/health/ready
    http-check expect status 200
{http_servers}

backend {grpc_backend}
    balance leastconn
{grpc_servers}
"""

_METRICS = """
frontend metrics_in
    bind {metrics_bind}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    http-request return status 404 content-type text/plain string "only /metrics here"
"""


class LoadBalancerError(TritonServerError):
    """HAProxy is missing, its configuration is refused, or it did not start; the message says which and how
    to fix it (a failed start of the service, like Triton's own)."""


@dataclass(frozen=True)
class Replica:
    """One backend: its name in HAProxy (``r0``, ``r1`` ...) and its Triton ``host:port`` addresses."""

    name: str
    http: str
    grpc: str


def haproxy_binary() -> Path | None:
    """Debian's haproxy (``apt-get install haproxy``; ``make serve`` and ``make test`` install it), also
    when /usr/sbin is not on PATH."""
    found = shutil.which("haproxy", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    return Path(found) if found else None


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(replicas: Sequence[Replica], workdir: Path, *, host: str, http_port: int, grpc_port: int,
                  metrics_port: int | None = None, http_host: str | None = None, client_timeout_s: float = 30.0,
                  upstream_timeout_s: float = 300.0, check_interval_s: float = 1.0, user: str = "") -> str:
    """The haproxy.cfg for ``replicas`` behind ``http_host:http_port`` (default ``host``) and
    ``host:grpc_port`` (and HAProxy's metrics on ``host:metrics_port`` if given)."""
    if not replicas:
        raise ValueError("a load balancer needs at least one replica")
    errors = "\n".join(f"    http-error status {code} content-type application/json "
                       f"string '{{\"error\":\"{text}\"}}'" for code, text in _ERRORS.items())
    http_servers = "\n".join(
        # A refused connection from live traffic marks the replica DOWN at once; the check brings it back.
        f"    server {r.name} {r.http} check observe layer4 error-limit 1 on-error mark-down" for r in replicas)
    grpc_servers = "\n".join(f"    server {r.name} {r.grpc} proto h2 track {HTTP_BACKEND}/{r.name}" for r in replicas)
    metrics = _METRICS.format(metrics_bind=_bind(host, metrics_port)) if metrics_port is not None else ""
    return _CONFIG.format(
        workdir=workdir, user=user, client_timeout_s=int(client_timeout_s),
        upstream_timeout_s=int(upstream_timeout_s), check_interval_ms=int(check_interval_s * 1000), errors=errors,
        http_bind=_bind(http_host or host, http_port), grpc_bind=_bind(host, grpc_port), metrics=metrics,
        http_backend=HTTP_BACKEND, grpc_backend=GRPC_BACKEND, http_servers=http_servers, grpc_servers=grpc_servers)


class LoadBalancer:
    """HAProxy on ``host:http_port`` (HTTP) and ``host:grpc_port`` (gRPC) in front of ``replicas``.

    ``http_host`` binds the HTTP frontend elsewhere (nginx in front keeps it on loopback).

    ``start()`` checks the generated configuration, launches HAProxy and returns once both ports accept
    connections (:class:`LoadBalancerError` with HAProxy's log tail otherwise); ``stop()`` ends it and
    removes its private folder (configuration, stats socket, log). :meth:`server_states` reads HAProxy's
    view of each replica (``UP``, ``DOWN`` ...) from its stats socket.
    """

    def __init__(self, replicas: Sequence[Replica], *, host: str = "127.0.0.1", http_port: int, grpc_port: int,
                 metrics_port: int | None = None, http_host: str | None = None, client_timeout_s: float = 30.0,
                 upstream_timeout_s: float = 300.0, check_interval_s: float = 1.0) -> None:
        self.replicas = list(replicas)
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.http_host = http_host or host
        self.client_timeout_s, self.upstream_timeout_s = client_timeout_s, upstream_timeout_s
        self.check_interval_s = check_interval_s
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: ChildProcess | None = None
        self.log = ""  # the log's last lines, kept by stop() (the log file goes with the folder)

    @property
    def workdir(self) -> Path | None:
        return Path(self._workdir.name) if self._workdir is not None else None

    @property
    def config_path(self) -> Path | None:
        return self.workdir / "haproxy.cfg" if self.workdir is not None else None

    @property
    def log_file(self) -> Path | None:
        return self.workdir / "haproxy.log" if self.workdir is not None else None

    @property
    def stats_socket(self) -> Path | None:
        return self.workdir / "haproxy.sock" if self.workdir is not None else None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.is_running()

    def start(self, timeout_s: float = 15.0) -> "LoadBalancer":
        binary = haproxy_binary()
        if binary is None:
            raise LoadBalancerError("haproxy is not installed: 'apt-get install haproxy' (make serve does it), "
                                    "or run serve without --replicas")
        remove_stale_workdirs(WORKDIR_PREFIX)
        # 0700 (mkdtemp's mode): the stats socket and the log are this user's alone.
        self._workdir = tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")
        workdir = Path(self._workdir.name)
        assert self.config_path is not None and self.log_file is not None
        self.config_path.write_text(render_config(
            self.replicas, workdir, host=self.host, http_port=self.http_port, grpc_port=self.grpc_port,
            metrics_port=self.metrics_port, http_host=self.http_host, client_timeout_s=self.client_timeout_s,
            upstream_timeout_s=self.upstream_timeout_s, check_interval_s=self.check_interval_s,
            user=_unprivileged_user()))
        check = subprocess.run([str(binary), "-c", "-q", "-f", str(self.config_path)], capture_output=True,
                               text=True, timeout=30)
        if check.returncode != 0:
            message = (check.stdout + check.stderr).strip()
            self.stop()
            raise LoadBalancerError(f"haproxy refused its generated configuration:\n{message}")
        # -W: a master process that keeps this user's identity and a worker that drops to nobody (as root).
        # The kernel's parent-death signal, which ChildProcess sets, does not survive a change of user: the
        # master receives it and ends the worker, which also leaves by itself when its master is gone.
        # -db: in the foreground; the log goes to stdout, i.e. the log file.
        self._process = ChildProcess([str(binary), "-W", "-db", "-f", str(self.config_path)], log_path=self.log_file,
                                     cwd=workdir, stop_timeout_s=5.0, name="haproxy").start()
        deadline = time.monotonic() + timeout_s
        listening = ((client_host(self.http_host), self.http_port), (client_host(self.host), self.grpc_port))
        while not all(accepts_connections(host, port, timeout_s=0.5) for host, port in listening):
            if not self.is_running() or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise LoadBalancerError(f"haproxy did not start on {self.http_host}:{self.http_port} and "
                                        f"{self.host}:{self.grpc_port}:\n{tail}")
            time.sleep(0.02)
        return self

    def __enter__(self) -> "LoadBalancer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def server_stats(self, backend: str = HTTP_BACKEND) -> dict[str, dict[str, str]]:
        """HAProxy's statistics row (``show stat``: ``status``, ``stot`` sessions, ``wredis`` redispatches ...)
        of each replica in ``backend``, by name."""
        rows = csv.DictReader(io.StringIO(self.stats_command("show stat").lstrip("# ")))
        return {row["svname"]: row for row in rows
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}

    def server_states(self, backend: str = HTTP_BACKEND) -> dict[str, str]:
        """HAProxy's state of each replica in ``backend``: ``{"r0": "UP", "r1": "DOWN", ...}`` (``UP 1/2``
        while rising, ``DOWN 1/2`` while falling, ``no check`` before the first check)."""
        return {name: row["status"] for name, row in self.server_stats(backend).items()}

    def stats_command(self, command: str, timeout_s: float = 5.0) -> str:
        """The answer of HAProxy's stats socket to ``command`` (e.g. ``show stat``, ``show info``)."""
        if self.stats_socket is None:
            raise LoadBalancerError("haproxy is not running")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(self.stats_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def wait_for_states(self, wanted: dict[str, str], timeout_s: float) -> dict[str, str]:
        """Poll :meth:`server_states` until each named replica is in its wanted state (``UP``/``DOWN``);
        the states reached, or ``LoadBalancerError`` naming them after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.server_states()
            if all(states.get(name) == state for name, state in wanted.items()):
                return states
            if time.monotonic() > deadline:
                raise LoadBalancerError(f"replicas not {wanted} after {timeout_s:g} s: {states}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        if self._process is not None:
            return self._process.log_tail(lines)
        return "\n".join(self.log.splitlines()[-lines:]) if self.log else "(no log)"

    def stop(self) -> None:
        """SIGTERM HAProxy (it stops at once), SIGKILL after 5 s; keep its log tail, remove its folder.
        Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            process.stop()
            self.log = file_tail(self.log_file, 200)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def _unprivileged_user() -> str:
    """Started as root, HAProxy drops to ``nobody`` once its ports and socket are open; otherwise it runs as
    this user and needs nothing."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user nobody\n    group {grp.getgrgid(nobody.pw_gid).gr_name}"
