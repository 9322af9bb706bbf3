"""Launch the real ``tritonserver`` binary shipped in the ``nvidia-pytriton`` wheel on a model repository.

The wheel holds a Triton Inference Server 2.51 build with only the Python backend. Running it directly
(rather than through PyTriton's Python API) needs three things, all assembled here:

* a backend directory ``python/`` holding ``libtriton_python.so``, ``triton_python_backend_utils.py`` and
  the ``triton_python_backend_stub`` built for the running Python (symlinks in a private work dir);
* ``LD_LIBRARY_PATH`` with the running Python's ``LIBDIR`` (the stub links ``libpython3.X.so``) and
  ``site-packages/nvidia_pytriton.libs`` (the stub links a hashed ``libcudart``);
* ``PATH`` starting with the interpreter's ``bin`` so the stub imports this environment's numpy.

The server runs in its own process group (the Python stubs are its children) so that ``stop()`` can end
all of it, and it uses a private shared-memory prefix so that ``stop()`` removes exactly its regions.
Its admin APIs (shared memory, model repository, logging, trace, statistics) answer only requests that
carry its admin key (see :mod:`deepfake_edge.server.admin_key`).
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import re
import secrets
import shutil
import socket
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from deepfake_edge.server.admin_key import admin_headers, generate_admin_key, restricted_api_flags
from deepfake_edge.server.processes import ChildProcess, file_tail
from deepfake_edge.serving_contract import GRPC_PORT, HTTP_PORT, METRICS_PORT

SHM_DIR = Path("/dev/shm")
# The Python backend names its regions "<prefix><uuid>"; keeping Triton's default stem makes them recognisable.
SHM_STEM = "triton_python_backend_shm_region_"
# The Python backend unpacks execution environments under a fixed name in /tmp and removes the folder only
# when it unloads cleanly: a killed server leaves it behind.
PYTHON_ENV_GLOB = "/tmp/python_env_*"


class TritonServerError(RuntimeError):
    """Base class for every launcher failure."""


class TritonNotFoundError(TritonServerError):
    """The nvidia-pytriton wheel (or its stub for this Python) is not installed."""


class PortInUseError(TritonServerError):
    """A requested port is already bound by another process."""


class TritonStartupError(TritonServerError):
    """The server exited or did not become ready in time; the message ends with its log tail."""


@dataclass(frozen=True)
class TritonInstallation:
    """Paths inside the nvidia-pytriton wheel that the launcher needs."""

    binary: Path
    python_backend: Path
    stub: Path
    libs: Path

    @classmethod
    def locate(cls) -> "TritonInstallation":
        """Find the wheel's ``tritonserver``; raise ``TritonNotFoundError`` with the fix if anything is missing."""
        try:
            import pytriton  # noqa: PLC0415 - only its location is needed
        except ImportError as error:
            raise TritonNotFoundError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0") from error
        root = Path(pytriton.__file__).resolve().parent
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        install = cls(
            binary=root / "tritonserver" / "bin" / "tritonserver",
            python_backend=root / "tritonserver" / "backends" / "python",
            stub=root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub",
            libs=root.parent / "nvidia_pytriton.libs",
        )
        for path in (install.binary, install.python_backend / "libtriton_python.so", install.stub, install.libs):
            if not path.exists():
                raise TritonNotFoundError(f"{path} is missing: the nvidia-pytriton wheel lacks it for Python {version}")
        return install

    def environment(self) -> dict[str, str]:
        """This process's environment plus the stub's library path, this interpreter's ``bin`` first on PATH,
        and glibc capped at two malloc arenas."""
        env = dict(os.environ)
        python_libdir = sysconfig.get_config_var("LIBDIR") or ""
        libraries = [p for p in (python_libdir, str(self.libs), env.get("LD_LIBRARY_PATH", "")) if p]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libraries)
        # sys.prefix is the venv; sys.executable may be a symlink into the base interpreter.
        env["PATH"] = os.pathsep.join([str(Path(sys.prefix) / "bin"), env.get("PATH", "")])
        # tritonserver runs ~240 threads; glibc gives busy ones arenas of their own (up to 8 per core) and
        # keeps their freed pages. Two arenas took ~15 MB off its RSS under a 10,000-request soak (per-tenth
        # medians 95-115 MB -> 80-100 MB; RELIABILITY.md). An explicit MALLOC_ARENA_MAX wins.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        return env

    def make_backend_directory(self, parent: Path) -> Path:
        """Create ``parent/backends/python`` with the backend files and the matching stub.

        Returns ``parent/backends``.
        """
        backend_dir = parent / "backends" / "python"
        backend_dir.mkdir(parents=True, exist_ok=True)
        for source in (self.python_backend / "libtriton_python.so",
                       self.python_backend / "triton_python_backend_utils.py", self.stub):
            (backend_dir / source.name).symlink_to(source)
        return backend_dir.parent


_handed_out_ports: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it) and that this process has not been
    given before: the OS may offer a port again as soon as the probe closes it, and a server given the
    same port for HTTP and metrics refuses to start."""
    with _handed_out_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise OSError(f"no free TCP port on {host} that this process has not already been given")


def reserve_ports(*ports: int | None) -> None:
    """Never give ``ports`` from :func:`free_port` in this process: they are promised to something that has
    not bound them yet (a server's public ports while it starts, the web page's). Without this, a private
    port picked by ``serve`` could be the gRPC port its caller had just picked, and Triton refuses to
    start with HTTP and gRPC on one port."""
    with _handed_out_lock:
        _handed_out_ports.update(int(port) for port in ports if port)


def check_port_free(host: str, port: int, purpose: str) -> None:
    """Raise ``PortInUseError`` naming ``port`` if it cannot be bound on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Triton binds with SO_REUSEADDR too, so a port in TIME_WAIT is not reported as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise PortInUseError(
                f"{purpose} port {port} on {host} is already in use ({error.strerror}); "
                f"stop whatever listens there or choose another port"
            ) from error


WORKDIR_PREFIX = "deepfake-edge-triton-"


def remove_stale_workdirs(prefix: str = WORKDIR_PREFIX) -> list[str]:
    """Remove the work dirs (backend links, default log) of launchers that died without stopping their
    server, e.g. killed outright: the kernel ends the server then, but nobody is left to remove the folder.
    A work dir is named ``<prefix><launcher pid>-<random>`` (``prefix``: Triton's by default, HAProxy's
    for the load balancer); returns the ones removed."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*-*"):
        match = re.match(rf"{re.escape(prefix)}(\d+)-", folder.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return sorted(removed)


def remove_stale_regions() -> list[str]:
    """Unlink shm regions of launchers that died without stopping their server; return their names.

    A region is stale when the launcher pid in its name is gone and no process maps it any more (the
    server and its stubs exited but nobody was left to unlink it, e.g. after a SIGKILL under heavy load).
    """
    candidates = {}
    for path in SHM_DIR.glob(f"{SHM_STEM}dfe*"):
        match = re.match(rf"{SHM_STEM}dfe(\d+)_", path.name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            candidates[path.name] = path
    for maps in Path("/proc").glob("[0-9]*/maps") if candidates else ():
        try:
            text = maps.read_text()
        except OSError:  # the process exited or is not ours to read
            continue
        for name in [name for name in candidates if name in text]:
            del candidates[name]
    for path in candidates.values():
        path.unlink(missing_ok=True)
    return sorted(candidates)


def accepts_connections(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something listens on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def client_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def has_cuda_gpu() -> bool:
    """True when an NVIDIA device node exists (cheap; does not load CUDA)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


_RUNNING: "weakref.WeakSet[TritonServer]" = weakref.WeakSet()


@atexit.register
def _stop_all_running() -> None:
    for server in list(_RUNNING):
        server.stop()


class TritonServer:
    """The real ``tritonserver`` on ``model_repository``, reachable over HTTP, gRPC and metrics ports.

    ``start()`` checks the ports, launches the binary and returns once the server and every model in the
    repository are ready (``TritonStartupError`` with the server's log tail otherwise). ``stop()`` sends
    SIGTERM, escalates to SIGKILL of the whole process group, and removes the server's shared memory.
    Use it as a context manager so that this happens even when the body raises. Started from the main
    thread, the server also receives SIGTERM from the kernel if this process dies without stopping it.
    ``extra_args`` are appended to the tritonserver command line (later flags win, e.g. ``--log-verbose=1``).
    ``admin_key`` unlocks the restricted admin APIs (default: a fresh random key, in ``self.admin_key``).
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        http_port: int = HTTP_PORT,
        grpc_port: int = GRPC_PORT,
        metrics_port: int = METRICS_PORT,
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 15.0,
        log_file: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        admin_key: str | None = None,
        http_host: str | None = None,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self.http_host = http_host or host  # a gateway in front keeps Triton's HTTP endpoint on loopback
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._requested_log_file = Path(log_file) if log_file is not None else None
        self._extra_args = tuple(extra_args)
        self.admin_key = admin_key or generate_admin_key()
        restricted_api_flags(self.admin_key)  # a malformed key fails here, not inside tritonserver
        self._python_envs: set[str] = set()
        self._process: ChildProcess | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._shm_prefix = ""
        self.log_file: Path | None = None

    # -- addresses -------------------------------------------------------------------------------------
    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint (the form tritonclient expects)."""
        return f"{client_host(self.http_host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{self._client_host}:{self.metrics_port}/metrics"

    @property
    def _client_host(self) -> str:
        return client_host(self.host)

    @property
    def shm_prefix(self) -> str:
        """Name prefix of this server's Python-backend regions in /dev/shm (set by ``start()``)."""
        return self._shm_prefix

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        """The server's exit status once it has exited (negative: killed by that signal), else None."""
        return None if self._process is None else self._process.poll()

    # -- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> "TritonServer":
        """Launch the server and block until it and all its models are ready."""
        if self._process is not None:
            raise TritonServerError("this TritonServer was already started")
        if not (self.model_repository / ".").is_dir():
            raise TritonServerError(f"model repository {self.model_repository} does not exist")
        check_port_free(self.http_host, self.http_port, "HTTP")
        for purpose, port in (("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
            check_port_free(self.host, port, purpose)
        install = TritonInstallation.locate()
        remove_stale_regions()
        remove_stale_workdirs()
        self._workdir = tempfile.TemporaryDirectory(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-")
        workdir = Path(self._workdir.name)
        self.log_file = self._requested_log_file or workdir / "tritonserver.log"
        self._shm_prefix = f"{SHM_STEM}dfe{os.getpid()}_{secrets.token_hex(4)}_"
        command = self._command(install, install.make_backend_directory(workdir))
        env = install.environment()
        python_envs_before = set(glob.glob(PYTHON_ENV_GLOB))
        # Its own process group (the stubs join it) and, started from the main thread, SIGTERM from the kernel
        # if this process dies hard: the server then unloads its models and ends its stubs, nothing is orphaned.
        # The log is appended: a restarted server keeps its predecessor's log.
        self._process = ChildProcess(command, log_path=self.log_file, env=env, cwd=workdir,
                                     stop_timeout_s=self.stop_timeout_s, name="tritonserver").start()
        _RUNNING.add(self)
        try:
            self._wait_ready()
            # The backend made its folder while loading; folders of servers started meanwhile could be
            # mistaken for ours, so only empty ones are ever removed (see stop()).
            self._python_envs = set(glob.glob(PYTHON_ENV_GLOB)) - python_envs_before
        except BaseException:
            self.stop()
            raise
        return self

    def _command(self, install: TritonInstallation, backend_directory: Path) -> list[str]:
        gpu = has_cuda_gpu()
        command = [
            str(install.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backend_directory}",
            f"--http-address={self.http_host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true", "--allow-cpu-metrics=true", f"--allow-gpu-metrics={str(gpu).lower()}",
            "--strict-readiness=true", "--exit-on-error=true",
            # Unloading takes ~1.5 s per model, far longer on a starved machine. stop() escalates to SIGKILL
            # after stop_timeout_s anyway; the long bound matters when the launcher died (parent-death
            # SIGTERM): only a complete unload lets the server unlink its own shared memory.
            "--exit-timeout-secs=30",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
            # A 224 px batch of 32 UINT8 images is 4.8 MB: start big enough that the region rarely grows.
            "--backend-config=python,shm-default-byte-size=16777216",
            "--backend-config=python,shm-growth-byte-size=16777216",
            *restricted_api_flags(self.admin_key),
        ]
        if not gpu:  # avoids a CUDA probe failing at start-up on CPU-only machines
            command += ["--pinned-memory-pool-byte-size=0"]
        return command + list(self._extra_args)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise self._startup_error(f"tritonserver exited with code {self._process.poll()} before ready")
            if self._http_ok("/v2/health/ready") and accepts_connections(self._client_host, self.metrics_port):
                break
            if time.monotonic() > deadline:
                raise self._startup_error(f"tritonserver not ready after {self.startup_timeout_s:.0f} s")
            time.sleep(0.05)
        not_ready = [m for m in self.repository_index() if m.get("state") != "READY"]
        if not_ready:
            raise self._startup_error(f"models not ready: {not_ready}")

    def _startup_error(self, reason: str) -> TritonStartupError:
        return TritonStartupError(f"{reason} (repository {self.model_repository}).\n"
                                  f"--- tritonserver log tail ({self.log_file}) ---\n{self.log_tail()}")

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=1.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def repository_index(self) -> list[dict[str, str]]:
        """Triton's repository index: one ``{"name", "version", "state"[, "reason"]}`` per model version."""
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST",
                                         headers=admin_headers(self.admin_key))
        with urllib.request.urlopen(request, timeout=5.0) as response:
            return list(json.load(response))

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the server wrote (stdout and stderr)."""
        return file_tail(self.log_file, lines)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the whole process group after ``stop_timeout_s``; remove shm and work dir.

        Safe to call twice, and on a server whose start failed.
        """
        process, self._process = self._process, None
        _RUNNING.discard(self)
        if process is not None:
            process.stop()  # SIGTERM, then SIGKILL of the group: the stubs share the server's process group
        if self._shm_prefix:
            for region in SHM_DIR.glob(f"{self._shm_prefix}*"):
                region.unlink(missing_ok=True)
        for folder in self._python_envs:
            try:
                os.rmdir(folder)  # only if empty: never anything another server still uses
            except OSError:
                pass
        self._python_envs = set()
        if self._workdir is not None:
            if self._requested_log_file is None:
                self.log_file = None  # it lived in the work dir
            self._workdir.cleanup()
            self._workdir = None
