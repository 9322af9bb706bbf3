"""The per-checkpoint INT8 recipe file: written by a search, reused while the checkpoint's SHA-256 matches,
ignored when it does not, bypassed by --search-fallback; and what `export` prints vs. what it logs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deepfake_edge.checkpoint import save_checkpoint
from deepfake_edge.cli import main
from deepfake_edge.digest import file_sha256
from deepfake_edge.export import int8_recipe, pipeline
from deepfake_edge.export.pipeline import ExportOptions, run_export
from deepfake_edge.export.quantize import QuantizationRecipe
from deepfake_edge.model_card import ModelCard
from deepfake_edge.models import build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """A few unlabelled images: calibration, validation and test all read them (an image folder has no splits)."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(8):
        Image.fromarray(rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    return folder


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "cnn.safetensors", build_model("small_cnn"),
                           ModelCard(arch="small_cnn", input_size=64, resize_size=72))


@pytest.fixture()
def searches(monkeypatch) -> list[Path]:
    """The FP32 graphs the FP32-fallback search ran on, in order (the search itself still runs)."""
    calls: list[Path] = []
    search = pipeline.quantize_with_fallback

    def recorded(fp32_path, *args, **kwargs):
        calls.append(fp32_path)
        return search(fp32_path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "quantize_with_fallback", recorded)
    return calls


def _export(checkpoint: Path, images: Path, out: Path, **options) -> dict:
    summary = run_export([checkpoint], ExportOptions(out=out, int8=True, calibration_images=8, eval_images=8,
                                                     speed=False, data=images, check_int8=False, **options))
    return summary["models"]["deepfake_cnn"]["int8_vs_fp32"]


def _card_units(out: Path) -> list[str]:
    """The FP32 units the served INT8 model's card names (the ``model_card`` parameter of its config)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse((out / "embedded" / "deepfake_cnn_int8" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    return ModelCard.from_json(config.parameters["model_card"].string_value).extra["int8"]["fp32_units"]


def _write(checkpoint: Path, **changes) -> Path:
    """A recipe file for ``checkpoint`` keeping its only backbone unit FP32 (the search would keep none)."""
    data = {"checkpoint_sha256": file_sha256(checkpoint), "recipe": QuantizationRecipe().describe(),
            "fp32_units": ["features"], **changes}
    path = int8_recipe.recipe_path(checkpoint)
    path.write_text(json.dumps(data))
    return path


def test_a_search_writes_the_recipe_file_beside_the_checkpoint(checkpoint, images, tmp_path, searches) -> None:
    report = _export(checkpoint, images, tmp_path / "repo")
    path = tmp_path / "cnn.int8.json"
    assert int8_recipe.recipe_path(checkpoint) == path and len(searches) == 1
    stored = json.loads(path.read_text())
    assert stored["checkpoint_sha256"] == file_sha256(checkpoint)
    assert stored["recipe"] == QuantizationRecipe().describe()
    assert stored["fp32_units"] == report["fp32_fallback"]["fp32_units"] == _card_units(tmp_path / "repo")
    assert stored["test_int8_vs_fp32"]["decision_agreement"] == report["decision_agreement"]
    assert stored["calibration"]["images"] == 8 and "sensitivity" in report["fp32_fallback"]
    assert report["fp32_fallback"]["recipe_file"] == str(path)


def test_a_matching_recipe_file_replaces_the_search(checkpoint, images, tmp_path, searches) -> None:
    path = _write(checkpoint)
    report = _export(checkpoint, images, tmp_path / "repo")
    assert not searches
    assert report["fp32_fallback"] == {"fp32_units": ["features"], "recipe_file": str(path)}
    assert _card_units(tmp_path / "repo") == ["features"]
    assert report["images"] == 8 and "problems" in report  # the INT8-vs-FP32 check still ran
    assert json.loads(path.read_text())["fp32_units"] == ["features"]  # left as it was


@pytest.mark.parametrize("change", [{"checkpoint_sha256": "0" * 64},
                                   {"recipe": {**QuantizationRecipe().describe(), "calibration": "MinMax"}},
                                   {"fp32_units": ["blocks.99.0"]}],
                         ids=["another-checkpoint", "another-recipe", "unknown-units"])
def test_a_recipe_file_for_something_else_is_searched_again_and_rewritten(checkpoint, images, tmp_path, searches,
                                                                          change) -> None:
    path = _write(checkpoint, **change)
    report = _export(checkpoint, images, tmp_path / "repo")
    assert len(searches) == 1 and "sensitivity" in report["fp32_fallback"]
    stored = json.loads(path.read_text())
    assert stored["checkpoint_sha256"] == file_sha256(checkpoint)
    assert stored["recipe"] == QuantizationRecipe().describe()
    assert stored["fp32_units"] == report["fp32_fallback"]["fp32_units"]


def test_stored_units_outside_the_bound_are_searched_again(checkpoint, images, tmp_path, searches,
                                                           monkeypatch) -> None:
    _write(checkpoint)
    verdicts = iter([["decisions agree on 90.00% < 99%"]])
    monkeypatch.setattr(pipeline, "int8_problems", lambda report: next(verdicts, []))
    report = _export(checkpoint, images, tmp_path / "repo")
    assert len(searches) == 1 and not report["problems"] and "sensitivity" in report["fp32_fallback"]


def test_search_fallback_flag_searches_despite_a_match_and_the_terminal_stays_short(
        checkpoint, images, tmp_path, searches, capfd) -> None:
    path = _write(checkpoint)
    out = tmp_path / "repo"
    assert main(["export", str(checkpoint), "--int8", "--search-fallback", "--no-speed", "--no-int8-check",
                 "--data", str(images), "--calibration-images", "8", "--eval-images", "8", "--out", str(out)]) == 0
    assert len(searches) == 1
    assert json.loads(path.read_text())["fp32_units"] != ["features"]  # rewritten by the search
    terminal = capfd.readouterr()
    log = (out / "export.log").read_text()
    assert "Collecting tensor data" in log and '"models"' in log and "searching as asked" in log
    assert "Collecting tensor data" not in terminal.out + terminal.err and '"models"' not in terminal.out
    assert len((terminal.out + terminal.err).strip().splitlines()) <= 6, terminal
    assert "deepfake_cnn_int8: agrees with FP32" in terminal.out


def test_if_missing_prints_one_line_before_and_one_after(tmp_path, monkeypatch, capfd) -> None:
    import os
    import sys

    def noisy_export(checkpoints, options, names=None):
        print("Collecting tensor data and making histogram ...")
        os.write(2, b"native library noise\n")
        print("progress", file=sys.stderr)
        assert (options.calibration_images, options.eval_images, options.parity_images) == (64, 100, 32)
        assert not options.speed and options.fp16 and options.int8
        return {"models": {}}

    monkeypatch.chdir(ROOT)  # the demo checkpoints are relative paths
    monkeypatch.setattr(pipeline, "run_export", noisy_export)
    assert main(["export", "--if-missing", "--out", str(tmp_path / "repo")]) == 0
    terminal = capfd.readouterr()
    lines = terminal.out.strip().splitlines()
    assert len(lines) == 2 and not terminal.err, terminal
    assert lines[0].startswith("building the served models from the demo checkpoints (about ")
    assert str(tmp_path / "repo" / "export.log") in lines[0] and lines[1].startswith("built ")
    log = (tmp_path / "repo" / "export.log").read_text()
    assert all(text in log for text in ("Collecting tensor data", "native library noise", "progress"))
