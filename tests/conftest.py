"""Shared pytest fixtures. Area-specific fixtures live in the area's own test files.

Session fixtures that several areas share (a model repository, a running Triton server) are defined
here once so the suite builds and starts them only once.
"""

from __future__ import annotations

import os

import pytest

# Two cores in CI: keep torch/onnxruntime from oversubscribing them when tests run servers alongside.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory):
    """A model repository exported from the demo checkpoints: its ROOT (``/embedded``, ``/ngc`` below).

    Models: deepfake_b0, deepfake_b0_int8, deepfake_cnn (embedded and ngc) and deepfake_b0_fp16 (ngc).
    Built the way ``deepfake-edge export`` builds it, with fewer images (the INT8 accuracy bound is
    checked in test_export_quantize.py, not here), no search for FP32 fallback units (the INT8 model is
    fully quantized) and no speed measurement, to stay fast.
    """
    from pathlib import Path

    from deepfake_edge.export.commands import DEFAULT_VARIANTS_FOR, DEMO_CHECKPOINTS
    from deepfake_edge.export.pipeline import ExportOptions, run_export
    from deepfake_edge.export.quantize import QuantizationRecipe

    root = tmp_path_factory.mktemp("demo_repository")
    checkpoints = [Path(__file__).resolve().parent.parent / path for path in DEMO_CHECKPOINTS]
    options = ExportOptions(out=root, int8=True, fp16=True, variants_for=DEFAULT_VARIANTS_FOR,
                            calibration_images=32, eval_images=16, check_int8=False, speed=False,
                            recipe=QuantizationRecipe(fp32_fallback=False))
    run_export(checkpoints, options)
    yield root


@pytest.fixture(scope="session")
def triton_server(demo_repository):
    """The real tritonserver on ``demo_repository``'s embedded models, on free 127.0.0.1 ports.

    Stopped at the end of the session (process group ended, its /dev/shm regions removed), also when
    tests fail.
    """
    from deepfake_edge.server.triton import TritonServer, free_port

    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with TritonServer(demo_repository / "embedded", startup_timeout_s=180, **ports) as server:
        yield server


# -- the attack table -------------------------------------------------------------------------------------
# Tests marked ``@pytest.mark.attack(ID, description)`` are the security suite. Their outcomes (and what
# each recorded with ``record_property("outcome", ...)``) are written to test-artifacts/security/attacks.json,
# from which ``python tests/security_report.py`` regenerates RELIABILITY.md's attack table.
_ATTACK_RESULTS: dict[str, dict] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("attack")
    if marker is None or (report.when != "call" and report.passed):
        return
    attack_id, description = marker.args
    row = _ATTACK_RESULTS.setdefault(item.nodeid, {"id": attack_id, "attack": description, "test": item.nodeid})
    if report.when == "call" or report.failed:
        row["result"] = "held" if report.passed else ("skipped" if report.skipped else "FAILED")
        docstring = (getattr(item, "function", None).__doc__ or "").strip().split("\n")[0]
        row["outcome"] = dict(item.user_properties).get("outcome") or docstring


def pytest_sessionfinish(session, exitstatus):
    if _ATTACK_RESULTS:
        import json
        from pathlib import Path

        folder = Path(__file__).resolve().parents[1] / "test-artifacts" / "security"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "attacks.json").write_text(json.dumps(sorted(_ATTACK_RESULTS.values(), key=lambda r: r["test"]),
                                                        indent=2, ensure_ascii=False))
