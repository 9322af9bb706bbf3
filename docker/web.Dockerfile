# The deepfake-edge web page as a container, for docker-compose.yml (Triton runs in the NGC image beside it).
# Build context: the repository root.  docker compose build web   (or)   docker build -f docker/web.Dockerfile .
#
# The web page only preprocesses images and calls Triton, so the image skips the training/export stack
# (torch, onnxruntime, timm: ~1.5 GB). tests/test_server_compose.py runs the real `deepfake-edge web`
# with those packages made unimportable, so this list stays sufficient.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 web
WORKDIR /opt/deepfake-edge

# opencv: the CLI imports it while registering the `data synth` verb, before `web` runs.
RUN pip install "flask>=3.0" "pillow>=10" "numpy>=1.24,<2" "matplotlib>=3.8" "tqdm>=4.66" \
        "opencv-python-headless>=4.8,<5" "tritonclient[grpc,http]==2.51.0" \
        "waitress>=3.0.2,<4"

COPY pyproject.toml README.md ./
COPY deepfake_edge ./deepfake_edge
COPY training ./training
COPY export ./export
COPY server ./server
COPY client ./client
COPY webapp ./webapp
COPY benchmarks ./benchmarks
RUN pip install --no-deps .

USER web
EXPOSE 8080
# Triton's address comes from the compose service name; the page binds all interfaces inside the container.
CMD ["deepfake-edge", "web", "--triton-url", "triton:8001", "--protocol", "grpc", "--host", "0.0.0.0", "--port", "8080"]
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/api/health', timeout=4)"]
