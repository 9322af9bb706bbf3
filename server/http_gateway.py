"""nginx in front of Triton's HTTP port: bounded request bodies, cut slow clients, a 503 while Triton is down.

Triton 2.51's HTTP frontend reads any request body whole (it has no size limit until 2.53's
``--http-max-input-size``): one 100 MB JSON request took tritonserver from 61 to 430 MB, and 8 concurrent
200 MB bodies to 4.9 GB. A web page in any browser on the machine can send such a body to 127.0.0.1
(``text/plain`` needs no CORS preflight). So ``serve`` puts Debian's nginx on the public HTTP port and
moves Triton's HTTP endpoint to a private loopback port behind it; gRPC and metrics stay direct.

nginx refuses bodies over ``max_body_bytes`` with 413 before Triton sees a byte, closes connections whose
headers or body stall, keeps upstream connections alive (one hop, not one TCP handshake per request),
and answers 503 in Triton's JSON error shape while Triton is down or restarting.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from deepfake_edge.server.processes import die_with_parent, file_tail
from deepfake_edge.server.triton import TritonServerError, accepts_connections

# Binary-data requests of a full batch (32 x 3 x 224 x 224 UINT8 = 4.8 MB) fit, and JSON ones of
# ~25 such images; 16 concurrent maximal bodies cost tritonserver well under a gigabyte.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

_CONFIG = """\
daemon off;
master_process on;
{user}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    client_max_body_size {max_body_bytes};
    client_body_buffer_size 8m;
    client_header_timeout {client_timeout_s}s;
    client_body_timeout {client_timeout_s}s;
    send_timeout {client_timeout_s}s;
    keepalive_timeout 60s;
    server_tokens off;
    upstream triton {{
        server {upstream};
        keepalive 32;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://triton;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_read_timeout {upstream_timeout_s}s;
            proxy_send_timeout {upstream_timeout_s}s;
        }}
        error_page 502 504 =503 @triton_down;
        location @triton_down {{
            default_type application/json;
            return 503 '{{"error":"Triton is not answering (restarting or overloaded); try again shortly"}}';
        }}
        error_page 413 @too_large;
        location @too_large {{
            default_type application/json;
            return 413 '{{"error":"request body larger than {max_body_bytes} bytes"}}';
        }}
    }}
}}
"""


class GatewayError(TritonServerError):
    """nginx is missing, or did not start; the message says which and how to fix it (a failed start of the
    service, like Triton's own, so the supervisor retries it)."""


def nginx_binary() -> Path | None:
    """Debian's nginx (``apt-get install nginx-light``; ``make serve`` and ``make test`` install it), also
    when /usr/sbin is not on PATH."""
    found = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    return Path(found) if found else None


class HttpGateway:
    """nginx listening on ``listen_host:listen_port``, proxying to Triton's HTTP at ``upstream``.

    ``start()`` returns once nginx accepts connections; ``stop()`` ends it (SIGQUIT, then SIGKILL).
    Its configuration, temp files and error log live in ``workdir``, which the caller owns.
    """

    def __init__(self, listen_host: str, listen_port: int, upstream: str, workdir: Path,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, client_timeout_s: float = 30.0,
                 upstream_timeout_s: float = 300.0) -> None:
        self.listen_host, self.listen_port, self.upstream = listen_host, listen_port, upstream
        self.workdir = Path(workdir)
        self.max_body_bytes = max_body_bytes
        self.client_timeout_s, self.upstream_timeout_s = client_timeout_s, upstream_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.workdir / "nginx-error.log"

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 15.0) -> "HttpGateway":
        binary = nginx_binary()
        if binary is None:
            raise GatewayError("nginx is not installed: 'apt-get install nginx-light' (make serve does it), "
                               "or pass --http-gateway none to expose Triton's HTTP port directly")
        self.workdir.mkdir(parents=True, exist_ok=True)
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        config = self.workdir / "nginx.conf"
        config.write_text(_CONFIG.format(
            user=self._unprivileged_workers(),
            workdir=self.workdir, max_body_bytes=self.max_body_bytes, client_timeout_s=int(self.client_timeout_s),
            upstream_timeout_s=int(self.upstream_timeout_s), upstream=self.upstream,
            listen=f"{host}:{self.listen_port}"))
        self._process = subprocess.Popen(
            [str(binary), "-c", str(config), "-p", str(self.workdir), "-e", str(self.error_log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
            # nginx must not outlive its launcher; the kernel ties the signal to the launching thread.
            preexec_fn=die_with_parent if threading.current_thread() is threading.main_thread() else None)
        deadline = time.monotonic() + timeout_s
        while not accepts_connections(self.listen_host, self.listen_port, timeout_s=0.5):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise GatewayError(f"nginx did not start on {self.listen_host}:{self.listen_port}:\n{tail}")
            time.sleep(0.02)
        return self

    def _unprivileged_workers(self) -> str:
        """Started as root, nginx runs its worker as ``nobody``, which must be able to write the temp folders
        (bodies over 8 MB are buffered there); otherwise the worker is this user and needs nothing."""
        if os.geteuid() != 0:
            return ""
        nobody = pwd.getpwnam("nobody")
        self.workdir.chmod(0o711)  # traversable, not listable
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            folder = self.workdir / name
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        group = grp.getgrgid(nobody.pw_gid).gr_name
        return f"user nobody {group};"

    def stop(self, timeout_s: float = 5.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGQUIT)  # graceful: finish requests in flight
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the worker shares the master's process group
        except (ProcessLookupError, PermissionError):
            pass
        process.wait()

    def log_tail(self, lines: int = 20) -> str:
        return file_tail(self.error_log, lines)
