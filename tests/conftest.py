"""Shared pytest fixtures. Area-specific fixtures live in the area's own test files.

Session fixtures that several areas share (a model repository, a running Triton server) are defined
here once so the suite builds and starts them only once.
"""

from __future__ import annotations

import os

# Two cores in CI: keep torch/onnxruntime from oversubscribing them when tests run servers alongside.
os.environ.setdefault("OMP_NUM_THREADS", "2")
