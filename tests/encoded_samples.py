"""What the encoded-image tests share: the served configs, encoding test photos, and the documented curl
example of docs/encoded_images.md run exactly as written there."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from deepfake_edge.server.admin_key import admin_headers

DOC = Path(__file__).resolve().parents[1] / "docs" / "encoded_images.md"


def config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def encode(image: Image.Image, image_format: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def curl_example(model: str) -> str:
    """The bash block of docs/encoded_images.md that posts an image to ``model`` with curl."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    [block] = [block for block in blocks if f"/v2/models/{model}/infer" in block]
    return block


def run_curl(script: str, http_url: str, image: Path) -> subprocess.CompletedProcess:
    """``script`` (a documented example) against Triton at ``http_url`` with ``image`` as the file to send."""
    assert shutil.which("curl"), "the curl binary is needed (Debian package curl)"
    return subprocess.run(["bash", "-c", script], capture_output=True, timeout=60,
                          env={**os.environ, "TRITON": http_url, "IMAGE": str(image)})


def model_counts(server, model: str) -> dict[str, int]:
    """Triton's cumulative executions and succeeded/failed requests of ``model`` (statistics need the key)."""
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/stats",
                                     headers=admin_headers(server.admin_key))
    with urllib.request.urlopen(request, timeout=10) as response:
        stats = json.load(response)["model_stats"][0]
    return {"executions": int(stats["execution_count"]), "succeeded": int(stats["inference_stats"]["success"]["count"]),
            "failed": int(stats["inference_stats"]["fail"]["count"])}
