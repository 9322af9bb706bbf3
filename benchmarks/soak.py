"""Soak: thousands of requests at high concurrency, valid and malformed mixed, against the real service.

``run_soak(settings)`` starts ``deepfake-edge serve`` (real tritonserver + web app) on free 127.0.0.1
ports, warms it up, then sends ``settings.requests`` requests from ``settings.concurrency`` threads in a
fixed shuffled order: 90% real photographs (gRPC and HTTP through :class:`DeepfakeClient`, uploads to the
web API) and 10% malformed (truncated, empty, non-image, decompression bomb and oversized uploads; bad
images given to the client; tensors of the wrong dtype, shape or batch size sent straight to Triton).
Every request has an expected outcome; anything else is counted as unexpected. RSS of every process is
sampled throughout. The run is bounded by the request count and ``max_seconds``, and stops the service
(checking nothing was left behind) whatever happens.
"""

from __future__ import annotations

import io
import ipaddress
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from deepfake_edge.benchmarks.soak_payloads import Payloads, build_payloads, wrong_tensors
from deepfake_edge.benchmarks.soak_service import ProcessWatcher, ServeProcess
from deepfake_edge.serving_contract import DEFAULT_MODEL

RSS_GROWTH_TARGET = 0.10


@dataclass(frozen=True)
class Kind:
    """One kind of request: where it goes, whether it is valid, and the outcome that counts as correct."""

    name: str
    channel: str  # "grpc" / "http" (DeepfakeClient), "web" (POST /api/detect), "triton" (raw tritonclient)
    valid: bool
    expected: str


VALID_KINDS = {  # kind -> share of the valid requests
    Kind("grpc_image", "grpc", True, "ok"): 0.45,
    Kind("http_image", "http", True, "ok"): 0.20,
    Kind("web_image", "web", True, "http_200"): 0.35,
}
MALFORMED_KINDS = (  # equal shares of the malformed requests
    Kind("web_truncated", "web", False, "http_400"),
    Kind("web_empty", "web", False, "http_400"),
    Kind("web_not_image", "web", False, "http_400"),
    Kind("web_bomb", "web", False, "http_400"),
    Kind("web_oversized", "web", False, "http_413"),
    Kind("client_truncated", "grpc", False, "BadImageError"),
    Kind("client_bomb", "grpc", False, "BadImageError"),
    Kind("triton_wrong_dtype", "triton", False, "INVALID_ARGUMENT"),
    Kind("triton_wrong_shape", "triton", False, "INVALID_ARGUMENT"),
    Kind("triton_batch_too_big", "triton", False, "INVALID_ARGUMENT"),
)


@dataclass(frozen=True)
class SoakSettings:
    repository: Path = Path("model_repository/embedded")
    out: Path = Path("runs/soak")
    requests: int = 10_000
    concurrency: int = 16
    malformed_fraction: float = 0.10
    warmup_requests: int = 200
    max_seconds: float = 1800.0
    request_timeout_s: float = 60.0
    model: str = DEFAULT_MODEL
    max_upload_bytes: int = 10 * 1024 * 1024  # the web app's default limit (serve does not change it)
    seed: int = 0
    progress: bool = True


def plan(settings: SoakSettings) -> list[Kind]:
    """``settings.requests`` kinds in a seeded random order, shares rounded so the counts add up exactly."""
    malformed = round(settings.requests * settings.malformed_fraction)
    shares = {kind: share * (settings.requests - malformed) for kind, share in VALID_KINDS.items()}
    shares.update({kind: malformed / len(MALFORMED_KINDS) for kind in MALFORMED_KINDS})
    counts = {kind: int(share) for kind, share in shares.items()}
    by_remainder = sorted(shares, key=lambda kind: shares[kind] - counts[kind], reverse=True)
    for kind in by_remainder[: settings.requests - sum(counts.values())]:
        counts[kind] += 1
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    random.Random(settings.seed).shuffle(kinds)
    return kinds


@dataclass
class Outcome:
    kind: Kind
    outcome: str
    latency_s: float
    finished_s: float
    detail: str = ""

    @property
    def correct(self) -> bool:
        return self.outcome == self.kind.expected


class _Sender:
    """Sends one request of any kind; each driver thread keeps its own clients (tritonclient's are not
    thread-safe), all closed by :meth:`close`."""

    def __init__(self, service: ServeProcess, settings: SoakSettings, payloads: Payloads):
        self.service, self.settings, self.payloads = service, settings, payloads
        self._local = threading.local()
        self._opened: list[Any] = []
        self._lock = threading.Lock()
        self._tensors: dict[str, np.ndarray] | None = None

    def _client(self, protocol: str) -> Any:
        client = getattr(self._local, protocol, None)
        if client is None:
            from deepfake_edge.client import DeepfakeClient

            url = self.service.grpc_url if protocol == "grpc" else self.service.http_url
            # No retries: the soak counts every failure instead of hiding it behind a second attempt.
            client = DeepfakeClient(url, protocol=protocol, model=self.settings.model,
                                    timeout_s=self.settings.request_timeout_s, retries=0)
            setattr(self._local, protocol, client)
            with self._lock:
                self._opened.append(client)
        return client

    def _raw_triton(self) -> Any:
        client = getattr(self._local, "raw", None)
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(self.service.grpc_url)
            self._local.raw = client
            with self._lock:
                self._opened.append(client)
        return client

    def wrong_tensors(self) -> dict[str, np.ndarray]:
        if self._tensors is None:
            info = self._client("grpc").model_info()
            self._tensors = wrong_tensors(info.card.input_size, info.max_batch_size)
        return self._tensors

    def close(self) -> None:
        for client in self._opened:
            try:
                client.close()
            except Exception:  # the service may already be gone; closing is best effort
                pass

    def send(self, kind: Kind, index: int, started: float) -> Outcome:
        action = self._action(kind, index)
        begin = time.perf_counter()
        try:
            outcome, detail = action()
        except Exception as error:  # every failure is an outcome to count, never a crash of the soak
            outcome, detail = _label(error), f"{type(error).__name__}: {error}"[:300]
        end = time.perf_counter()
        return Outcome(kind, outcome, end - begin, end - started, detail)

    def _action(self, kind: Kind, index: int) -> Callable[[], tuple[str, str]]:
        payloads = self.payloads
        name, image = payloads.valid[index % len(payloads.valid)]
        truncated = payloads.truncated[index % len(payloads.truncated)]
        uploads = {"web_image": (name, image), "web_truncated": ("cut.jpg", truncated), "web_empty": ("empty.jpg", b""),
                   "web_not_image": ("photo.jpg", payloads.not_image), "web_bomb": ("bomb.png", payloads.bomb),
                   "web_oversized": ("huge.jpg", payloads.oversized)}
        if kind.channel == "web":
            return lambda: self._upload(*uploads[kind.name])
        if kind.channel == "triton":
            return lambda: self._infer_raw(self.wrong_tensors()[kind.name.removeprefix("triton_")])
        source = {"client_truncated": truncated, "client_bomb": payloads.bomb}.get(kind.name, image)
        return lambda: self._detect(kind.channel, source)

    def _detect(self, protocol: str, source: bytes) -> tuple[str, str]:
        client = self._client(protocol)
        detection = client.detect(source)
        if detection.label not in client.model_info().card.labels or not 0.0 <= detection.fake_probability <= 1.0:
            return "malformed_result", repr(detection)
        return "ok", ""

    def _infer_raw(self, tensor: np.ndarray) -> tuple[str, str]:
        import tritonclient.grpc as grpcclient

        dtype = "FP32" if tensor.dtype == np.float32 else "UINT8"
        infer_input = grpcclient.InferInput("image", list(tensor.shape), dtype)
        infer_input.set_data_from_numpy(tensor)
        self._raw_triton().infer(self.settings.model, [infer_input], client_timeout=self.settings.request_timeout_s)
        return "ok", "Triton accepted a tensor its config forbids"

    def _upload(self, filename: str, data: bytes) -> tuple[str, str]:
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        body.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                   f"Content-Type: application/octet-stream\r\n\r\n".encode())
        body.write(data)
        body.write(f"\r\n--{boundary}--\r\n".encode())
        request = urllib.request.Request(f"{self.service.web_url}/api/detect", data=body.getvalue(), method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.request_timeout_s) as response:
                answer = response.read()
                if b'"verdict"' not in answer:
                    return "http_200_without_verdict", answer[:200].decode(errors="replace")
                return f"http_{response.status}", ""
        except urllib.error.HTTPError as error:
            return f"http_{error.code}", error.read()[:200].decode(errors="replace")


def _label(error: BaseException) -> str:
    status = getattr(error, "status", None)
    if callable(status):  # tritonclient's InferenceServerException
        return str(status() or type(error).__name__).removeprefix("StatusCode.")
    return type(error).__name__


def _drive(sender: _Sender, kinds: list[Kind], concurrency: int, deadline: float,
           progress: str | None) -> list[Outcome]:
    """Send ``kinds`` from ``concurrency`` threads, in order, until done or ``deadline`` (monotonic)."""
    from tqdm import tqdm

    outcomes: list[Outcome] = []
    lock, started, stop = threading.Lock(), time.perf_counter(), threading.Event()
    position = iter(enumerate(kinds))
    bar = tqdm(total=len(kinds), desc=progress, unit="req", disable=progress is None, mininterval=1.0)

    def worker() -> None:
        while time.monotonic() < deadline and not stop.is_set():
            with lock:
                item = next(position, None)
            if item is None:
                return
            outcome = sender.send(item[1], item[0], started)
            with lock:
                outcomes.append(outcome)
                bar.update()

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="soak") as pool:
        try:
            for future in [pool.submit(worker) for _ in range(concurrency)]:
                future.result()
        except BaseException:  # Ctrl+C: let the workers finish the request they are on, then stop
            stop.set()
            raise
        finally:
            bar.close()
    return outcomes


def run_soak(settings: SoakSettings) -> dict:
    """Run the soak; returns the JSON-ready results (also what :mod:`soak_report` writes)."""
    from deepfake_edge.benchmarks.machine import describe_machine, load_average

    if not (settings.repository / settings.model / "config.pbtxt").is_file():
        raise FileNotFoundError(f"{settings.repository} has no model {settings.model!r}; build it with "
                                "'deepfake-edge export --if-missing' (what 'make serve' runs first)")
    machine = describe_machine()
    payloads = build_payloads(settings.max_upload_bytes)
    kinds = plan(settings)
    warmup = plan(SoakSettings(requests=settings.warmup_requests, malformed_fraction=0.0, seed=settings.seed + 1))
    service = ServeProcess(settings.repository.resolve(), settings.out)
    results: dict[str, Any] = {"settings": _jsonable(asdict(settings)), "machine": machine}
    leftovers: list[str] = []
    service.start()
    sender = _Sender(service, settings, payloads)
    try:
        watcher = ProcessWatcher(service)
        results["listening"] = service.listening()
        results["rss_ready_mb"] = watcher.sample()
        deadline = time.monotonic() + settings.max_seconds
        _drive(sender, warmup, settings.concurrency, deadline, "warm-up" if settings.progress else None)
        results["rss_warm_mb"] = watcher.sample()
        began = time.perf_counter()
        with watcher:
            outcomes = _drive(sender, kinds, settings.concurrency, deadline, "soak" if settings.progress else None)
        results["duration_s"] = round(time.perf_counter() - began, 2)
        results["rss_samples"] = watcher.samples
        results["crash_events"] = watcher.crash_events
        results["triton_statistics"] = _triton_statistics(service.http_url, service.admin_key)
    finally:
        sender.close()
        leftovers = service.stop()
    machine["load_average_after"] = load_average()
    results["leftovers"] = leftovers
    results["web_app_tracebacks"] = service.log_path.read_text(errors="replace").count("Traceback")
    results.update(summarize(outcomes, len(kinds)))
    results["rss"] = rss_table(results)
    results["targets"] = _targets(results)
    results["passed"] = all(results["targets"].values())
    return results


def summarize(outcomes: list[Outcome], planned: int) -> dict:
    """Counts by kind and outcome, the unexpected ones with examples, latency percentiles of valid requests."""
    by_kind: dict[str, dict] = {}
    for kind in list(VALID_KINDS) + list(MALFORMED_KINDS):
        mine = [o for o in outcomes if o.kind == kind]
        by_kind[kind.name] = {"channel": kind.channel, "valid": kind.valid, "expected": kind.expected,
                              "sent": len(mine), "outcomes": dict(Counter(o.outcome for o in mine).most_common())}
    unexpected = [o for o in outcomes if not o.correct]
    expected_rejections = Counter(f"{o.kind.channel}: {o.outcome}" for o in outcomes if o.correct and not o.kind.valid)
    served = [o for o in outcomes if o.correct and o.kind.valid]
    latency: dict[str, dict] = {}
    for channel in ("grpc", "http", "web"):
        latency[channel] = _percentiles([o.latency_s for o in served if o.kind.channel == channel])
    latency["all_valid"] = _percentiles([o.latency_s for o in served])
    return {
        "requests": {"planned": planned, "sent": len(outcomes), "valid_sent": sum(o.kind.valid for o in outcomes),
                     "malformed_sent": sum(not o.kind.valid for o in outcomes), "by_kind": by_kind},
        "served": len(served),
        "expected_rejections": dict(expected_rejections.most_common()),
        "unexpected": dict(Counter(f"{o.kind.name}: {o.outcome}" for o in unexpected).most_common()),
        "unexpected_examples": [f"{o.kind.name}: {o.outcome} {o.detail}".strip() for o in unexpected[:20]],
        "web_5xx": sum(o.kind.channel == "web" and o.outcome.startswith("http_5") for o in outcomes),
        "latency_ms": latency,
        "timeline": [(round(o.finished_s, 3), round(o.latency_s * 1000, 2), o.kind.channel)
                     for o in sorted(served, key=lambda o: o.finished_s)],
    }


def _percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"count": 0}
    values = np.asarray(seconds) * 1000.0
    return {"count": len(values), "p50": round(float(np.percentile(values, 50)), 1),
            "p95": round(float(np.percentile(values, 95)), 1), "p99": round(float(np.percentile(values, 99)), 1),
            "max": round(float(values.max()), 1)}


def rss_table(results: dict) -> dict:
    """Per process: point readings (ready, warm, last) and the growth from the first to the last tenth.

    RSS of the web app and of tritonserver swings by tens of MB with what is in flight (decoded images,
    gRPC buffers), so a single reading at each end measures the swing, not a leak. Growth compares the
    median RSS of the first and of the last tenth of the soak's samples: a leak moves it, load does not.
    """
    samples = results["rss_samples"]
    tenth = max(1, len(samples) // 10)
    table = {}
    for process, warm in results["rss_warm_mb"].items():
        series = [s["rss_mb"].get(process) for s in samples]
        first, last = series[:tenth], series[-tenth:]
        alive = None not in first + last
        start = float(np.median(first)) if alive else None
        end = float(np.median(last)) if alive else None
        table[process] = {
            "ready_mb": _round(results["rss_ready_mb"].get(process)), "warm_mb": _round(warm),
            "last_mb": _round(series[-1]), "max_mb": _round(max((v for v in series if v is not None), default=None)),
            "first_tenth_mb": _round(start), "last_tenth_mb": _round(end),
            "growth": None if start is None or end is None else round((end - start) / start, 4),
        }
    return table


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _targets(results: dict) -> dict[str, bool]:
    growths = [row["growth"] for row in results["rss"].values()]
    return {
        "every_request_sent": results["requests"]["sent"] == results["requests"]["planned"],
        "no_unexpected_outcome": not results["unexpected"],
        "no_server_crash": not results["crash_events"],
        "no_web_5xx": results["web_5xx"] == 0,
        "rss_growth_below_10_percent": all(g is not None and g < RSS_GROWTH_TARGET for g in growths),
        "nothing_left_behind": not results["leftovers"],
        "listens_on_loopback_only": bool(results["listening"]) and all(map(is_loopback, results["listening"])),
    }


def is_loopback(address: str) -> bool:
    """``"label ip:port"`` listens on loopback only (gRPC reports 127.0.0.1 as IPv4-mapped IPv6)."""
    ip = ipaddress.ip_address(address.rsplit(" ", 1)[1].rsplit(":", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def _triton_statistics(http_url: str, admin_key: str) -> dict:
    """Triton's own per-model counters: successes, failures, and executions (batches actually run)."""
    import json

    from deepfake_edge.server.admin_key import admin_headers

    request = urllib.request.Request(f"http://{http_url}/v2/models/stats", headers=admin_headers(admin_key))
    try:
        with urllib.request.urlopen(request, timeout=10.0) as response:
            stats = json.load(response)
    except (OSError, ValueError) as error:
        return {"error": str(error)}
    table = {}
    for model in stats.get("model_stats", []):
        key = f"{model['name']} v{model['version']}"
        table[key] = {"inferences": model.get("inference_count", 0), "executions": model.get("execution_count", 0),
                      "success": model["inference_stats"]["success"]["count"],
                      "fail": model["inference_stats"]["fail"]["count"]}
    return table


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return str(value) if isinstance(value, Path) else value
