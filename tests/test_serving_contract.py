"""The serving contract (deepfake_edge/serving_contract.py) and the places that must agree with it."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
from google.protobuf import json_format, text_format
from PIL import Image

from deepfake_edge import serving_contract as contract
from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import SUPPORTED_FORMATS, load_image

ROOT = Path(__file__).resolve().parents[1]
TRITON_MODEL = ROOT / "export" / "triton_model.py"


# -- tensor names and session settings: export/triton_model.py repeats / holds them -------------------------

def test_the_served_model_imports_nothing_of_the_package():
    tree = ast.parse(TRITON_MODEL.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [name for name in imported if name.startswith("deepfake_edge")]


def test_the_served_models_tensor_names_are_the_contracts():
    from deepfake_edge.export import triton_model

    assert triton_model.INPUT_NAME == contract.INPUT_NAME
    assert triton_model.OUTPUT_NAMES == contract.OUTPUT_NAMES
    assert (contract.PROBABILITY_OUTPUT, contract.LOGIT_OUTPUT, contract.HEATMAP_OUTPUT) == contract.OUTPUT_NAMES


def test_the_engine_benchmark_opens_sessions_with_the_served_models_settings():
    from deepfake_edge.benchmarks import engine
    from deepfake_edge.export import triton_model

    options = contract.session_options(3)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.graph_optimization_level == triton_model.session_options(3).graph_optimization_level
    assert engine.session_options is contract.session_options  # no mirror left in the benchmark
    assert engine.server_providers() == contract.auto_providers()
    assert contract.auto_providers()[-1] == "CPUExecutionProvider"


@pytest.mark.parametrize("groups, threads_parameter", [([], "0"), ([{"count": 2}], "0"), ([{"count": 2}], "3"),
                                                        ([{"count": 1}, {"count": 3}], "")])
def test_thread_and_instance_rules_are_the_served_models(groups, threads_parameter):
    from deepfake_edge.export import triton_model

    config = http_config()
    config["instance_group"] = groups
    config["parameters"]["intra_op_threads"] = {"string_value": threads_parameter}
    info = contract.parse_model_config("m", config)
    assert info.instances == triton_model._instance_count(config)
    requested = int(threads_parameter or 0)
    cores = len(os.sched_getaffinity(0))
    expected = requested if requested > 0 else max(1, cores // info.instances)
    assert contract.intra_op_threads(info) == expected


# -- ports and names ----------------------------------------------------------------------------------------

def test_docker_compose_publishes_the_contracts_ports():
    published = re.findall(r':(\d+):(\d+)"', (ROOT / "docker-compose.yml").read_text())
    ports = {int(host) for host, container in published if host == container}
    assert {contract.HTTP_PORT, contract.GRPC_PORT, contract.METRICS_PORT} <= ports


def test_default_urls():
    assert contract.default_url("grpc") == "127.0.0.1:8001" and contract.default_url("http") == "127.0.0.1:8000"
    with pytest.raises(ValueError):
        contract.default_url("metrics")
    from deepfake_edge.client.triton_io import normalize_url

    assert normalize_url(None, "http") == contract.default_url("http")


def test_model_names():
    assert (contract.DEFAULT_MODEL, contract.INT8_MODEL, contract.FP16_MODEL, contract.CNN_MODEL) == (
        "deepfake_b0", "deepfake_b0_int8", "deepfake_b0_fp16", "deepfake_cnn")
    assert contract.model_name_for_arch("resnet18") == "deepfake_resnet18"
    for precision in contract.PRECISIONS:
        name = contract.variant_name("deepfake_cnn", precision)
        assert contract.precision_of(name) == precision and contract.base_name(name) == "deepfake_cnn"
    from deepfake_edge.export.commands import DEFAULT_MODELS

    assert set(DEFAULT_MODELS) == {contract.DEFAULT_MODEL, contract.INT8_MODEL, contract.CNN_MODEL}


# -- image files --------------------------------------------------------------------------------------------

def test_one_set_of_image_extensions_is_used_everywhere():
    from deepfake_edge.client import sources
    from deepfake_edge.export import calibration
    from deepfake_edge.training import datasets, photos

    for module in (sources, calibration, datasets, photos):
        assert module.IMAGE_EXTENSIONS is contract.IMAGE_EXTENSIONS, module.__name__
    registered = Image.registered_extensions()
    assert {registered[extension] for extension in contract.IMAGE_EXTENSIONS} == set(SUPPORTED_FORMATS)
    assert {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
            ".ico", ".tga"} <= contract.IMAGE_EXTENSIONS
    assert contract.is_image_file("A/B.JPG") and not contract.is_image_file("notes.txt")


_MODE_FOR = {".pbm": "1", ".pgm": "L", ".pfm": "F"}


@pytest.mark.parametrize("extension", sorted(contract.IMAGE_EXTENSIONS))
def test_every_listed_extension_opens_with_preprocessing(tmp_path, extension):
    image = Image.new("RGB", (16, 12), (200, 30, 60))
    if extension in _MODE_FOR:
        image = image.convert(_MODE_FOR[extension])
    path = tmp_path / f"tiny{extension}"
    image.save(path, format=contract.IMAGE_FORMAT_BY_EXTENSION[extension])
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (16, 12)


# -- ModelInfo from a served model's config -----------------------------------------------------------------

def _spec(card: ModelCard):
    from deepfake_edge.export import repository

    return repository.ModelSpec("deepfake_b0_int8", Path("unused.onnx"), card, (7, 7), "int8")


def http_config(card: ModelCard | None = None) -> dict:
    """What Triton's HTTP API answers for an exported embedded model."""
    from deepfake_edge.export import repository

    card = card or ModelCard(arch="efficientnet_b0", input_size=224, extra={"precision": "int8"})
    return json_format.MessageToDict(repository.embedded_config(_spec(card), instances=2),
                                     preserving_proto_field_name=True)


@pytest.mark.parametrize("style", ["http", "grpc"])
def test_model_info_parses_both_protocols_configs(style):
    config = http_config()
    info = contract.parse_model_config("deepfake_b0_int8", config if style == "http" else {"config": config})
    assert info.card.arch == "efficientnet_b0" and info.input_shape == (3, 224, 224)
    assert (info.max_batch_size, info.instances, info.precision) == (32, 2, "int8")
    assert info.max_queue_delay_us > 0 and info.parameters["execution_provider"] == "auto"
    assert info.request_bytes_per_image == 3 * 224 * 224
    assert info.preprocessor.input_size == 224


def test_model_info_from_a_repository_config(tmp_path):
    from deepfake_edge.export import repository

    card = ModelCard(arch="small_cnn", input_size=96, resize_size=110)
    model_dir = tmp_path / "deepfake_cnn"
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(repository.embedded_config(_spec(card))))
    info = contract.parse_model_config("deepfake_cnn", contract.read_repository_config(model_dir))
    assert info.card == card and info.input_shape == (3, 96, 96) and info.precision == "fp32"
    assert info.instances == repository.DEFAULT_CPU_INSTANCES


def test_a_config_that_breaks_the_contract_is_refused():
    from deepfake_edge.client import ModelInfo, ServerError
    from deepfake_edge.client.triton_io import parse_model_config as client_parse

    assert ModelInfo is contract.ModelInfo
    config = http_config()
    del config["parameters"]["model_card"]
    with pytest.raises(contract.ModelConfigError, match="no 'model_card'"):
        contract.parse_model_config("m", config)
    with pytest.raises(ServerError, match="no 'model_card'"):
        client_parse("m", config)
    config = http_config()
    config["input"][0]["dims"] = ["3", "100", "100"]
    with pytest.raises(contract.ModelConfigError, match="disagree"):
        contract.parse_model_config("m", config)


# -- versions -----------------------------------------------------------------------------------------------

def test_latest_version_lookup(tmp_path):
    model_dir = tmp_path / "deepfake_b0"
    assert contract.model_versions(model_dir) == [] and contract.latest_version_dir(model_dir) is None
    for name in ("1", "2", "10", "abc", "3x"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "11").write_text("a file, not a version")
    assert contract.model_versions(model_dir) == [1, 2, 10]
    assert contract.latest_version_dir(model_dir) == model_dir / "10"


def test_the_benchmark_reads_a_repository_model_through_the_contract(tmp_path):
    from deepfake_edge.benchmarks.served import read_served_model
    from deepfake_edge.export import repository

    card = ModelCard(arch="efficientnet_b0")
    model_dir = tmp_path / "deepfake_b0_int8"
    for version in ("1", "2"):
        (model_dir / version).mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(repository.embedded_config(_spec(card))))
    served = read_served_model(tmp_path, "deepfake_b0_int8")
    info = contract.parse_model_config("deepfake_b0_int8", contract.read_repository_config(model_dir))
    assert served.onnx_path == model_dir / "2" / "model.onnx"
    assert (served.card, served.instances, served.max_batch_size) == (card, info.instances, info.max_batch_size)
    assert served.intra_op_threads == contract.intra_op_threads(info)
