"""Checks of an exported graph against PyTorch: parity, decision agreement, ROC-AUC, and speed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import normalize
from deepfake_edge.serving_contract import INPUT_NAME

EVAL_BATCH = 32


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def make_session(path: Path, threads: int | None = None):
    """A CPU onnxruntime session with all graph optimisations, ``threads`` intra-op threads (default: all cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_count()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_outputs(path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported graph over UINT8 images in batches; returns each output concatenated."""
    session = make_session(path)
    names = [output.name for output in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(images), EVAL_BATCH):
        for name, value in zip(names, session.run(names, {INPUT_NAME: images[start : start + EVAL_BATCH]})):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def torch_probabilities(model: nn.Module, card: ModelCard, images: np.ndarray) -> np.ndarray:
    """The reference: the PyTorch model on the shared normalisation, no export code involved."""
    results = []
    with torch.no_grad():
        for start in range(0, len(images), EVAL_BATCH):
            batch = normalize(torch.from_numpy(images[start : start + EVAL_BATCH]), card.mean, card.std)
            results.append(torch.sigmoid(model(batch)).reshape(-1).numpy())
    return np.concatenate(results)


def roc_auc(labels: np.ndarray | None, scores: np.ndarray) -> float | None:
    """ROC-AUC, or None without labels of both classes."""
    if labels is None or len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def compare(reference: np.ndarray, candidate: np.ndarray, threshold: float, labels: np.ndarray | None,
            tolerance: float = 0.0) -> dict:
    """How far ``candidate`` probabilities are from ``reference``: max/mean |Δp|, decision agreement, AUCs.

    ``decisions_differing_beyond_tolerance`` ignores images whose reference probability lies within
    ``tolerance`` of the threshold: there a rounding-level difference flips the decision by chance.
    """
    delta = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    agree = (reference >= threshold) == (candidate >= threshold)
    near_threshold = np.abs(reference.astype(np.float64) - threshold) <= tolerance
    reference_auc, candidate_auc = roc_auc(labels, reference), roc_auc(labels, candidate)
    return {
        "images": int(len(reference)),
        "max_abs_delta_probability": float(delta.max()),
        "mean_abs_delta_probability": float(delta.mean()),
        "decision_agreement": float(agree.mean()),
        "decisions_differing": int((~agree).sum()),
        "decisions_differing_beyond_tolerance": int((~agree & ~near_threshold).sum()),
        "reference_roc_auc": reference_auc,
        "roc_auc": candidate_auc,
        "roc_auc_delta": None if candidate_auc is None else candidate_auc - reference_auc,
    }


def measure_speeds(paths: dict[str, Path], input_size: int, batch_sizes: tuple[int, ...] = (1, 8, 32),
                   threads: int | None = None, rounds: int = 3, min_seconds: float = 0.5) -> dict[str, dict[str, dict]]:
    """Images/s of each graph at each batch size (random UINT8 input, after warm-up): {name: {batch: figures}}.

    The graphs take turns for ``rounds`` rounds and each keeps its best round's median, so that load
    from other processes, which comes and goes, slows every graph alike instead of whichever ran then.
    """
    sessions = {name: make_session(path, threads) for name, path in paths.items()}
    rng = np.random.default_rng(0)
    best: dict[str, dict[str, dict]] = {name: {} for name in paths}
    for batch in batch_sizes:
        feed = {INPUT_NAME: rng.integers(0, 256, (batch, 3, input_size, input_size), dtype=np.uint8)}
        for session in sessions.values():
            for _ in range(2):
                session.run(None, feed)
        for _ in range(rounds):
            for name, session in sessions.items():
                timings = []
                started = time.perf_counter()
                while len(timings) < 3 or time.perf_counter() - started < min_seconds:
                    tick = time.perf_counter()
                    session.run(None, feed)
                    timings.append(time.perf_counter() - tick)
                median_ms = float(np.median(timings) * 1000)
                if str(batch) not in best[name] or median_ms < best[name][str(batch)]["ms_per_batch"]:
                    best[name][str(batch)] = {"ms_per_batch": round(median_ms, 3),
                                              "images_per_s": round(batch / median_ms * 1000, 1)}
    return best
