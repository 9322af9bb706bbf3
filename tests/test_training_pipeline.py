"""Train + evaluate end to end on tiny images, through the real CLI: checkpoints, resume, folds, bad data.

The dataset is deliberately easy (a fake carries a bright inverted square) so a few steps of the small
CNN learn it; runs use 32 px inputs and a handful of images to stay within seconds on two cores.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from deepfake_edge.checkpoint import load_checkpoint, read_card
from deepfake_edge.cli import main
from deepfake_edge.preprocessing import Preprocessor, normalize
from deepfake_edge.training.init_weights import lite0_to_timm, lite0_weights_path, read_state_dict

torch.set_num_threads(2)
SPLIT_SIZES = {"train": 24, "validation": 12, "test": 12}  # images per class


def _write_easy_dataset(root: Path, seed: int = 0) -> Path:
    """Fakes carry a bright square; like ``data synth``, ``<split>/masks/`` holds where it is."""
    rng = np.random.default_rng(seed)
    for split, count in SPLIT_SIZES.items():
        (root / split / "masks").mkdir(parents=True)
        for label in ("Real", "Fake"):
            folder = root / split / label
            folder.mkdir()
            for i in range(count):
                pixels = rng.integers(90, 160, size=(40, 40, 3), dtype=np.uint8)
                if label == "Fake":
                    y, x = rng.integers(6, 18, size=2)
                    pixels[y:y + 16, x:x + 16] = 255 - pixels[y:y + 16, x:x + 16] // 3
                    mask = np.zeros((40, 40), np.uint8)
                    mask[y:y + 16, x:x + 16] = 255
                    Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def easy_data(tmp_path_factory) -> Path:
    return _write_easy_dataset(tmp_path_factory.mktemp("easy"))


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", str(data), "--arch", "small_cnn", "--input-size", "32", "--batch-size", "8",
                 "--epochs", "2", "--workers", "0", "--out", str(out), *extra])


def _state(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name) for name in handle.keys()}


def test_train_then_evaluate_small_cnn(easy_data, tmp_path):
    # Both verbs in their own process, as a user runs them: progress lines go to stderr through logging.
    run = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "-m", "deepfake_edge.cli", "train", str(easy_data), "--arch", "small_cnn", "--input-size",
         "32", "--batch-size", "8", "--epochs", "3", "--lr", "3e-3", "--workers", "0", "--threads", "2",
         "--out", str(run)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    lines = [line.strip() for line in trained.stderr.splitlines() if line.strip()]
    assert trained.stdout == "" and "train 24 Real / 24 Fake" in lines[0]
    assert any(line.startswith("training small_cnn (") and " on cpu: 48 train" in line for line in lines)
    assert sum(line.startswith("epoch ") and "val AUC" in line for line in lines) == 3
    assert lines[-2].startswith("best epoch ") and lines[-1].startswith("training throughput:")
    assert "img/s" in lines[-1] and not any(line.startswith("INFO") for line in lines)  # plain lines
    for name in ("best.safetensors", "last_state.pt", "history.json", "curves.png"):
        assert (run / name).is_file(), name

    card = read_card(run / "best.safetensors")
    assert (card.arch, card.input_size, card.resize_size) == ("small_cnn", 32, 37)
    assert 0.0 < card.threshold < 1.0
    assert card.metrics["validation"]["n"] == 2 * SPLIT_SIZES["validation"]
    assert "train 24 Real / 24 Fake" in card.training_data
    assert len(json.loads((run / "history.json").read_text())) == 3

    # --json must leave nothing but JSON on stdout.
    report_dir = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "deepfake_edge.cli", "evaluate", str(run / "best.safetensors"), str(easy_data),
         "--json", "--out", str(report_dir)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(result.stdout)
    for key in ("accuracy", "roc_auc", "average_precision", "precision", "recall", "f1", "fpr", "eer"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["n"] == 2 * SPLIT_SIZES["test"] and report["threshold"] == pytest.approx(card.threshold)
    assert sum(map(sum, report["confusion_matrix"])) == report["n"]
    assert report["roc_auc"] > 0.8  # the inverted square is easy; an untrained model scores ~0.5
    # Real/NNN.png and Fake/NNN.png count as twins (as data synth writes them).
    assert report["twin_pairs"] == SPLIT_SIZES["test"] and 0.0 <= report["twin_accuracy"] <= 1.0
    for png in ("roc.png", "confusion_matrix.png", "training_curves.png", "twins.png"):
        assert (report_dir / png).stat().st_size > 1000, png
    assert json.loads((report_dir / "metrics.json").read_text())["roc_auc"] == report["roc_auc"]


def test_evaluation_preprocessing_is_the_shared_one(easy_data, tmp_path):
    """Scores from evaluate == the model applied to Preprocessor.from_card(card) + normalize, by hand."""
    run = tmp_path / "run"
    assert _train(easy_data, run, "--epochs", "1", "--checkpoint-dtype", "float16") == 0
    model, card = load_checkpoint(run / "best.safetensors")
    assert _state(run / "best.safetensors")["classifier.weight"].dtype == torch.float16
    paths = sorted((easy_data / "test" / "Fake").iterdir())[:4]
    pixels = torch.from_numpy(Preprocessor.from_card(card).batch(paths))
    with torch.no_grad():
        by_hand = torch.sigmoid(model(normalize(pixels, card.mean, card.std))).squeeze(1).numpy()

    from deepfake_edge.training.datasets import Sample
    from deepfake_edge.training.evaluate import evaluate_checkpoint
    from deepfake_edge.training.train import predict
    from deepfake_edge.training.transforms import DetectorDataset, collate

    loader = torch.utils.data.DataLoader(DetectorDataset([Sample(p, 1) for p in paths],
                                                         Preprocessor.from_card(card)),
                                         batch_size=4, collate_fn=collate)
    _, scores, _ = predict(model, loader, card, torch.device("cpu"))
    np.testing.assert_allclose(scores, by_hand, rtol=1e-6)
    report = evaluate_checkpoint(run / "best.safetensors", [Sample(p, 1) for p in paths])
    assert report["recall"] == pytest.approx(float(np.mean(by_hand >= card.threshold)))


def test_resume_continues_the_same_run(easy_data, tmp_path):
    assert _train(easy_data, tmp_path / "full") == 0
    assert _train(easy_data, tmp_path / "split", "--stop-after", "1") == 0
    assert len(json.loads((tmp_path / "split" / "history.json").read_text())) == 1
    # Options given with --resume are ignored: the stored settings (2 epochs, lr 1e-3) win.
    assert main(["train", str(easy_data), "--resume", str(tmp_path / "split" / "last_state.pt"),
                 "--epochs", "9", "--workers", "0"]) == 0
    full = json.loads((tmp_path / "full" / "history.json").read_text())
    resumed = json.loads((tmp_path / "split" / "history.json").read_text())
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert [h["train_loss"] for h in resumed] == pytest.approx([h["train_loss"] for h in full], rel=1e-5)
    full_state, resumed_state = (_state(tmp_path / "full" / "best.safetensors"),
                                 _state(tmp_path / "split" / "best.safetensors"))
    for name, tensor in full_state.items():
        torch.testing.assert_close(resumed_state[name], tensor, rtol=1e-5, atol=1e-6)


def test_mask_loss_trains_a_head_the_checkpoint_leaves_out_and_resumes(easy_data, tmp_path, capsys):
    assert _train(easy_data, tmp_path / "full", "--mask-loss", "2") == 0
    full = json.loads((tmp_path / "full" / "history.json").read_text())
    # The head starts at p = 0.5 (loss ln 2 = 0.693); measured 0.677 then 0.594 on this data.
    mask_losses = [h["train_mask_loss"] for h in full]
    assert np.log(2) > mask_losses[0] > mask_losses[1] and mask_losses[1] < 0.65
    card = read_card(tmp_path / "full" / "best.safetensors")
    assert card.extra["train_config"]["mask_loss"] == 2
    model, _ = load_checkpoint(tmp_path / "full" / "best.safetensors")  # the plain detector: no mask head inside
    assert set(_state(tmp_path / "full" / "best.safetensors")) == set(model.state_dict())

    assert _train(easy_data, tmp_path / "split", "--mask-loss", "2", "--stop-after", "1") == 0
    assert main(["train", str(easy_data), "--resume", str(tmp_path / "split" / "last_state.pt"), "--workers", "0"]) == 0
    resumed = json.loads((tmp_path / "split" / "history.json").read_text())
    for key in ("train_loss", "train_mask_loss", "val_loss"):
        assert [h[key] for h in resumed] == pytest.approx([h[key] for h in full], rel=1e-5)

    no_masks = tmp_path / "no_masks"
    shutil.copytree(easy_data, no_masks, ignore=shutil.ignore_patterns("masks"))
    assert _train(no_masks, tmp_path / "run", "--mask-loss", "1") == 2
    assert "no blend mask" in capsys.readouterr().err


def test_folds_write_one_checkpoint_each_and_a_summary(easy_data, tmp_path, capsys):
    assert _train(easy_data, tmp_path / "cv", "--folds", "3", "--epochs", "1") == 0
    for fold in (1, 2, 3):
        card = read_card(tmp_path / "cv" / f"fold_{fold}" / "best.safetensors")
        assert f"fold {fold} of 3" in card.training_data
        assert card.metrics["validation"]["n"] == 24  # (24 + 12) * 2 classes / 3 folds
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert len(summary["validation"]) == len(summary["test"]) == 3
    aucs = [fold["roc_auc"] for fold in summary["validation"]]
    assert summary["summary"]["validation"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))
    assert summary["summary"]["validation"]["roc_auc"]["std"] == pytest.approx(np.std(aucs))
    assert "3-fold cross-validation" in capsys.readouterr().out


def _add_bad_files(folder: Path) -> int:
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "noise.png").write_bytes(b"definitely not a PNG" * 10)
    good = next(folder.glob("*.png")).read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    return 3


@pytest.mark.parametrize("verify", [True, False], ids=["verified-up-front", "found-while-training"])
def test_corrupt_images_are_skipped_and_counted(easy_data, tmp_path, verify, caplog):
    caplog.set_level(logging.INFO, logger="deepfake_edge.training")
    data = tmp_path / "data"
    shutil.copytree(easy_data, data)
    bad = _add_bad_files(data / "train" / "Real") + _add_bad_files(data / "validation" / "Fake")
    # 51 training files in batches of 17: no batch is dropped, so every bad file is met.
    assert _train(data, tmp_path / "run", "--epochs", "1", "--batch-size", "17",
                  *([] if verify else ["--no-verify"])) == 0
    card = read_card(tmp_path / "run" / "best.safetensors")
    if verify:
        assert f"{bad} unreadable file(s) skipped" in card.training_data
        assert card.metrics["validation"]["n"] == 2 * SPLIT_SIZES["validation"]
    else:  # the loader drops them batch by batch; nothing crashes and the count is recorded
        history = json.loads((tmp_path / "run" / "history.json").read_text())
        assert history[0]["skipped_images"] == bad
        assert any(message.endswith(f"({bad} unreadable skipped)") for message in caplog.messages)


def test_empty_class_folder_is_a_clear_error(easy_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(easy_data, data)
    for path in (data / "train" / "Fake").iterdir():
        path.unlink()
    assert _train(data, tmp_path / "run") == 2
    assert "Fake" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_a_missing_or_foreign_resume_file_is_a_clear_error(easy_data, tmp_path, capsys):
    assert main(["train", str(easy_data), "--resume", str(tmp_path / "nowhere.pt")]) == 2
    assert capsys.readouterr().err.startswith("deepfake-edge train: error: ")
    torch.save({"model": {}}, tmp_path / "other.pt")
    assert main(["train", str(easy_data), "--resume", str(tmp_path / "other.pt")]) == 2
    assert "not a state file of this version" in capsys.readouterr().err


def test_tiny_efficientnet_with_packaged_lite0_weights_frozen_stem_and_stochastic_depth(easy_data, tmp_path):
    run = tmp_path / "lite0"
    assert main(["train", str(easy_data), "--arch", "tf_efficientnet_lite0", "--init-weights", "lite0",
                 "--freeze-blocks", "2", "--drop-path", "0.1",
                 "--input-size", "32", "--batch-size", "8", "--epochs", "1", "--workers", "0",
                 "--out", str(run)]) == 0
    model, card = load_checkpoint(run / "best.safetensors")
    assert card.extra["init_weights"] == "lite0" and card.extra["init_tensors_loaded"] == 294
    assert card.extra["train_config"]["freeze_blocks"] == 2 and card.extra["train_config"]["drop_path_rate"] == 0.1
    assert card.mean == card.std == (0.5, 0.5, 0.5)  # the Lite0 weights' own normalisation
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1)
    lite0, trained = lite0_to_timm(read_state_dict(lite0_weights_path())), model.state_dict()
    for name in ("conv_stem.weight", "bn1.running_mean", "blocks.1.0.conv_pwl.weight", "blocks.1.0.bn3.running_var"):
        torch.testing.assert_close(trained[name], lite0[name], rtol=0, atol=0)  # weights and BN statistics frozen
    assert not torch.equal(trained["blocks.2.0.conv_pwl.weight"], lite0["blocks.2.0.conv_pwl.weight"])


def test_distillation_keeps_a_teachers_answers_on_self_blends_only(easy_data, tmp_path, capsys):
    from deepfake_edge.training.datasets import Sample
    from deepfake_edge.training.distillation import distilled

    names = ["000003.jpg", "e000001_0.jpg", "n000002_1.jpg", "nature_1.jpg"]
    assert distilled([Sample(tmp_path / "Fake" / name, 1) for name in names]) == [True, False, False, True]

    teacher = tmp_path / "teacher"  # twelve epochs: after three its probabilities stay near 0.5, too weak a target
    assert _train(easy_data, teacher, "--epochs", "12", "--lr", "3e-3") == 0
    # The same images with the labels swapped: trained on them alone, a student learns the inverted answer; with
    # the teacher's soft targets weighing ten times its labels it keeps the teacher's.
    swapped = tmp_path / "swapped"
    for split in SPLIT_SIZES:
        shutil.copytree(easy_data / split / "Real", swapped / split / "Fake")
        shutil.copytree(easy_data / split / "Fake", swapped / split / "Real")
    capsys.readouterr()
    aucs = {}
    for name, extra in (("plain", ()), ("distilled", ("--distill-from", str(teacher / "best.safetensors"),
                                                      "--distill-weight", "10"))):
        assert _train(swapped, tmp_path / name, "--epochs", "3", "--lr", "3e-3", *extra) == 0
        capsys.readouterr()
        assert main(["evaluate", str(tmp_path / name / "best.safetensors"), str(easy_data), "--json"]) == 0
        aucs[name] = json.loads(capsys.readouterr().out)["roc_auc"]
    assert aucs["plain"] < 0.3 and aucs["distilled"] > 0.7, aucs
    history = json.loads((tmp_path / "distilled" / "history.json").read_text())
    assert all(h["train_distill_loss"] > 0 for h in history)
    assert "train_distill_loss" not in json.loads((tmp_path / "plain" / "history.json").read_text())[0]
    config = read_card(tmp_path / "distilled" / "best.safetensors").extra["train_config"]
    assert (config["distill_from"], config["distill_weight"]) == (str(teacher / "best.safetensors"), 10)

    assert _train(easy_data, tmp_path / "other_size", "--input-size", "48", "--distill-from",
                  str(teacher / "best.safetensors")) == 2
    assert "the teacher" in capsys.readouterr().err
