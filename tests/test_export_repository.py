"""Triton model repositories written by export: layout, configs, versions.

The configs are checked without the protobuf schema that wrote them: ``read_pbtxt`` below reads the text
format on its own, the expected values come from the checkpoints and the exported ONNX graphs, and the
running tritonserver reports how it read each config (``test_triton_reads_each_config_as_written``).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deepfake_edge.checkpoint import read_card, save_checkpoint
from deepfake_edge.cli import main
from deepfake_edge.export import repository
from deepfake_edge.export.commands import DEFAULT_MODELS, DEMO_CHECKPOINTS
from deepfake_edge.export.evaluate import make_session
from deepfake_edge.export.graph import read_onnx_card
from deepfake_edge.export.pipeline import SUMMARY_FILE, ExportOptions, run_export
from deepfake_edge.model_card import INPUT_NAME, OUTPUT_NAMES, ModelCard
from deepfake_edge.models import build_model

EMBEDDED_MODELS = {"deepfake_b0": "fp32", "deepfake_b0_int8": "int8", "deepfake_cnn": "fp32"}
# The encoded-image ensemble, its decoding step and the whole-image analysis model, embedded only
# (tests/test_encoded_images.py and tests/test_encoded_whole_image.py serve them).
IMAGE_MODELS = {"deepfake_image", "deepfake_image_decode", "deepfake_image_whole"}
NGC_MODELS = {**EMBEDDED_MODELS, "deepfake_b0_fp16": "fp16"}
ROOT = Path(__file__).resolve().parents[1]
# Which demo checkpoint each served model comes from.
CHECKPOINT_OF = {"deepfake_b0": ROOT / DEMO_CHECKPOINTS[0], "deepfake_cnn": ROOT / DEMO_CHECKPOINTS[1]}
ONNX_TYPES = {onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.FLOAT: "TYPE_FP32"}


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def every_config(root: Path) -> list[Path]:
    return sorted(root.glob("*/*/config.pbtxt"))


def detector_configs(target: Path) -> list[Path]:
    """The detectors' configs in one target (``embedded`` or ``ngc``): every model but the encoded-image ones."""
    return sorted(path for path in target.glob("*/config.pbtxt") if path.parent.name not in IMAGE_MODELS)


# -- an independent reader of protobuf text format ------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:#[^\n]*|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{}\[\]:,<>;])|([^\s{}\[\]:,<>;"'#]+))""")


def read_pbtxt(text: str) -> dict[str, list]:
    """Protobuf text format read without any schema: every field maps to the list of its values (a
    repeated field appears once per value); messages are such dicts, strings are unescaped, numbers are
    int/float and enum names and booleans stay as written. Raises ValueError on malformed text."""
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip():
                raise ValueError(f"unreadable text at {position}: {text[position:position + 40]!r}")
            break
        position = match.end()
        string, punctuation, word = match.groups()
        if string is not None:
            tokens.append(("string", codecs.escape_decode(string[1:-1].encode())[0].decode("utf-8")))
        elif punctuation is not None:
            tokens.append(("punct", punctuation))
        elif word is not None:
            tokens.append(("word", word))
    tokens.append(("end", ""))
    index = 0

    def scalar() -> object:
        nonlocal index
        kind, value = tokens[index]
        index += 1
        if kind == "string":  # adjacent literals concatenate
            while tokens[index][0] == "string":
                value += tokens[index][1]
                index += 1
            return value
        if kind != "word":
            raise ValueError(f"expected a value, got {value!r}")
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
        return value

    def message(closing: str) -> dict[str, list]:
        nonlocal index
        fields: dict[str, list] = {}
        while tokens[index] != ("punct", closing) and not (closing == "" and tokens[index][0] == "end"):
            kind, name = tokens[index]
            if kind != "word":
                raise ValueError(f"expected a field name, got {name!r}")
            index += 1
            if tokens[index] == ("punct", ":"):
                index += 1
            values = fields.setdefault(name, [])
            if tokens[index] in (("punct", "{"), ("punct", "<")):
                close = "}" if tokens[index][1] == "{" else ">"
                index += 1
                values.append(message(close))
                index += 1
            elif tokens[index] == ("punct", "["):
                index += 1
                while tokens[index] != ("punct", "]"):
                    if tokens[index] == ("punct", "{"):
                        index += 1
                        values.append(message("}"))
                        index += 1
                    else:
                        values.append(scalar())
                    if tokens[index] == ("punct", ","):
                        index += 1
                index += 1
            else:
                values.append(scalar())
            if tokens[index] in (("punct", ","), ("punct", ";")):
                index += 1
        return fields

    result = message("")
    if tokens[index][0] != "end":
        raise ValueError(f"unbalanced text near token {index}")
    return result


def one(message: dict[str, list], name: str) -> object:
    """The single value of a non-repeated field (an error when absent or repeated)."""
    values = message.get(name, [])
    assert len(values) == 1, f"{name}: expected exactly one value, found {values!r}"
    return values[0]


def as_map(message: dict[str, list], name: str) -> dict[str, object]:
    """A protobuf map field (repeated ``{key: ... value: ...}`` entries) as a dict."""
    entries = {one(entry, "key"): one(entry, "value") for entry in message.get(name, [])}
    assert len(entries) == len(message.get(name, [])), f"{name}: a key appears twice"
    return entries


def test_the_text_reader_reads_what_it_is_given() -> None:
    parsed = read_pbtxt('name: "a\\"b" dims: 3 dims: [4, 5] # a comment\n'
                        'kind: KIND_CPU ratio: 0.5 group { count: 2 } group < count: 3 > '
                        'parameters { key: "k" value { string_value: "v" } }')
    assert parsed["name"] == ['a"b'] and parsed["dims"] == [3, 4, 5] and parsed["kind"] == ["KIND_CPU"]
    assert parsed["ratio"] == [0.5] and [one(g, "count") for g in parsed["group"]] == [2, 3]
    assert as_map(parsed, "parameters") == {"k": {"string_value": ["v"]}}
    with pytest.raises(ValueError):
        read_pbtxt("input { name: ")


def _onnx_tensors(path: Path) -> dict[str, tuple[str, list]]:
    """name -> (Triton data type, dims without the batch axis) of an ONNX graph's inputs and outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    tensors = {}
    for value in [v for v in graph.input if v.name not in initializers] + list(graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in value.type.tensor_type.shape.dim]
        assert isinstance(dims[0], str), f"{value.name}: the batch axis must be dynamic, got {dims}"
        tensors[value.name] = (ONNX_TYPES[value.type.tensor_type.elem_type], dims[1:])
    return tensors


def versions_on_disk(model_dir: Path) -> list[int]:
    """The numbered version folders of a model, as Triton lists them (read here, not through the writer)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(child.name) for child in model_dir.iterdir() if child.is_dir() and child.name.isdigit())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_model_has_a_config_readable_without_the_schema(demo_repository: Path) -> None:
    configs = every_config(demo_repository)
    assert {p.parent.name for p in configs if p.parent.parent.name == "embedded"} == set(EMBEDDED_MODELS) | IMAGE_MODELS
    assert {p.parent.name for p in configs if p.parent.parent.name == "ngc"} == set(NGC_MODELS)
    for path in configs:
        config = read_pbtxt(path.read_text())
        assert one(config, "name") == path.parent.name
        parse_config(path)  # and under Triton's schema (tritonclient's copy of model_config.proto)


@pytest.mark.parametrize("target", ["embedded", "ngc"])
def test_configs_follow_the_serving_contract(demo_repository: Path, target: str) -> None:
    """Each value is checked against a source other than the writer: the checkpoint's card, the ONNX graph
    that Triton will feed, and literal serving settings."""
    configs = detector_configs(demo_repository / target)
    # (This test used to glob two levels below the target, found no config and checked nothing.)
    assert {path.parent.name for path in configs} == set(EMBEDDED_MODELS if target == "embedded" else NGC_MODELS)
    for path in configs:
        config = read_pbtxt(path.read_text())
        name = path.parent.name
        precision = NGC_MODELS[name]
        versions = versions_on_disk(path.parent)
        latest = path.parent / str(versions[-1])
        assert versions and (latest / "model.onnx").is_file()

        # The model_card parameter round-trips to the checkpoint's card, plus the precision served.
        checkpoint_card = read_card(CHECKPOINT_OF[name.removesuffix("_int8").removesuffix("_fp16")])
        card = ModelCard.from_json(one(as_map(config, "parameters")["model_card"], "string_value"))
        assert card.replace(extra={}) == checkpoint_card.replace(extra={}), name
        assert {k: v for k, v in card.extra.items() if k in checkpoint_card.extra} == checkpoint_card.extra
        assert card.extra["precision"] == precision
        side = checkpoint_card.input_size

        # Tensors: the ONNX graph's names, types and shapes; the image is UINT8 CHW at the card's size.
        graph = _onnx_tensors(latest / "model.onnx")
        described = {one(t, "name"): (one(t, "data_type"), t.get("dims", []))
                     for t in config.get("input", []) + config.get("output", [])}
        assert described == graph, (name, described, graph)
        assert [one(t, "name") for t in config["input"]] == [INPUT_NAME]
        assert [one(t, "name") for t in config["output"]] == list(OUTPUT_NAMES)
        assert described[INPUT_NAME] == ("TYPE_UINT8", [3, side, side])
        assert described["fake_probability"][1] == [1] and described["logit"][1] == [1]
        [probability] = [t for t in config["output"] if one(t, "name") == "fake_probability"]
        assert (path.parent / one(probability, "label_filename")).read_text().split() == [checkpoint_card.labels[1]]

        # Batching: up to 32 per request, the dynamic batcher preferring sizes it can reach, waiting little.
        assert one(config, "max_batch_size") == 32
        [batching] = config["dynamic_batching"]
        preferred = batching["preferred_batch_size"]
        assert preferred == sorted(preferred) and preferred[-1] == 32 and preferred[0] > 1
        assert 0 < one(batching, "max_queue_delay_microseconds") <= 10_000
        assert one(one(one(config, "version_policy"), "latest"), "num_versions") == 2
        warmups = {one(w, "batch_size"): as_map(w, "inputs")[INPUT_NAME] for w in config["model_warmup"]}
        assert set(warmups) == {1, 32}
        assert all(one(w, "data_type") == "TYPE_UINT8" and w["dims"] == [3, side, side] for w in warmups.values())

        [group] = config["instance_group"]
        if target == "embedded":
            assert one(config, "backend") == "python" and "platform" not in config
            assert one(group, "kind") == "KIND_CPU" and one(group, "count") == repository.DEFAULT_CPU_INSTANCES
            assert one(as_map(config, "parameters")["execution_provider"], "string_value") == "auto"
            assert (latest / "model.py").is_file()
        else:
            assert one(config, "platform") == "onnxruntime_onnx" and "backend" not in config
            assert one(group, "kind") == "KIND_GPU" and one(group, "count") == 1
            assert not (latest / "model.py").exists()
            [accelerator] = one(one(config, "optimization"), "execution_accelerators")["gpu_execution_accelerator"]
            parameters = {k: one(v, "string_value") if isinstance(v, dict) else v
                          for k, v in as_map(accelerator, "parameters").items()}
            if precision == "fp16":
                assert one(accelerator, "name") == "cuda"
            else:
                assert one(accelerator, "name") == "tensorrt"
                assert parameters["precision_mode"] == ("INT8" if precision == "int8" else "FP16")
                assert parameters["trt_cuda_graph_enable"] == "1"
                # One TensorRT profile spanning every batch the dynamic batcher can form, at the served size.
                assert parameters["trt_profile_min_shapes"] == f"{INPUT_NAME}:1x3x{side}x{side}"
                assert parameters["trt_profile_max_shapes"] == f"{INPUT_NAME}:32x3x{side}x{side}"


@pytest.mark.server
def test_triton_reads_each_config_as_written(triton_server, demo_repository: Path) -> None:
    """The running tritonserver (its own parser) reports each embedded model's config as the text says."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(triton_server.http_url)
    try:
        configs = detector_configs(demo_repository / "embedded")
        assert {path.parent.name for path in configs} == set(EMBEDDED_MODELS)
        for path in configs:
            written = read_pbtxt(path.read_text())
            served = client.get_model_config(path.parent.name)
            assert served["name"] == one(written, "name")
            assert served["max_batch_size"] == one(written, "max_batch_size")
            assert served["backend"] == one(written, "backend")
            assert ([(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in served["input"]]
                    == [(one(t, "name"), one(t, "data_type"), t["dims"]) for t in written["input"]])
            assert ([(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in served["output"]]
                    == [(one(t, "name"), one(t, "data_type"), t["dims"]) for t in written["output"]])
            [batching] = written["dynamic_batching"]
            assert served["dynamic_batching"]["preferred_batch_size"] == batching["preferred_batch_size"]
            assert (int(served["dynamic_batching"]["max_queue_delay_microseconds"])
                    == one(batching, "max_queue_delay_microseconds"))
            [group] = written["instance_group"]
            assert [(g["kind"], g["count"]) for g in served["instance_group"]] == [(one(group, "kind"), one(group, "count"))]
            card = served["parameters"]["model_card"]["string_value"]
            assert card == one(as_map(written, "parameters")["model_card"], "string_value")
            assert ModelCard.from_json(card).replace(extra={}) == read_card(
                CHECKPOINT_OF[path.parent.name.removesuffix("_int8")]).replace(extra={})
    finally:
        client.close()


def test_repository_onnx_files_are_the_exported_graphs(demo_repository: Path) -> None:
    """Each repository ONNX file carries its checkpoint's card; one export lands in both targets unchanged
    (same bytes where both serve it), the summary's entries point at those files, and each precision is
    its own graph."""
    summary = json.loads((demo_repository / SUMMARY_FILE).read_text())
    digests = {}
    for target, models in (("embedded", EMBEDDED_MODELS), ("ngc", NGC_MODELS)):
        for name in models:
            model_dir = demo_repository / target / name
            onnx_path = model_dir / str(versions_on_disk(model_dir)[-1]) / "model.onnx"
            base = name.removesuffix("_int8").removesuffix("_fp16")
            assert read_onnx_card(onnx_path) == read_card(CHECKPOINT_OF[base]), onnx_path
            digests[target, name] = _sha256(onnx_path)
    for name in EMBEDDED_MODELS:
        assert digests["embedded", name] == digests["ngc", name], f"{name}: embedded and ngc copies differ"
    assert len({digests["ngc", name] for name in NGC_MODELS}) == len(NGC_MODELS), "two models share one graph"
    for name, model in summary["models"].items():
        for precision, entry in model["files"].items():
            model_name = name if precision == "fp32" else f"{name}_{precision}"
            target = "ngc" if precision == "fp16" else "embedded"
            assert _sha256(Path(entry["path"])) == digests[target, model_name], (name, precision)


def test_python_backend_model_runs_without_the_project_package(demo_repository: Path) -> None:
    """Triton's Python backend imports each version's model.py in a stub where deepfake_edge is not
    installed: import it in an interpreter where importing deepfake_edge fails."""
    import subprocess
    import sys

    script = (
        "import importlib.abc, importlib.util, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'deepfake_edge': raise ImportError('deepfake_edge is not installed')\n"
        "sys.meta_path.insert(0, Block())\n"
        "spec = importlib.util.spec_from_file_location('model', sys.argv[1])\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert callable(module.TritonPythonModel().initialize)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'deepfake_edge']\n"
    )
    # Not deepfake_image_decode: decoding with the package's preprocessing is its point (test below).
    models = sorted(path for path in (demo_repository / "embedded").glob("*/*/model.py")
                    if path.parent.parent.name not in IMAGE_MODELS)
    assert len(models) == len(EMBEDDED_MODELS)
    for model_py in models:
        result = subprocess.run([sys.executable, "-c", script, str(model_py)], capture_output=True, text=True,
                                timeout=120, cwd=model_py.parent)
        assert result.returncode == 0, f"{model_py}:\n{result.stderr[-2000:]}"


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
    assert versions_on_disk(model_dir) == [1, 2]
    assert (model_dir / "1" / "model.onnx").read_bytes() == first
    assert repository.is_complete(tmp_path / "repo" / "embedded", ("deepfake_cnn",))
    assert versions_on_disk(tmp_path / "repo" / "ngc" / "deepfake_cnn") == [1, 2]
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
    assert versions_on_disk(tmp_path / "repo" / "embedded" / "deepfake_cnn") == [1]
    # What `make serve` (--if-missing) does after a demo was retrained at another input size.
    run_export([bigger], ExportOptions(out=tmp_path / "repo", eval_images=8, speed=False, data=data,
                                       replace_incompatible=True))
    for target in (repository.EMBEDDED, repository.NGC):
        model_dir = tmp_path / "repo" / target / "deepfake_cnn"
        assert versions_on_disk(model_dir) == [1]
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


def test_defaults_restated_outside_the_exporter_match_it(capsys) -> None:
    # `export --help` must not import the exporter (triton_model.py's tensor names: tests/test_serving_contract.py).
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert f"(default: {repository.DEFAULT_CPU_INSTANCES}," in " ".join(capsys.readouterr().out.split())
