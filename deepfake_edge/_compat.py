"""Import timm on the CPU-only torch build this project pins.

PyPI only carries CUDA builds of torchvision. With CPU torch its C extension does not load and
``import torchvision`` (hence ``import timm``) fails with ``operator torchvision::nms does not exist``
while registering fake kernels. Declaring the operator schemas first lets the pure-Python parts
import; the C++ ops stay unavailable, and nothing this project runs (EfficientNet, CNN) needs them.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_library = None  # kept alive: dropping the Library object unregisters the schemas


def _declare_torchvision_schemas() -> None:
    global _library
    import torch

    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)


def import_timm() -> ModuleType:
    """Return the ``timm`` module, applying the schema workaround only if the real import fails."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    try:
        importlib.import_module("torchvision")
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        _declare_torchvision_schemas()
        importlib.import_module("torchvision")
    return importlib.import_module("timm")
