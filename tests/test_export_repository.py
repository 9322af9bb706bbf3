"""Triton model repositories written by export: layout, configs under Triton's own schema, versions."""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepfake_edge.checkpoint import save_checkpoint
from deepfake_edge.cli import main
from deepfake_edge.export import repository
from deepfake_edge.export.commands import DEFAULT_MODELS
from deepfake_edge.export.evaluate import make_session
from deepfake_edge.export.pipeline import SUMMARY_FILE, ExportOptions, run_export
from deepfake_edge.model_card import INPUT_NAME, OUTPUT_NAMES, ModelCard
from deepfake_edge.models import build_model

EMBEDDED_MODELS = {"deepfake_b0": "fp32", "deepfake_b0_int8": "int8", "deepfake_cnn": "fp32"}
NGC_MODELS = {**EMBEDDED_MODELS, "deepfake_b0_fp16": "fp16"}


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def every_config(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/config.pbtxt"))


def test_every_config_parses_under_tritons_schema(demo_repository: Path) -> None:
    configs = every_config(demo_repository)
    assert {p.parent.name for p in configs if p.parent.parent.name == "embedded"} == set(EMBEDDED_MODELS)
    assert {p.parent.name for p in configs if p.parent.parent.name == "ngc"} == set(NGC_MODELS)
    for path in configs:
        parse_config(path)  # raises ParseError on any unknown field or bad value


@pytest.mark.parametrize("target", ["embedded", "ngc"])
def test_configs_follow_the_serving_contract(demo_repository: Path, target: str) -> None:
    for path in every_config(demo_repository / target):
        config = parse_config(path)
        card = ModelCard.from_json(config.parameters["model_card"].string_value)
        side = card.input_size
        assert config.name == path.parent.name
        assert config.max_batch_size == 32
        [image] = config.input
        assert ((image.name, image.data_type, list(image.dims))
                == ("image", model_config_pb2.TYPE_UINT8, [3, side, side]))
        outputs = {o.name: o for o in config.output}
        assert set(outputs) == {"fake_probability", "logit", "heatmap"}
        assert all(o.data_type == model_config_pb2.TYPE_FP32 for o in outputs.values())
        assert list(outputs["fake_probability"].dims) == [1] and list(outputs["logit"].dims) == [1]
        assert len(outputs["heatmap"].dims) == 2 and 0 < outputs["heatmap"].dims[0] <= side
        labels = (path.parent / outputs["fake_probability"].label_filename).read_text().split()
        assert labels == [card.labels[1]]
        assert (list(config.dynamic_batching.preferred_batch_size)
                and 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000)
        assert config.version_policy.latest.num_versions == 2
        assert {w.batch_size for w in config.model_warmup} == {1, 32}
        assert all(list(w.inputs["image"].dims) == [3, side, side] for w in config.model_warmup)
        assert card.extra["precision"] == NGC_MODELS[config.name]
        [group] = config.instance_group
        versions = repository.existing_versions(path.parent)
        assert versions and (path.parent / str(versions[-1]) / "model.onnx").is_file()
        if target == "embedded":
            assert config.backend == "python" and group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
            assert (path.parent / str(versions[-1]) / "model.py").is_file()
        else:
            assert config.platform == "onnxruntime_onnx" and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
            [accelerator] = config.optimization.execution_accelerators.gpu_execution_accelerator
            if card.extra["precision"] == "fp16":
                assert accelerator.name == "cuda"
            else:
                expected = "INT8" if card.extra["precision"] == "int8" else "FP16"
                assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == expected
                assert accelerator.parameters["trt_cuda_graph_enable"] == "1"


def test_python_backend_model_is_the_packaged_source(demo_repository: Path) -> None:
    for model_py in (demo_repository / "embedded").glob("*/*/model.py"):
        assert filecmp.cmp(model_py, repository.PYTHON_MODEL_SOURCE, shallow=False)
        source = model_py.read_text()
        assert "deepfake_edge" not in source.split('"""', 2)[2], "model.py must not import the project package"


def test_summary_is_written_beside_the_models(demo_repository: Path) -> None:
    summary = json.loads((demo_repository / SUMMARY_FILE).read_text())
    assert set(summary["models"]) == {"deepfake_b0", "deepfake_cnn"}
    for model in summary["models"].values():
        assert model["parity_fp32_vs_pytorch"]["max_abs_delta_probability"] <= 1e-4
        for entry in model["files"].values():
            assert Path(entry["path"]).stat().st_size == entry["bytes"]
    assert (demo_repository / "embedded" / "deepfake_b0" / "1" / SUMMARY_FILE).is_file()


@pytest.fixture()
def small_checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "cnn.safetensors", build_model("small_cnn"),
                           ModelCard(arch="small_cnn", input_size=64, resize_size=72))


def test_reexport_adds_a_version_and_keeps_the_old_one(small_checkpoint: Path, tmp_path: Path,
                                                       image_folder: Path) -> None:
    options = ExportOptions(out=tmp_path / "repo", eval_images=8, speed=False, data=image_folder)
    run_export([small_checkpoint], options)
    model_dir = tmp_path / "repo" / "embedded" / "deepfake_cnn"
    first = (model_dir / "1" / "model.onnx").read_bytes()
    run_export([small_checkpoint], options)
    assert repository.existing_versions(model_dir) == [1, 2]
    assert (model_dir / "1" / "model.onnx").read_bytes() == first
    assert repository.is_complete(tmp_path / "repo" / "embedded", ("deepfake_cnn",))
    assert repository.existing_versions(tmp_path / "repo" / "ngc" / "deepfake_cnn") == [1, 2]
    # Both versions stay loaded (latest 2) under the rewritten config: the old one must still fit it.
    config = parse_config(model_dir / "config.pbtxt")
    assert config.version_policy.latest.num_versions >= 2
    for version in (1, 2):
        session = make_session(model_dir / str(version) / "model.onnx", threads=1)
        batch = np.zeros((2, *config.input[0].dims), dtype=np.uint8)
        outputs = session.run([o.name for o in config.output], {config.input[0].name: batch})
        assert [list(o.shape[1:]) for o in outputs] == [list(o.dims) for o in config.output]


def test_reexport_with_other_tensor_shapes_is_refused(small_checkpoint: Path, tmp_path: Path,
                                                      image_folder: Path) -> None:
    data = image_folder
    run_export([small_checkpoint], ExportOptions(out=tmp_path / "repo", eval_images=8, speed=False, data=data))
    bigger = save_checkpoint(tmp_path / "big.safetensors", build_model("small_cnn"),
                             ModelCard(arch="small_cnn", input_size=96, resize_size=110))
    with pytest.raises(ValueError, match="fresh --out"):
        run_export([bigger], ExportOptions(out=tmp_path / "repo", eval_images=8, speed=False, data=data))
    assert repository.existing_versions(tmp_path / "repo" / "embedded" / "deepfake_cnn") == [1]
    # What `make serve` (--if-missing) does after a demo was retrained at another input size.
    run_export([bigger], ExportOptions(out=tmp_path / "repo", eval_images=8, speed=False, data=data,
                                       replace_incompatible=True))
    for target in (repository.EMBEDDED, repository.NGC):
        model_dir = tmp_path / "repo" / target / "deepfake_cnn"
        assert repository.existing_versions(model_dir) == [1]
        assert list(parse_config(model_dir / "config.pbtxt").input[0].dims) == [3, 96, 96]
        assert make_session(model_dir / "1" / "model.onnx", threads=1).get_inputs()[0].shape[2:] == [96, 96]


def test_if_missing_leaves_a_complete_repository_alone(demo_repository: Path, capsys) -> None:
    before = {p: p.stat().st_mtime_ns for p in (demo_repository / "embedded").rglob("*")}
    assert main(["export", "--if-missing", "--out", str(demo_repository)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (demo_repository / "embedded").rglob("*")} == before


def test_a_checkpoint_newer_than_its_export_makes_the_repository_stale(demo_repository: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "retrained.safetensors"
    checkpoint.write_bytes(b"weights")
    embedded = demo_repository / "embedded"
    exported = max(p.stat().st_mtime for p in embedded.rglob("model.onnx"))
    os.utime(checkpoint, (exported - 60, exported - 60))
    assert repository.is_complete(embedded, DEFAULT_MODELS, (checkpoint,))
    os.utime(checkpoint, (exported + 60, exported + 60))  # as after `git pull` or `make demo-model`
    assert not repository.is_complete(embedded, DEFAULT_MODELS, (checkpoint,))


def test_cli_rejects_missing_checkpoint(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path / "nope.safetensors"), "--out", str(tmp_path)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    """A few unlabelled images: enough for the parity check of a re-export."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


def test_names_and_defaults_restated_outside_the_package_match_it(capsys) -> None:
    # triton_model.py must run without deepfake_edge, and `export --help` must not import the exporter.
    namespace: dict = {}
    source = (Path(repository.__file__).parent / "triton_model.py").read_text()
    exec("\n".join(line for line in source.splitlines() if line.startswith(("INPUT_NAME", "OUTPUT_NAMES"))), namespace)
    assert (namespace["INPUT_NAME"], namespace["OUTPUT_NAMES"]) == (INPUT_NAME, OUTPUT_NAMES)
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert f"(default: {repository.DEFAULT_CPU_INSTANCES}," in " ".join(capsys.readouterr().out.split())
