"""The exported graph: UINT8 image in, fake probability + logit + CAM heatmap out.

:class:`DetectorGraph` wraps any model that honours the ``deepfake_edge.models`` contract
(``forward_features`` -> last conv activation, global average pool, ``get_classifier()`` -> Linear(C, 1)).
Normalisation (from the ModelCard) and the heatmap live inside the graph, so a served request is the
preprocessed UINT8 crop and nothing else.

The heatmap is CAM: ``ReLU(sum_k w_k A_k)`` at the last conv activation ``A``, divided by its per-image
maximum. For a global-average-pool + linear head, Grad-CAM's channel weights are ``d logit / d A_k``
averaged over space, i.e. ``w_k / (h w)``: a positive constant times CAM's, so after the ReLU and the
per-image normalisation Grad-CAM and CAM are the same map (``tests/test_export_graph.py`` checks it
against autograd).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from deepfake_edge.model_card import ModelCard
from deepfake_edge.serving_contract import INPUT_NAME, OUTPUT_NAMES

# Floor for the per-image maximum: keeps an all-zero CAM at zero instead of 0/0 without rescaling real
# maps (an additive epsilon would shrink maps of small-activation models, e.g. untrained ones).
_CAM_FLOOR = 1e-12


class DetectorGraph(nn.Module):
    """``image`` UINT8 (N, 3, H, W) -> ``fake_probability`` (N, 1), ``logit`` (N, 1), ``heatmap`` (N, h, w)."""

    def __init__(self, model: nn.Module, card: ModelCard) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        # Same arithmetic, same order as deepfake_edge.preprocessing.normalize (parity to 1e-4 relies on it).
        return (image.to(torch.float32) / 255.0 - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.model.forward_features(self.normalize(image))
        classifier = self.model.get_classifier()
        logit = classifier(features.mean(dim=(2, 3)))
        cam = torch.relu(torch.einsum("nchw,c->nhw", features, classifier.weight[0]))
        peak = cam.amax(dim=(1, 2), keepdim=True)
        heatmap = cam / peak.clamp_min(_CAM_FLOOR)
        return torch.sigmoid(logit), logit, heatmap


def feature_map_size(model: nn.Module, input_size: int) -> tuple[int, int]:
    """Spatial size (h, w) of the last conv activation for an ``input_size`` square input."""
    with torch.no_grad():
        features = model.forward_features(torch.zeros(1, 3, input_size, input_size))
    return int(features.shape[2]), int(features.shape[3])


def export_onnx(model: nn.Module, card: ModelCard, path: str | Path, opset: int = 17,
                graph_class: type[DetectorGraph] = DetectorGraph, output_names: tuple[str, ...] = OUTPUT_NAMES) -> Path:
    """Write ``graph_class(model, card)`` (the served graph unless told otherwise; its outputs ``output_names``) to
    ``path`` as one self-contained ONNX file, batch axis dynamic.

    Uses the TorchScript exporter (``dynamo=False``): it writes a single file (the dynamo exporter
    splits weights into ``.onnx.data``), which keeps Triton version folders and quantization simple.
    """
    if opset < 17:
        raise ValueError(f"opset {opset} is too old: the export needs opset >= 17")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = graph_class(model, card).eval()
    example = torch.zeros(2, 3, card.input_size, card.input_size, dtype=torch.uint8)
    batch_axis = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is chosen on purpose
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes={name: batch_axis for name in (INPUT_NAME, *output_names)},
            do_constant_folding=True,
        )
    _attach_card(path, card)
    return path


def _attach_card(path: Path, card: ModelCard) -> None:
    """Store the ModelCard JSON in the ONNX metadata so a bare .onnx file stays self-describing."""
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "model_card", card.to_json()
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def read_onnx_card(path: str | Path) -> ModelCard:
    """The ModelCard stored in an exported ONNX file's metadata."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == "model_card":
            return ModelCard.from_json(entry.value)
    raise ValueError(f"{path} has no model_card metadata: not exported by deepfake-edge")
