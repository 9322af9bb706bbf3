"""What a benchmark run measures and how long each point may take (full and ``--quick`` presets)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

DEFAULT_REPOSITORY = Path("model_repository/embedded")
DEFAULT_MODELS = ("deepfake_b0", "deepfake_b0_int8")


@dataclass(frozen=True)
class BenchSettings:
    """Every knob of a run; the JSON output records it whole.

    Load points are closed loops bounded by ``max_requests`` AND ``max_seconds``; engine points by
    ``engine_iterations`` AND ``engine_seconds``. ``models`` are Triton model names of the repository;
    their precision is read from the name (``_int8``, ``_fp16`` suffix, else fp32).
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
        )


def precision_of(model: str) -> str:
    """``deepfake_b0_int8`` -> int8, ``..._fp16`` -> fp16, anything else fp32."""
    for precision in ("int8", "fp16"):
        if model.endswith(f"_{precision}"):
            return precision
    return "fp32"
