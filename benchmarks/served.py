"""Our service under load: the project's client against the real Triton, plus what Triton itself reports.

The repository helpers read what the server will run (latest version's ``model.onnx``; the model card,
instances and thread count from ``config.pbtxt``, parsed by the serving contract into its ``ModelInfo``),
so the engine benchmark opens exactly the same file with the same settings. :class:`BatchingStats` diffs
Triton's own statistics around a load point to tell how large the batches the dynamic batcher formed were
and where server time went.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from deepfake_edge.benchmarks.loadgen import Sender
from deepfake_edge.model_card import ModelCard
from deepfake_edge.serving_contract import (
    base_name,
    intra_op_threads,
    latest_version_dir,
    parse_model_config,
    read_repository_config,
)


@dataclass(frozen=True)
class ServedModel:
    """One model of an ``embedded`` repository as the server will load it."""

    name: str
    onnx_path: Path
    card: ModelCard
    intra_op_threads: int
    instances: int
    max_batch_size: int
    max_queue_delay_us: int
    checkpoint: Path | None  # the checkpoint it was exported from, per the export summary beside it


def read_served_model(repository: str | Path, name: str) -> ServedModel:
    """Parse ``<repository>/<name>/config.pbtxt`` and locate the latest version's ONNX file."""
    model_dir = Path(repository) / name
    info = parse_model_config(name, read_repository_config(model_dir))
    version_dir = latest_version_dir(model_dir)
    if version_dir is None:
        raise FileNotFoundError(f"{model_dir} has no version folder")
    return ServedModel(
        name=name, onnx_path=version_dir / "model.onnx", checkpoint=_exported_from(version_dir, name),
        card=info.card, intra_op_threads=intra_op_threads(info), instances=info.instances,
        max_batch_size=info.max_batch_size, max_queue_delay_us=info.max_queue_delay_us,
    )


def _exported_from(version_dir: Path, name: str) -> Path | None:
    """The source checkpoint recorded by ``deepfake-edge export`` (export_summary.json), if it still exists."""
    summary_path = version_dir / "export_summary.json"
    if not summary_path.is_file():
        return None
    models = json.loads(summary_path.read_text()).get("models", {})
    checkpoint = models.get(base_name(name), {}).get("checkpoint")
    return Path(checkpoint) if checkpoint and Path(checkpoint).is_file() else None


def client_sender(url: str, protocol: str, model: str, images: tuple[bytes, ...], timeout_s: float = 60.0,
                  shared_memory: bool = False) -> Sender:
    """A load-generator sender: its own ``DeepfakeClient`` (own connection), one image per request.

    Each call goes the whole client path: decode + preprocess the JPEG bytes, send UINT8, decode the answer.
    The single view (``mode="fast"``), not the default whole-image analysis: the naive servers and the
    engine it is compared with score one view per image.
    """
    from deepfake_edge.client import DeepfakeClient

    client = DeepfakeClient(url, protocol=protocol, model=model, timeout_s=timeout_s, retries=0,
                            shared_memory=shared_memory)
    client.model_info()

    def send(number: int) -> object:
        return client.detect(images[number % len(images)], mode="fast")

    send.close = client.close  # type: ignore[attr-defined]
    return send


@dataclass(frozen=True)
class BatchingStats:
    """Triton's cumulative counters for one model (``/v2/models/<name>/stats``)."""

    inferences: int
    executions: int
    queue_ns: int
    compute_infer_ns: int
    success_count: int

    @classmethod
    def read(cls, http_url: str, model: str, admin_key: str) -> "BatchingStats":
        """Statistics are an admin API: ``admin_key`` is the server's key."""
        import urllib.request

        from deepfake_edge.server.admin_key import admin_headers

        request = urllib.request.Request(f"http://{http_url}/v2/models/{model}/stats", headers=admin_headers(admin_key))
        with urllib.request.urlopen(request, timeout=10) as response:
            stats = json.load(response)["model_stats"]
        inferences = executions = queue = infer = success = 0
        for version in stats:
            inferences += int(version.get("inference_count", 0))
            executions += int(version.get("execution_count", 0))
            detail = version.get("inference_stats", {})  # per request
            queue += int(detail.get("queue", {}).get("ns", 0))
            success += int(detail.get("success", {}).get("count", 0))
            # per execution: inference_stats would count a batch's compute once for each of its requests
            infer += sum(int(b.get("compute_infer", {}).get("ns", 0)) for b in version.get("batch_stats", []))
        return cls(inferences, executions, queue, infer, success)

    def since(self, before: "BatchingStats") -> dict[str, float]:
        """Mean executed batch, mean queue wait per request, mean compute per execution (ms)."""
        inferences = self.inferences - before.inferences
        executions = self.executions - before.executions
        requests = self.success_count - before.success_count
        return {
            "mean_batch": round(inferences / executions, 2) if executions else float("nan"),
            "server_queue_ms": (round((self.queue_ns - before.queue_ns) / requests / 1e6, 3)
                                if requests else float("nan")),
            "server_compute_ms_per_execution": (round((self.compute_infer_ns - before.compute_infer_ns)
                                                      / executions / 1e6, 3)
                                                if executions else float("nan")),
        }
