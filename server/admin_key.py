"""Who may use Triton's admin APIs: a key in a request header, checked by Triton itself.

Anyone who reaches Triton's ports may run inference, probe health and read model metadata and configs
(the config carries the model card, which the client needs). Everything else changes or reveals the
server's state, and Triton refuses it without the key:

* ``shared-memory``: registering an existing /dev/shm object let an anonymous caller write any bytes into
  it and crash the Python backend by aiming an output at the backend's own region;
* ``model-repository``: ``load`` with a ``file:`` override runs arbitrary Python as the server's user;
* ``logging`` and ``trace``: verbose logging under load grows the log by megabytes a second;
* ``statistics``: per-model request counts and timings are operational data, not a public API.

The key travels in the ``admin-key`` HTTP header (gRPC metadata ``triton-grpc-protocol-admin-key``). A custom header also stops a
web page in a browser from reaching these APIs: it forces a CORS preflight, which Triton does not answer.
``serve`` takes the key from ``DEEPFAKE_EDGE_ADMIN_KEY`` (compose, Kubernetes: from a secret) or makes a new
one per start and leaves it, readable by this user only, in :func:`default_key_file`, where the project's
own tools find it. Triton takes the key on its command line: local users who can list processes can
read it; the threat this guards against is the network and the browser, not this machine's users.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ADMIN_HEADER = "admin-key"
KEY_ENVIRONMENT_VARIABLE = "DEEPFAKE_EDGE_ADMIN_KEY"
RESTRICTED_APIS = ("shared-memory", "model-repository", "logging", "trace", "statistics")


class AdminKeyError(RuntimeError):
    """No admin key could be found for an operation that needs one."""


def generate_admin_key() -> str:
    """A fresh random key (256 bits, URL-safe, fine in a header)."""
    return secrets.token_urlsafe(32)


def restricted_api_flags(key: str) -> list[str]:
    """The tritonserver flags that put :data:`RESTRICTED_APIS` behind ``key`` on HTTP and gRPC."""
    if not key or any(c in key for c in ",:= \t\r\n"):
        raise ValueError("the admin key must be non-empty, without commas, colons, '=' or whitespace")
    apis = ",".join(RESTRICTED_APIS)
    return [f"--http-restricted-api={apis}:{ADMIN_HEADER}={key}",
            f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={key}"]


def admin_headers(key: str, protocol: str = "http") -> dict[str, str]:
    """The request headers (HTTP) or metadata (gRPC) that unlock the restricted APIs.

    Triton prefixes the header it checks on gRPC with ``triton-grpc-protocol-``.
    """
    return {(ADMIN_HEADER if protocol == "http" else f"triton-grpc-protocol-{ADMIN_HEADER}"): key}


def default_key_file() -> Path:
    """Where ``serve`` leaves the key it made: ``$XDG_RUNTIME_DIR/deepfake-edge/admin-key``, else
    ``~/.cache/deepfake-edge/admin-key``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path.home() / ".cache"
    return base / "deepfake-edge" / "admin-key"


def write_key_file(key: str, path: Path | None = None) -> Path:
    """Write ``key`` to ``path`` (default :func:`default_key_file`), readable by this user only."""
    path = path or default_key_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        handle.write(key)
    return path


def find_admin_key(required_for: str | None = None) -> str | None:
    """The key from ``DEEPFAKE_EDGE_ADMIN_KEY``, else from :func:`default_key_file`, else None.

    With ``required_for`` (what needs it, for the message) a missing key raises :class:`AdminKeyError`.
    """
    key = os.environ.get(KEY_ENVIRONMENT_VARIABLE, "").strip()
    if not key:
        try:
            key = default_key_file().read_text().strip()
        except OSError:
            key = ""
    if not key and required_for:
        raise AdminKeyError(
            f"{required_for} needs Triton's admin key: set {KEY_ENVIRONMENT_VARIABLE}, or run on the machine "
            f"where 'deepfake-edge serve' wrote it to {default_key_file()}")
    return key or None
