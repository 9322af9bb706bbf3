"""Helpers shared by the web tests: the real web server (make_web_server) in a thread, multipart POSTs, test images."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask

from deepfake_edge.webapp.app import make_web_server
from deepfake_edge.webapp.wsgi_server import serving_in_thread

VERDICT_PATTERN = r"^(Real|Fake) – \d{1,3}\.\d%$"
# scikit-image photos the browser tests synthesize their Real and Fake samples from (see synthetic_test_images).
SAMPLE_SOURCE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "grass", "gravel")
DEMO_B0 = Path(__file__).resolve().parents[1] / "models" / "demo" / "efficientnet_b0.safetensors"


@contextmanager
def running_web_server(app: Flask, **server_options) -> Iterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port in a thread; yields the base URL; always shuts down."""
    with serving_in_thread(make_web_server(app, host="127.0.0.1", port=0, **server_options), "test-web-server") as url:
        yield url


def stop_process(process: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """SIGTERM ``process`` (a ``deepfake-edge web`` the test started), SIGKILL it after ``timeout_s``."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def post_file_raw(url: str, filename: str, data: bytes, fields: dict[str, str] | None = None,
                  timeout_s: float = 60.0) -> tuple[int, str, bytes]:
    """POST ``data`` as multipart field ``file`` (plus ``fields``); returns (status, Content-Type, body bytes)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    return send_raw(request, timeout_s)


def post_file(url: str, filename: str, data: bytes, fields: dict[str, str] | None = None,
              timeout_s: float = 60.0) -> tuple[int, dict]:
    """POST ``data`` as multipart field ``file`` (plus ``fields``); returns (status, JSON body)."""
    status, _, body = post_file_raw(url, filename, data, fields, timeout_s)
    return status, json.loads(body)


def get_json(url: str, timeout_s: float = 30.0) -> tuple[int, dict]:
    status, _, body = send_raw(urllib.request.Request(url), timeout_s)
    return status, json.loads(body)


def send_raw(request: urllib.request.Request, timeout_s: float) -> tuple[int, str, bytes]:
    """Send ``request``; returns (status, Content-Type header, body bytes), also for 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid-looking PNG of a few hundred bytes that declares ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 4)  # a few rows; the rest never gets decoded
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def synthetic_test_images(out_dir: Path) -> dict[str, Path]:
    """The clearest Real and the clearest Fake, for the committed demo B0, of a small synthetic test split.

    The split is made from a fixed set of scikit-image photos (not the packaged catalogue, whose size
    depends on which Debian photo packages are installed), so the candidates are the same on every
    machine. The demo model is weak on some photos; the browser tests check the page, so they take the
    candidate of each class that the model scores most clearly (checked against its threshold).
    """
    import numpy as np
    import skimage.data
    import torch
    from PIL import Image

    from deepfake_edge.checkpoint import load_checkpoint
    from deepfake_edge.preprocessing import Preprocessor, normalize
    from deepfake_edge.training.synth import synthesize

    photos = out_dir / "photos"
    photos.mkdir(parents=True)
    for name in SAMPLE_SOURCE_PHOTOS:
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(photos / f"{name}.png")
    synthesize(out_dir / "synth", source=photos, count=40, seed=0, test_fraction=0.4, progress=False)
    model, card = load_checkpoint(DEMO_B0)
    model = model.float().eval()
    preprocess = Preprocessor.from_card(card)
    chosen = {}
    for label, pick in (("Real", np.argmin), ("Fake", np.argmax)):
        paths = sorted((out_dir / "synth" / "test" / label).glob("*.jpg"))
        batch = torch.from_numpy(np.stack([preprocess(path) for path in paths]))
        with torch.no_grad():
            scores = torch.sigmoid(model(normalize(batch, card.mean, card.std))).squeeze(1).numpy()
        best = int(pick(scores))
        assert (scores[best] >= card.threshold) == (label == "Fake"), (
            f"the demo model gets no {label} sample right: {scores}")
        chosen[label] = paths[best]
    return chosen


def jpeg_bytes(size: tuple[int, int] = (320, 240)) -> bytes:
    """A small colourful JPEG (a gradient), valid for every model."""
    import numpy as np
    from PIL import Image

    width, height = size
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class DiskWriteAudit:
    """Records every open-for-writing and temp-file creation in this process while ``armed``.

    Built on ``sys.addaudithook``: it sees ``open()``, ``os.open`` and ``tempfile`` in every thread,
    including the web server's request threads (not files that C libraries open themselves: list the
    TMPDIR as well). Hooks cannot be removed, so it disarms instead.
    """

    _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND

    def __init__(self) -> None:
        self.armed = False
        self.events: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
            self.events.append(f"{event} {args}")
        elif event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & self._WRITE_FLAGS)
            if writing and "__pycache__" not in str(path):  # a lazily imported module's bytecode is not an upload
                self.events.append(f"open {path!r} mode={mode!r} flags={flags!r}")
