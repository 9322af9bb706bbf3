"""What ``serve`` runs and restarts as one unit: tritonserver, and nginx on its public HTTP port.

With the gateway on, Triton's own HTTP endpoint listens on a private loopback port and nginx
(:mod:`deepfake_edge.server.http_gateway`) takes the public one; gRPC and metrics stay Triton's own.
Clients see the same addresses either way.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from deepfake_edge.server.http_gateway import DEFAULT_MAX_BODY_BYTES, HttpGateway
from deepfake_edge.server.triton import TritonServer, check_port_free, client_host, free_port, reserve_ports
from deepfake_edge.serving_contract import HTTP_PORT


class TritonService:
    """``TritonServer(repository, **options)``, behind an :class:`HttpGateway` when ``http_gateway`` is True.

    Offers what the supervisor and ``serve`` use of a :class:`TritonServer`: ``start``, ``stop``,
    ``is_running``, ``exit_code``, ``log_tail``, ``pid``, the public ``http_url``/``grpc_url``/``metrics_url``,
    ``log_file``, ``admin_key``, ``model_repository`` and ``repository_index``. Either process dying
    counts as the service dying.
    """

    def __init__(self, repository: str | Path, *, http_gateway: bool = True,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, **options: Any) -> None:
        self.public_http_port = int(options.get("http_port", HTTP_PORT))
        host = options.get("host", "127.0.0.1")
        reserve_ports(self.public_http_port, options.get("grpc_port"), options.get("metrics_port"))
        if http_gateway:  # Triton's own HTTP endpoint moves to a private loopback port
            options = {**options, "http_port": free_port("127.0.0.1"), "http_host": "127.0.0.1"}
        self.triton = TritonServer(repository, **options)
        self._host = host
        self._max_body_bytes = max_body_bytes
        self.gateway: HttpGateway | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._use_gateway = http_gateway

    def __getattr__(self, name: str) -> Any:
        # pid, grpc_url, metrics_url, log_file, admin_key, model_repository, repository_index, shm_prefix ...
        if name == "triton":  # not set yet (a half-built or copied object): no endless recursion
            raise AttributeError(name)
        return getattr(self.triton, name)

    @property
    def http_url(self) -> str:
        return f"{client_host(self._host)}:{self.public_http_port}" if self._use_gateway else self.triton.http_url

    def start(self) -> "TritonService":
        if self._use_gateway:
            check_port_free(self._host, self.public_http_port, "HTTP")
        self.triton.start()
        if self._use_gateway:
            self._workdir = tempfile.TemporaryDirectory(prefix="deepfake-edge-nginx-")
            self.gateway = HttpGateway(self._host, self.public_http_port, self.triton.http_url,
                                       Path(self._workdir.name), self._max_body_bytes)
            try:
                self.gateway.start()
            except BaseException:
                self.stop()
                raise
        return self

    def __enter__(self) -> "TritonService":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def is_running(self) -> bool:
        return self.triton.is_running() and (self.gateway is None or self.gateway.is_running())

    def exit_code(self) -> int | None:
        return self.triton.exit_code()

    def log_tail(self, lines: int = 40) -> str:
        tail = self.triton.log_tail(lines)
        if self.gateway is not None and not self.gateway.is_running():
            tail += f"\n--- nginx ---\n{self.gateway.log_tail(lines)}"
        return tail

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.triton.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

