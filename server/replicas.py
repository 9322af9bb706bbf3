"""``serve --replicas N``: N tritonservers behind HAProxy, restarted one by one when they die.

Each replica is a :class:`TritonServer` on private 127.0.0.1 ports (HTTP, gRPC, metrics; the same admin key
for all). :class:`~deepfake_edge.server.load_balancer.LoadBalancer` (HAProxy) takes the public gRPC port, the
public metrics port (its own Prometheus exporter) and the HTTP port; with the HTTP gateway on, nginx keeps
the public HTTP port as in the one-server setup (request bodies bounded, slow clients cut:
:mod:`deepfake_edge.server.http_gateway`) and HAProxy's HTTP frontend moves to a private loopback port
behind it. Clients see the same addresses as with one server.

When a replica dies, HAProxy stops routing to it within about a second (its health check, or at once on a
refused connection) and :meth:`ReplicaSet.check` restarts it on the same ports after the supervisor's
back-off (:class:`~deepfake_edge.server.supervisor.RestartPolicy`, counted per replica); HAProxy routes to
it again once two health checks pass. ``serve`` runs :meth:`ReplicaSet.watch` on its main thread, so that
restarted servers, like the first ones, die with it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from deepfake_edge.server.admin_key import generate_admin_key
from deepfake_edge.server.http_gateway import DEFAULT_MAX_BODY_BYTES, HttpGateway
from deepfake_edge.server.load_balancer import LoadBalancer, Replica
from deepfake_edge.server.supervisor import RestartBudgetExhausted, RestartPolicy
from deepfake_edge.server.triton import (
    TritonServer,
    TritonServerError,
    client_host,
    check_port_free,
    free_port,
    remove_stale_workdirs,
    reserve_ports,
)
from deepfake_edge.serving_contract import GRPC_PORT, HTTP_PORT, METRICS_PORT

log = logging.getLogger(__name__)
GATEWAY_PREFIX = "deepfake-edge-replicas-nginx-"


@dataclass
class _Slot:
    """One replica: its fixed private ports, the server running there (None while it restarts), and its
    restart history."""

    name: str
    http_port: int
    grpc_port: int
    metrics_port: int
    log_file: Path | None
    server: TritonServer | None = None
    restarts: deque[float] = field(default_factory=deque)
    retry_at: float | None = None  # monotonic time of the next start attempt, while server is None

    @property
    def replica(self) -> Replica:
        return Replica(self.name, f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}")


class ReplicaSet:
    """``replicas`` tritonservers on ``repository`` behind HAProxy on ``host:http_port`` / ``host:grpc_port``.

    ``start()`` starts the replicas one after the other (from the calling thread: started from the main
    thread, they die with this process), then HAProxy (and nginx with ``http_gateway``), and returns once
    HAProxy sees every replica UP. ``stop()`` ends all of it. ``check()`` restarts dead replicas when their
    back-off has passed; ``watch()`` calls it until ``stop()``. Offers what ``serve`` uses of a server:
    ``http_url``, ``grpc_url``, ``metrics_url``, ``admin_key``, ``model_repository``, ``repository_index``,
    ``outage``.
    """

    def __init__(self, repository: str | os.PathLike[str], replicas: int, *, host: str = "127.0.0.1",
                 http_port: int = HTTP_PORT, grpc_port: int = GRPC_PORT, metrics_port: int = METRICS_PORT,
                 http_gateway: bool = True, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 startup_timeout_s: float = 120.0, log_file: str | os.PathLike[str] | None = None,
                 extra_args: Sequence[str] = (), admin_key: str | None = None,
                 policy: RestartPolicy = RestartPolicy(), check_interval_s: float = 1.0,
                 poll_interval_s: float = 0.2) -> None:
        if replicas < 1:
            raise ValueError("a replica set needs at least one replica")
        self.model_repository = Path(repository).resolve()
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.http_gateway, self.max_body_bytes = http_gateway, max_body_bytes
        self.startup_timeout_s, self.extra_args = startup_timeout_s, tuple(extra_args)
        self.admin_key = admin_key or generate_admin_key()
        self.policy, self.check_interval_s, self.poll_interval_s = policy, check_interval_s, poll_interval_s
        base = Path(log_file) if log_file is not None else None
        reserve_ports(http_port, grpc_port, metrics_port)
        self.slots = [_Slot(f"r{i}", free_port(), free_port(), free_port(),
                            base.with_name(f"{base.stem}.r{i}{base.suffix}") if base is not None else None)
                      for i in range(replicas)]
        self.balancer: LoadBalancer | None = None
        self.gateway: HttpGateway | None = None
        self._gateway_dir: tempfile.TemporaryDirectory[str] | None = None
        self._stopping = threading.Event()

    # -- addresses -------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        return f"{client_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{client_host(self.host)}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """HAProxy's Prometheus exporter (replica states, retries, redispatches)."""
        return f"http://{client_host(self.host)}:{self.metrics_port}/metrics"

    @property
    def servers(self) -> list[TritonServer]:
        """The replicas running now (a dead one is missing until it is restarted)."""
        return [slot.server for slot in self.slots if slot.server is not None]

    @property
    def outage(self) -> str | None:
        """None while at least one replica runs, else a sentence for people."""
        if any(server.is_running() for server in self.servers):
            return None
        return "every detection server stopped and they are restarting"

    def repository_index(self) -> list[dict[str, str]]:
        return next(server for server in self.servers if server.is_running()).repository_index()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> "ReplicaSet":
        check_port_free(self.host, self.http_port, "HTTP")
        check_port_free(self.host, self.grpc_port, "gRPC")
        check_port_free(self.host, self.metrics_port, "metrics")
        try:
            for slot in self.slots:
                slot.server = self._make_server(slot).start()
            balancer_http = free_port("127.0.0.1") if self.http_gateway else self.http_port
            # HAProxy's gRPC and metrics frontends are public; its HTTP one hides behind nginx if there is one.
            self.balancer = LoadBalancer(
                [slot.replica for slot in self.slots], host=self.host, http_port=balancer_http,
                http_host="127.0.0.1" if self.http_gateway else self.host, grpc_port=self.grpc_port,
                metrics_port=self.metrics_port, check_interval_s=self.check_interval_s).start()
            if self.http_gateway:
                # Named after this process, so that a later start removes it if this one is killed outright.
                remove_stale_workdirs(GATEWAY_PREFIX)
                self._gateway_dir = tempfile.TemporaryDirectory(prefix=f"{GATEWAY_PREFIX}{os.getpid()}-")
                self.gateway = HttpGateway(self.host, self.http_port, f"127.0.0.1:{balancer_http}",
                                           Path(self._gateway_dir.name), self.max_body_bytes).start()
            self.balancer.wait_for_states({slot.name: "UP" for slot in self.slots},
                                          timeout_s=10 * self.check_interval_s + 5)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_server(self, slot: _Slot) -> TritonServer:
        return TritonServer(self.model_repository, host="127.0.0.1", http_port=slot.http_port,
                            grpc_port=slot.grpc_port, metrics_port=slot.metrics_port,
                            startup_timeout_s=self.startup_timeout_s, log_file=slot.log_file,
                            extra_args=self.extra_args, admin_key=self.admin_key)

    def __enter__(self) -> "ReplicaSet":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def is_running(self) -> bool:
        front = [self.balancer, self.gateway] if self.gateway is not None else [self.balancer]
        return all(p is not None and p.is_running() for p in front) and self.outage is None

    def stop(self) -> None:
        """Stop nginx, HAProxy and every replica; remove their folders and shared memory. Safe twice."""
        self._stopping.set()
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self._gateway_dir is not None:
            self._gateway_dir.cleanup()
            self._gateway_dir = None
        if self.balancer is not None:
            self.balancer.stop()
        for slot in self.slots:
            server, slot.server = slot.server, None
            if server is not None:
                server.stop()

    # -- restarts --------------------------------------------------------------------------------------
    def watch(self) -> None:
        """Restart dead replicas until ``stop()``; raise when HAProxy or nginx died, or a replica kept dying
        (:class:`RestartBudgetExhausted`)."""
        while not self._stopping.is_set():
            self.check()
            self._stopping.wait(self.poll_interval_s)

    def check(self) -> None:
        """One round: note replicas that died (stopping what is left of them), start those whose back-off
        has passed. Blocks while a replica starts; HAProxy sends traffic to the others meanwhile."""
        for name, process in (("haproxy", self.balancer), ("nginx", self.gateway)):
            if process is not None and not process.is_running() and not self._stopping.is_set():
                raise TritonServerError(f"{name} in front of the replicas exited:\n{process.log_tail()}")
        for slot in self.slots:
            if self._stopping.is_set():
                return
            if slot.server is not None and not slot.server.is_running():
                self._bury(slot)
            if slot.server is None and slot.retry_at is not None and time.monotonic() >= slot.retry_at:
                try:
                    slot.server = self._make_server(slot).start()
                except TritonServerError as error:
                    log.error("replica %s did not restart: %s", slot.name, str(error).splitlines()[0])
                    self._schedule(slot, "its restart failed")
                    continue
                slot.retry_at = None
                log.warning("replica %s restarted (pid %s); HAProxy routes to it once its health check passes",
                            slot.name, slot.server.pid)

    def _bury(self, slot: _Slot) -> None:
        server = slot.server
        assert server is not None
        pid, code, tail = server.pid, server.exit_code(), " | ".join(server.log_tail(3).strip().splitlines())
        server.stop()  # its stubs, shared memory and /tmp folder
        slot.server = None
        log.warning("replica %s (pid %s) exited with code %s; HAProxy routes around it", slot.name, pid, code)
        self._schedule(slot, f"last exit code {code}; log tail: {tail}")

    def _schedule(self, slot: _Slot, reason: str) -> None:
        """Count one more restart of ``slot`` and set when it happens; raise when over the policy's budget."""
        now = time.monotonic()
        while slot.restarts and now - slot.restarts[0] > self.policy.window_s:
            slot.restarts.popleft()
        if len(slot.restarts) >= self.policy.max_restarts:
            raise RestartBudgetExhausted(
                f"replica {slot.name} needed more than {self.policy.max_restarts} restarts within "
                f"{self.policy.window_s:.0f} s; not restarting it again ({reason})")
        slot.restarts.append(now)
        delay = self.policy.backoff_s(len(slot.restarts))
        slot.retry_at = now + delay
        log.warning("restarting replica %s in %.0f s (restart %d; at most %d within %.0f s)", slot.name, delay,
                    len(slot.restarts), self.policy.max_restarts, self.policy.window_s)

    def describe(self) -> list[dict[str, Any]]:
        """Per replica: name, pid (None while restarting), private HTTP/gRPC addresses, Triton metrics, log."""
        return [{"name": slot.name, "pid": slot.server.pid if slot.server else None,
                 "http": slot.replica.http, "grpc": slot.replica.grpc,
                 "metrics": f"http://127.0.0.1:{slot.metrics_port}/metrics",
                 "log": slot.server.log_file if slot.server else slot.log_file} for slot in self.slots]
