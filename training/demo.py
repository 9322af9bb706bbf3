"""Reproduce the committed demo models: ``python -m deepfake_edge.training.demo`` (what ``make demo-model`` runs).

Steps, all through the project's own ``deepfake-edge`` verbs, for each demo architecture: ``data synth``
(the default self-blended set at the recipe's size, unless one made from the installed photos is there),
``train`` into ``runs/demo/<arch>/``, copy the best checkpoint (float16) to ``models/demo/<arch>.safetensors``,
then ``evaluate`` it on the test split into ``models/demo/report/<arch>/`` (metrics.json, roc.png,
confusion_matrix.png, twins.png, training_curves.png, history.json, train_summary.json). B0 has a CUDA
recipe (224 px, six epochs; the committed one) and a CPU recipe bounded for two shared cores (160 px, one
pass); the small CNN has a CPU recipe only. See docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from deepfake_edge.cli import main as cli
from deepfake_edge.training.photos import packaged_photo_records

RUNS = Path("runs/demo")
DEMO_DIR = Path("models/demo")
REPORT_DIR = DEMO_DIR / "report"
# 24 times the default count: B0 sees 67,200 distinct crops per epoch. Twice that many crops of the same 298
# training photos did worse on CPU (test ROC-AUC 0.921 -> 0.905 at 112 px, one pass: the net memorised them);
# more photos, not more crops of them, is what helps (docs/training.md).
SYNTH_COUNT = 96000


@dataclass(frozen=True)
class Recipe:
    """How one demo model is made: the synthetic set it trains on (``data``, made at ``image_size`` px)
    and its ``train`` arguments."""

    data: Path
    image_size: int
    train_args: tuple[str, ...]


# One thread: on a shared two-core machine two OpenMP threads ran ~10x slower (spin-waiting under contention).
_CPU = ("--batch-size", "32", "--seed", "0", "--device", "cpu", "--threads", "1", "--workers", "1",
        "--checkpoint-dtype", "float16")
# Five loader processes: the GPU waits on JPEG decoding and augmentation, not the other way round.
_CUDA = ("--batch-size", "64", "--seed", "0", "--device", "cuda", "--threads", "2", "--workers", "5",
         "--checkpoint-dtype", "float16")
_B0 = ("--arch", "efficientnet_b0", "--init-weights", "lite0", "--drop-path", "0.4", "--lr", "1e-3", "--mask-loss", "1")
RECIPES: dict[str, dict[str, Recipe]] = {
    # The committed B0 (docs/training.md): six epochs at B0's native 224 px on an H100, ~8 min, chosen on
    # validation over one epoch (0.958) and twelve (0.976, tied).
    "efficientnet_b0": {
        "cuda": Recipe(Path("data/synth_224px"), 224, (*_B0, "--epochs", "6", "--warmup-epochs", "0.5",
                                                       "--patience", "3", "--input-size", "224", *_CUDA)),
        # Without a GPU: one pass at 160 px, ~57 minutes of one core (test ROC-AUC 0.947).
        "cpu": Recipe(Path("data/synth"), 160, (*_B0, "--epochs", "1", "--warmup-epochs", "0.15", "--patience", "3",
                                                "--input-size", "160", *_CPU)),
    },
    "small_cnn": {
        "cpu": Recipe(Path("data/synth"), 160, ("--arch", "small_cnn", "--epochs", "3", "--lr", "2e-3", "--patience",
                                                "4", "--input-size", "112", *_CPU)),
    },
}


def recipe_for(arch: str, device: str) -> Recipe:
    """``arch``'s recipe for ``device`` ("cuda" or "cpu"); a model with only a CPU recipe uses it anywhere."""
    recipes = RECIPES[arch]
    return recipes.get(device, recipes["cpu"])


def train_command(arch: str, recipe: Recipe) -> list[str]:
    """The exact ``deepfake-edge`` arguments that train the demo ``arch`` (quoted in docs/training.md)."""
    return ["train", str(recipe.data), *recipe.train_args, "--out", str(RUNS / arch)]


def build(arch: str, recipe: Recipe) -> int:
    """Train, publish and evaluate one demo model; returns the first non-zero exit code."""
    print(f"$ deepfake-edge {' '.join(train_command(arch, recipe))}", flush=True)
    if code := cli(train_command(arch, recipe)):
        return code
    run, report = RUNS / arch, REPORT_DIR / arch
    report.mkdir(parents=True, exist_ok=True)
    checkpoint = shutil.copyfile(run / "best.safetensors", DEMO_DIR / f"{arch}.safetensors")
    shutil.copyfile(run / "history.json", report / "history.json")
    shutil.copyfile(run / "summary.json", report / "train_summary.json")
    evaluate = ["evaluate", str(checkpoint), str(recipe.data), "--split", "test", "--out", str(report),
                "--history", str(report / "history.json")]
    print(f"$ deepfake-edge {' '.join(evaluate)}", flush=True)
    return cli(evaluate)


def _is_current_demo_set(manifest: Path, image_size: int) -> bool:
    """Whether ``manifest`` describes a set of the demo's size made from exactly the photos installed now."""
    if not manifest.is_file():
        return False
    made = json.loads(manifest.read_text())
    used = {name for names in made.get("photos", {}).values() for name in names}
    return (made.get("count") == SYNTH_COUNT and made.get("image_size") == image_size
            and used == {photo.name for photo in packaged_photo_records()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepfake_edge.training.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="build only this model")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="whose recipes to follow (auto: cuda when torch sees a GPU); the committed B0 is cuda's")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    for arch in args.only or list(RECIPES):
        recipe = recipe_for(arch, device)
        if not _is_current_demo_set(recipe.data / "synth.json", recipe.image_size):
            synth = ["data", "synth", "--out", str(recipe.data), "--count", str(SYNTH_COUNT),
                     "--image-size", str(recipe.image_size), "--workers", str(os.cpu_count() or 1)]
            if code := cli(synth):
                return code
        if code := build(arch, recipe):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
