"""What a benchmark run measures and how long each point may take (full and ``--quick`` presets)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from deepfake_edge.serving_contract import DEFAULT_MODEL, INT8_MODEL

DEFAULT_REPOSITORY = Path("model_repository/embedded")
DEFAULT_MODELS = (DEFAULT_MODEL, INT8_MODEL)
STAGES = ("engine", "served", "perf_analyzer", "whole-image", "video", "encoded", "replicas", "naive")  # in the order a run measures them
# The video stage's source footage (Debian's opencv-doc package); the stage is skipped without it.
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@dataclass(frozen=True)
class BenchSettings:
    """Every knob of a run; the JSON output records it whole.

    Load points are closed loops bounded by ``max_requests`` AND ``max_seconds``; engine points by
    ``engine_iterations`` AND ``engine_seconds``. ``models`` are Triton model names of the repository;
    their precision is read from the name (``_int8``, ``_fp16`` suffix, else fp32). ``stages`` picks
    which of :data:`STAGES` run. The whole-image stage measures ``whole_image_model`` (default: the
    first of ``models``); its points are bounded by ``whole_image_max_images`` (fast:
    ``whole_image_fast_max_images``) AND the matching seconds. The video stage analyses a
    ``video_clip_seconds`` clip made from ``video_source`` at ``video_sample_fps``, ``video_repeats`` times
    per (mode, frame concurrency of ``video_concurrencies``), with the whole-image stage's model.
    """

    out: Path = Path("runs/bench")
    checkpoint: Path | None = None  # None: the one the served FP32 model was exported from
    repository: Path = DEFAULT_REPOSITORY
    models: tuple[str, ...] = DEFAULT_MODELS
    protocols: tuple[str, ...] = ("grpc", "http")
    batches: tuple[int, ...] = (1, 4, 8, 16, 32)
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    naive_engines: tuple[str, ...] = ("torch", "onnxruntime")
    naive_concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    torch_engine: bool = True
    perf_analyzer: bool = True
    perf_protocols: tuple[str, ...] = ("grpc",)  # side by side with our gRPC figures; HTTP would double its time
    perf_concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    max_requests: int = 3000
    max_seconds: float = 8.0
    engine_seconds: float = 4.0
    engine_iterations: int = 400
    perf_interval_ms: int = 2000
    perf_max_trials: int = 5
    perf_stability: float = 25.0
    request_timeout_s: float = 60.0
    stages: tuple[str, ...] = STAGES
    whole_image_model: str | None = None
    whole_image_concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16)
    whole_image_max_images: int = 32
    whole_image_max_seconds: float = 10.0
    whole_image_fast_max_images: int = 400
    whole_image_fast_max_seconds: float = 3.0
    whole_image_split_repeats: int = 1
    video_source: Path = VTEST
    video_clip_seconds: float = 10.0
    video_sample_fps: float = 2.0
    video_concurrencies: tuple[int, ...] = (1, 2)
    video_repeats: int = 3
    # The encoded stage: 1024x768 JPEGs to deepfake_image vs client-side preprocessing (benchmarks/encoded.py).
    encoded_concurrencies: tuple[int, ...] = (1, 4, 16)
    # The replicas stage: 1 and 2 tritonservers behind HAProxy, as `serve --replicas N` runs them.
    replica_counts: tuple[int, ...] = (1, 2)
    replica_concurrency: int = 16
    quick: bool = False

    def to_dict(self) -> dict:
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}

    def with_quick(self) -> "BenchSettings":
        """The CI preset: every stage still runs, on fewer and shorter points (well under 2 minutes)."""
        return replace(
            self, quick=True, protocols=("grpc", "http"), batches=(1, 8), concurrencies=(1, 4),
            naive_engines=("torch",), naive_concurrencies=(1, 4), torch_engine=False, perf_protocols=("grpc",),
            perf_concurrencies=(4,), max_requests=400, max_seconds=1.5, engine_seconds=1.0, engine_iterations=50,
            perf_interval_ms=800, perf_max_trials=4, perf_stability=60.0,
            whole_image_concurrencies=(1, 4), whole_image_max_images=8, whole_image_max_seconds=4.0,
            whole_image_fast_max_images=100, whole_image_fast_max_seconds=1.0,
            video_clip_seconds=2.0, video_concurrencies=(2,), video_repeats=1, encoded_concurrencies=(1, 4),
            replica_counts=(),  # its own replica sets take minutes to start: `--only replicas` asks for it
        )

    @property
    def whole_image_target(self) -> str:
        """The model the whole-image stage measures."""
        return self.whole_image_model or self.models[0]

