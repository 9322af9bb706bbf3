"""The exported ONNX graph: parity with PyTorch, dynamic batch, and CAM == Grad-CAM by autograd."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deepfake_edge.export.evaluate import compare, onnx_outputs, torch_probabilities
from deepfake_edge.export.graph import export_onnx, feature_map_size, read_onnx_card
from deepfake_edge.model_card import ModelCard
from deepfake_edge.models import build_model
from deepfake_edge.preprocessing import normalize
from deepfake_edge.serving_contract import INPUT_NAME, OUTPUT_NAMES

INPUT_SIZE = 96
ARCHS = ("efficientnet_b0", "small_cnn")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, ModelCard, Path]]:
    """Each arch, randomly initialised (seeded), exported once at 96 px with a non-default mean/std."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("graph")
    result = {}
    for arch in ARCHS:
        model = build_model(arch).eval()
        card = ModelCard(arch=arch, input_size=INPUT_SIZE, resize_size=110, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
        result[arch] = (model, card, export_onnx(model, card, folder / f"{arch}.onnx"))
    return result


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (6, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.uint8)


def grad_cam(model: torch.nn.Module, card: ModelCard, images: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al.) of the fake logit at the last conv activation, by autograd.

    Channel weights are the spatially averaged gradients of the logit with respect to the activation;
    the map is ReLU(sum_k weight_k * A_k), normalised per image by its maximum.
    """
    activations: list[torch.Tensor] = []
    handle_owner = model.forward_features

    def capture(x: torch.Tensor) -> torch.Tensor:
        features = handle_owner(x)
        features.retain_grad()
        activations.append(features)
        return features

    model.forward_features = capture  # the instance attribute shadows the method for this call only
    try:
        batch = normalize(torch.from_numpy(images), card.mean, card.std)
        logits = model(batch)
        logits.sum().backward()  # images are independent: the sum's gradient is each image's own
    finally:
        del model.forward_features
    features = activations[0]
    weights = features.grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * features).sum(dim=1))
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return (cam / peak.clamp_min(1e-12)).detach().numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_fp32_parity_with_pytorch(exported, images, arch) -> None:
    model, card, path = exported[arch]
    reference = torch_probabilities(model, card, images)
    probabilities = onnx_outputs(path, images)["fake_probability"].reshape(-1)
    report = compare(reference, probabilities, card.threshold, labels=None)
    assert report["max_abs_delta_probability"] <= 1e-4
    assert report["decisions_differing"] == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_graph_contract(exported, arch) -> None:
    model, card, path = exported[arch]
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in proto.graph.output)
    assert read_onnx_card(path) == card
    assert len(list(path.parent.glob(f"{path.name}.data"))) == 0  # one self-contained file


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_axis_is_dynamic_and_images_are_independent(exported, images, arch) -> None:
    _, card, path = exported[arch]
    together = onnx_outputs(path, images)
    for index in (0, 3):
        alone = onnx_outputs(path, images[index : index + 1])
        for name in OUTPUT_NAMES:
            np.testing.assert_allclose(alone[name][0], together[name][index], atol=1e-5)
    heatmaps = together["heatmap"]
    assert heatmaps.shape == (len(images), *feature_map_size(exported[arch][0], card.input_size))
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    np.testing.assert_allclose(together["logit"],
                               np.log(together["fake_probability"] / (1 - together["fake_probability"])), atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_heatmap_equals_autograd_grad_cam(exported, images, arch) -> None:
    model, card, path = exported[arch]
    expected = grad_cam(model, card, images)
    heatmaps = onnx_outputs(path, images)["heatmap"]
    non_trivial = np.isclose(expected.reshape(len(images), -1).max(axis=1), 1.0).sum()
    assert non_trivial >= len(images) // 2, "most maps should be non-zero, or the comparison proves little"
    np.testing.assert_allclose(heatmaps, expected, atol=1e-4)


def test_opset_below_17_is_refused(exported, tmp_path) -> None:
    model, card, _ = exported["small_cnn"]
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, card, tmp_path / "old.onnx", opset=16)
