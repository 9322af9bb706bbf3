"""INT8 (static, FP32 fallback, checked against FP32 on labelled images) and FP16 (valid ONNX, contract IO)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import pytest

from deepfake_edge.checkpoint import load_checkpoint, read_card
from deepfake_edge.export import int8_recipe
from deepfake_edge.export.calibration import load_image_set, synthesize_small_dataset
from deepfake_edge.export.commands import DEMO_CHECKPOINTS
from deepfake_edge.export.evaluate import compare, onnx_outputs
from deepfake_edge.export.fallback import SEARCH_MIN_AGREEMENT, quantize_with_fallback
from deepfake_edge.export.graph import export_onnx
from deepfake_edge.export.pipeline import int8_problems
from deepfake_edge.export.quantize import QuantizationRecipe, backbone_units, convert_fp16, prepare, quantize_int8
from deepfake_edge.model_card import ModelCard

DEMO_B0 = Path(__file__).resolve().parent.parent / DEMO_CHECKPOINTS[0]
EVAL_IMAGES = 200  # one flipped decision is 0.5 %: the 99 % bound is then a statement, not a coin toss


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small self-blended real/fake dataset (train/validation/test), as `deepfake-edge data synth` makes it."""
    return synthesize_small_dataset(tmp_path_factory.mktemp("synth"), calibration_images=64, eval_images=EVAL_IMAGES,
                                    image_size=read_card(DEMO_B0).resize_size)


@pytest.fixture(scope="module")
def demo_fp32(tmp_path_factory) -> tuple[ModelCard, Path]:
    """The committed demo B0 detector exported to FP32 ONNX: a trained model, so accuracy means something."""
    model, card = load_checkpoint(DEMO_B0)
    return card, export_onnx(model, card, tmp_path_factory.mktemp("int8") / "demo_b0.onnx")


def _probabilities(path: Path, images: np.ndarray) -> np.ndarray:
    return onnx_outputs(path, images)["fake_probability"].reshape(-1)


def test_int8_search_meets_its_margin_and_the_shipped_recipe_the_accuracy_bound(demo_fp32, dataset: Path,
                                                                                 tmp_path: Path) -> None:
    """The FP32-fallback search, run here on 200 validation images, picks units that meet its margin there; the
    units `export` shipped for the demo B0 (models/demo/efficientnet_b0.int8.json, searched on 400) keep this
    test split's decisions within the bound. The small search alone does not carry over for every checkpoint:
    for the fifth-epoch B0 it kept 8 units and agreed on 98.5 % of these test images (3 of 200 flipped)."""
    card, fp32_path = demo_fp32
    calibration = load_image_set(card, dataset, "train", 64)
    validation = load_image_set(card, dataset, "validation", EVAL_IMAGES)
    test = load_image_set(card, dataset, "test", EVAL_IMAGES)
    choice = quantize_with_fallback(fp32_path, tmp_path / "searched.onnx", calibration.images, validation.images,
                                    validation.labels, card.threshold, QuantizationRecipe())
    # The search's own record: the all-INT8 candidate was tried first, the chosen one met the margin on validation.
    assert choice.trials[0]["fp32_units"] == 0
    chosen = [t for t in choice.trials if t["fp32_units"] == len(choice.fp32_units)]
    assert not choice.fp32_units or chosen[-1]["decision_agreement"] >= SEARCH_MIN_AGREEMENT
    assert set(choice.fp32_units) <= set(choice.sensitivity)

    shipped, why = int8_recipe.load(DEMO_B0, QuantizationRecipe().describe())
    assert shipped is not None, why
    int8_path = quantize_int8(fp32_path, tmp_path / "shipped.onnx", calibration.images, fp32_units=shipped.fp32_units)
    reference = _probabilities(fp32_path, test.images)
    assert np.std(reference) > 0.01, "probabilities must spread, or agreement proves nothing"
    report = compare(reference, _probabilities(int8_path, test.images), card.threshold, test.labels)
    assert not int8_problems(report), (report, shipped.fp32_units)


def test_fallback_keeps_the_chosen_units_fp32(demo_fp32, dataset: Path, tmp_path: Path) -> None:
    card, fp32_path = demo_fp32
    units = backbone_units(onnx.load(str(prepare(fp32_path, tmp_path / "prepared.onnx"))))
    assert {"conv_stem", "blocks.0.0", "blocks.6.0", "conv_head"} <= set(units)
    calibration = load_image_set(card, dataset, "train", 16)
    int8_path = quantize_int8(fp32_path, tmp_path / "int8.onnx", calibration.images, fp32_units=("blocks.0.0",))
    convs = {n.name: n for n in onnx.load(str(int8_path)).graph.node if n.op_type == "Conv"}
    # A quantized Conv reads dequantized weights; an FP32 one reads its float initializer directly.
    quantized = {name for name, node in convs.items() if node.input[1].endswith("_DequantizeLinear_Output")}
    assert quantized and not quantized & set(units["blocks.0.0"])
    assert set(units["blocks.1.0"]) & quantized
    with pytest.raises(ValueError, match="unknown units"):
        quantize_int8(fp32_path, tmp_path / "bad.onnx", calibration.images, fp32_units=("blocks.99.0",))


def test_int8_is_static_quantization(demo_fp32, dataset: Path, tmp_path: Path) -> None:
    card, fp32_path = demo_fp32
    calibration = load_image_set(card, dataset, "train", 16)
    recipe = dataclasses.replace(QuantizationRecipe(), fp32_fallback=False)
    int8_path = quantize_int8(fp32_path, tmp_path / "int8.onnx", calibration.images, recipe)
    model = onnx.load(str(int8_path))
    ops = {node.op_type for node in model.graph.node}
    assert "QuantizeLinear" in ops or "QLinearConv" in ops
    assert not ops & {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}, "dynamic quantization must not ship"
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {e.key for e in model.metadata_props} == {"model_card"}


def test_fp16_is_valid_onnx_with_contract_io(demo_fp32, dataset: Path, tmp_path: Path) -> None:
    card, fp32_path = demo_fp32
    fp16_path = convert_fp16(fp32_path, tmp_path / "fp16.onnx")
    model = onnx.load(str(fp16_path))
    onnx.checker.check_model(model, full_check=True)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in model.graph.output)
    initializers = [i for i in model.graph.initializer
                    if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert sum(i.data_type == onnx.TensorProto.FLOAT16 for i in initializers) > len(initializers) // 2
    assert fp16_path.stat().st_size < 0.6 * fp32_path.stat().st_size

    test = load_image_set(card, dataset, "test", 16)
    reference, half = onnx_outputs(fp32_path, test.images), onnx_outputs(fp16_path, test.images)
    np.testing.assert_allclose(half["fake_probability"], reference["fake_probability"], atol=1e-2)
    # The CAM sums 1280 channel terms that largely cancel: in FP16 single cells of a map move by 0.1
    # and more on the demo B0 while the maps as a whole stay put (mean |Δ| < 1e-3 on 400 test images).
    heatmap_error = np.abs(half["heatmap"] - reference["heatmap"])
    assert heatmap_error.mean() < 2e-3 and heatmap_error.max() < 0.15, (heatmap_error.mean(), heatmap_error.max())


def test_the_throwaway_set_is_made_at_the_largest_resize_size(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    """Without data/synth, export synthesizes its images at the models' resize size (none is upscaled)."""
    from PIL import Image

    from deepfake_edge.export import pipeline

    b0_size = read_card(DEMO_B0).resize_size
    assert Image.open(next((dataset / "train" / "Real").iterdir())).size == (b0_size, b0_size)

    class Asked(Exception):
        pass

    def record(out_dir, calibration_images, eval_images, image_size):
        raise Asked(image_size)

    monkeypatch.setattr(pipeline, "synthesize_small_dataset", record)
    monkeypatch.chdir(tmp_path)  # no data/synth here
    checkpoints = [Path(__file__).resolve().parent.parent / path for path in DEMO_CHECKPOINTS]
    with pytest.raises(Asked) as asked:
        pipeline.run_export(checkpoints, pipeline.ExportOptions(out=tmp_path / "repository"))
    assert asked.value.args == (max(read_card(path).resize_size for path in checkpoints),)
