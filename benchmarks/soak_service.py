"""The service under soak: ``deepfake-edge serve`` (real tritonserver + web app) as a child process.

Started exactly as a user starts it, on free 127.0.0.1 ports, so that every process of the product
(the serve process hosting the web app, tritonserver, one Python-backend stub per model instance) can
be watched from outside: RSS, liveness, process identity (a restarted stub is a crash), shared memory.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from deepfake_edge.server.admin_key import KEY_ENVIRONMENT_VARIABLE, generate_admin_key
from deepfake_edge.server.processes import ChildProcess
from deepfake_edge.server.triton import SHM_DIR, SHM_STEM, free_port


class ServiceError(RuntimeError):
    """The service did not start, or did not stop cleanly; the message carries its log tail."""


@dataclass
class ProcessInfo:
    """One watched process: a stable label, its pid and its start time (pid + start time = identity)."""

    label: str
    pid: int
    started: float

    @classmethod
    def of(cls, label: str, process: psutil.Process) -> "ProcessInfo":
        return cls(label, process.pid, process.create_time())

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return process.create_time() == self.started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def rss_mb(self) -> float | None:
        try:
            return psutil.Process(self.pid).memory_info().rss / 2**20 if self.alive() else None
        except psutil.NoSuchProcess:
            return None


@dataclass
class ServeProcess:
    """``deepfake-edge serve`` on ``repository`` with every port chosen free on 127.0.0.1."""

    repository: Path
    run_dir: Path
    startup_timeout_s: float = 180.0
    stop_timeout_s: float = 30.0
    ports: dict[str, int] = field(default_factory=dict)
    admin_key: str = field(default_factory=generate_admin_key, repr=False)
    _process: ChildProcess | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['web']}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "serve.log"

    @property
    def triton_log_path(self) -> Path:
        return self.run_dir / "tritonserver.log"

    def __enter__(self) -> "ServeProcess":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Launch serve and return once Triton and the web app answer ready (ServiceError otherwise)."""
        self.ports = {name: free_port() for name in ("http", "grpc", "metrics", "web")}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "deepfake_edge.cli", "serve", "--model-repository", str(self.repository),
            "--host", "127.0.0.1", "--http-port", str(self.ports["http"]), "--grpc-port", str(self.ports["grpc"]),
            "--metrics-port", str(self.ports["metrics"]), "--web-port", str(self.ports["web"]),
            "--startup-timeout", str(self.startup_timeout_s), "--log-file", str(self.triton_log_path),
        ]
        self.log_path.write_bytes(b"")
        # If the soak is killed hard, the kernel sends SIGTERM to serve, which stops Triton in turn.
        self._process = ChildProcess(
            command, log_path=self.log_path, stop_timeout_s=self.stop_timeout_s, name="serve",
            env={**os.environ, "PYTHONUNBUFFERED": "1", KEY_ENVIRONMENT_VARIABLE: self.admin_key},
        ).start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s + 30.0
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise ServiceError(f"serve exited before ready:\n{self.log_tail()}")
            if _status(f"{self.web_url}/api/health") == 200:
                return
            time.sleep(0.25)
        raise ServiceError(f"serve not ready after {self.startup_timeout_s + 30:.0f} s:\n{self.log_tail()}")

    def processes(self) -> list[ProcessInfo]:
        """serve (hosting the web app), tritonserver, its Python-backend stubs and nginx, right now."""
        if self._process is None:
            return []
        serve = psutil.Process(self._process.pid)
        found = [ProcessInfo.of("serve (web app)", serve)]
        for child in serve.children():
            if child.name() == "tritonserver":
                found.append(ProcessInfo.of("tritonserver", child))
                stubs = sorted(child.children(recursive=True), key=lambda p: _stub_model(p))
                found += [ProcessInfo.of(f"stub {_stub_model(stub)}", stub) for stub in stubs]
            elif child.name() == "nginx":  # the HTTP gateway: its master and worker
                found += [ProcessInfo.of(f"nginx {role}", process)
                          for role, process in (("master", child), *(("worker", w) for w in child.children()))]
        return found

    def listening(self) -> list[str]:
        """Every TCP address a service process listens on, as ``"label ip:port"``."""
        found = []
        for info in self.processes():
            try:
                connections = psutil.Process(info.pid).net_connections(kind="inet")
            except psutil.Error:
                continue
            found += [f"{info.label} {c.laddr.ip}:{c.laddr.port}" for c in connections
                      if c.status == psutil.CONN_LISTEN]
        return sorted(found)

    def stop(self) -> list[str]:
        """SIGTERM serve (it stops Triton), escalate to SIGKILL; returns what was left behind (empty when clean)."""
        process, self._process = self._process, None
        if process is None:
            return []
        watched = []
        try:
            watched = [psutil.Process(process.pid)] + psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
        pid = process.pid
        process.stop()  # SIGTERM serve (it stops Triton, in a session of its own), SIGKILL after stop_timeout_s
        _, alive = psutil.wait_procs(watched, timeout=5.0)
        leftovers = [f"pid {p.pid} ({p.name()}) still running" for p in alive]
        for p in alive:
            p.kill()
        regions = sorted(SHM_DIR.glob(f"{SHM_STEM}dfe{pid}_*"))
        leftovers += [f"shared memory {region} left behind" for region in regions]
        for region in regions:
            region.unlink(missing_ok=True)
        return leftovers

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path, self.triton_log_path):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text += f"--- {path} ---\n" + "\n".join(tail) + "\n"
        return text or "(no log)"


def _stub_model(process: psutil.Process) -> str:
    # A stub's first argument is its model file: <repository>/<model>/<version>/model.py.
    try:
        arguments = process.cmdline()
    except psutil.Error:
        return str(process.pid)
    if len(arguments) < 2:
        return str(process.pid)
    version_dir = Path(arguments[1]).parent
    return f"{version_dir.parent.name} v{version_dir.name}"


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            json.load(response)
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


class ProcessWatcher:
    """Samples RSS and liveness of the service's processes every ``interval_s`` in a background thread.

    A process that disappears, or a new process that appears (Triton restarting a crashed stub), is
    recorded as a crash event with the time it was seen.
    """

    def __init__(self, service: ServeProcess, interval_s: float = 1.0):
        self.service = service
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.known = {(p.pid, p.started): p for p in service.processes()}
        self.samples: list[dict] = []
        self.crash_events: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-watcher", daemon=True)

    def __enter__(self) -> "ProcessWatcher":
        # The time series covers the soak itself; readings taken before (ready, warm) are kept by the caller.
        self.started, self.samples = time.monotonic(), []
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> dict[str, float | None]:
        """One RSS reading (MB) per known process (None once it is gone); records crash events."""
        elapsed = round(time.monotonic() - self.started, 2)
        try:
            current = {(p.pid, p.started): p for p in self.service.processes()}
        except psutil.Error:
            current = {}
        for key, process in self.known.items():
            if key not in current and not process.alive() and not _already(self.crash_events, process):
                self.crash_events.append(f"{elapsed:.1f} s: {process.label} (pid {process.pid}) exited")
        for key, process in current.items():
            if key not in self.known:
                self.crash_events.append(f"{elapsed:.1f} s: new process {process.label} (pid {process.pid})")
                self.known[key] = process
        reading = {f"{p.label} [{p.pid}]": p.rss_mb() for p in self.known.values()}
        self.samples.append({"t_s": elapsed, "rss_mb": reading})
        return reading


def _already(events: list[str], process: ProcessInfo) -> bool:
    return any(f"(pid {process.pid}) exited" in event for event in events)
