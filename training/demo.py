"""Reproduce the committed demo models: ``python -m deepfake_edge.training.demo`` (what ``make demo-model`` runs).

Every step is one of the project's own ``deepfake-edge`` verbs. B0 is made in three stages:

1. self-blends: ``data synth`` (the default self-blended set at the recipe's size) and ``train`` from the
   packaged EfficientNet-Lite0 weights into ``runs/demo/efficientnet_b0_sbi/`` (CUDA recipe: 224 px, six
   epochs, ~8 min on an H100; CPU recipe: 160 px, one pass). Skipped when that checkpoint exists.
2. the edits people make: ``data synth`` + ``data edits`` into ``data/edits_224px`` (self-blends beside
   region crops of full-size splices, copy-moves, inpaintings, pasted graphics and face swaps), then
   ``train`` from stage 1's best checkpoint into ``runs/demo/efficientnet_b0/``; the CPU recipe continues
   from each run's best: two epochs on the same set (``runs/demo/efficientnet_b0_more/``), one on a fresh
   draw of it (``data/edits_224px_s1``: other crops and edits of the same split photos;
   ``runs/demo/efficientnet_b0_fresh/``), then one on a second draw (``data/edits_224px_s2``) with the hard
   negatives the previous best finds in its unedited training photos (``data negatives``;
   ``runs/demo/efficientnet_b0_negatives/``);
3. the verdict on whole photos: ``refit-head`` refits the last run's classifier on every region of the set's
   training photos (``runs/demo/efficientnet_b0_refit/``, which is published).

The small CNN trains once, from scratch, on the stage-2 set. Then, for each: copy the published checkpoint
(float16) to ``models/demo/<arch>.safetensors``, ``calibrate`` its whole-image threshold on the validation
photos (B0's with the copy-move check, ``calibrate --copy-move``), and ``evaluate`` it into
``models/demo/report/<arch>/``: the crop test split (metrics.json, roc.png, confusion_matrix.png, twins.png,
training_curves.png, history.json, train_summary.json) and the full-size test photos by whole-image analysis
(whole_image.json). B0's video verdict is calibrated and evaluated too, on ``data videos``' set in
``data/videos`` (the card's video rule and threshold; video_report.json, video_timelines.png). See
docs/training.md.
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
from deepfake_edge.training.video_synth import is_made_from

RUNS = Path("runs/demo")
EDIT_SET = Path("data/edits_224px")
EDIT_SET_SELF_BLENDS = 12000  # beside the 3000 full-size pairs' region crops (~2.4 twins per pair)
EDIT_PAIRS = 3000
# Every demo set (stage 1, stage 2, its fresh draws, the videos) deals the photos to the splits with this seed,
# so no set's training photo is another set's validation or test photo.
DEMO_SPLIT_SEED = 0
VIDEO_SET = Path("data/videos")
VIDEO_PAIRS = 24  # unedited/edited pairs per split
VIDEO_ARCHS = ("efficientnet_b0",)  # the models whose video verdict is calibrated (docs/video.md)
# The models whose whole-image verdict includes the copy-move check (docs/detection.md); the small CNN stays the
# plain baseline, and the web page, which runs both, checks each upload once.
COPY_MOVE_ARCHS = ("efficientnet_b0",)
DEMO_DIR = Path("models/demo")
REPORT_DIR = DEMO_DIR / "report"
# 24 times the default count: B0 sees 67,200 distinct crops per epoch. Twice that many crops of the same 298
# training photos did worse on CPU (test ROC-AUC 0.921 -> 0.905 at 112 px, one pass: the net memorised them);
# more photos, not more crops of them, is what helps (docs/training.md).
SYNTH_COUNT = 96000


@dataclass(frozen=True)
class Continuation:
    """A further ``train`` from the previous run's best checkpoint into ``runs/demo/<arch>_<name>``, with a
    fresh warm-up and cosine decay: how the CPU recipe adds epochs when each sitting of CPU time gives one
    run. With a ``sample_seed`` it trains on a fresh draw of the recipe's set (that seed, the first set's
    split seed, ``self_blends`` self-blended images) in ``<data>_s<sample_seed>``: the same photos in each
    split, new crops and edits of them, so a further pass is not a memorised one. With ``hard_negatives``
    the previous run's best checkpoint first mines that set's unedited training photos (``data negatives``:
    the regions it wrongly scores as edited become Real crops)."""

    name: str
    train_args: tuple[str, ...]
    sample_seed: int = 0
    self_blends: int = EDIT_SET_SELF_BLENDS
    hard_negatives: bool = False


@dataclass(frozen=True)
class Recipe:
    """How one demo model is made: the synthetic set it trains on (``data``, made at ``image_size`` px),
    its ``train`` arguments and the runs that continue it (the last one's best checkpoint is published, or,
    with ``refit_head``, that checkpoint with its classifier refitted on ``data``'s training photos)."""

    data: Path
    image_size: int
    train_args: tuple[str, ...]
    continuations: tuple[Continuation, ...] = ()
    refit_head: bool = False  # then ``refit-head`` on ``data`` into runs/demo/<arch>_refit, which is published

    def data_of(self, continuation: Continuation) -> Path:
        """The set ``continuation`` trains on."""
        seed = continuation.sample_seed
        return self.data.with_name(f"{self.data.name}_s{seed}") if seed else self.data


def _cpu(threads: int = 1, seed: int = 0) -> tuple[str, ...]:
    return ("--batch-size", "32", "--seed", str(seed), "--device", "cpu", "--threads", str(threads), "--workers", "1",
            "--checkpoint-dtype", "float16")


# One thread: on a shared two-core machine two OpenMP threads ran ~10x slower (spin-waiting under contention).
_CPU = _cpu()
# Five loader processes: the GPU waits on JPEG decoding and augmentation, not the other way round.
_CUDA = ("--batch-size", "64", "--seed", "0", "--device", "cuda", "--threads", "2", "--workers", "5",
         "--checkpoint-dtype", "float16")
_B0 = ("--arch", "efficientnet_b0", "--init-weights", "lite0", "--drop-path", "0.4", "--lr", "1e-3", "--mask-loss", "1")
# Stage 1 (self-blends) of B0.
SELF_BLEND_RECIPES: dict[str, dict[str, Recipe]] = {
    # Six epochs at B0's native 224 px on an H100, ~8 min, chosen on validation over one epoch (0.958) and
    # twelve (0.976, tied).
    "efficientnet_b0": {
        "cuda": Recipe(Path("data/synth_224px"), 224, (*_B0, "--epochs", "6", "--warmup-epochs", "0.5",
                                                       "--patience", "3", "--input-size", "224", *_CUDA)),
        # Without a GPU: one pass at 160 px, ~57 minutes of one core (test ROC-AUC 0.947).
        "cpu": Recipe(Path("data/synth"), 160, (*_B0, "--epochs", "1", "--warmup-epochs", "0.15", "--patience", "3",
                                                "--input-size", "160", *_CPU)),
    },
}
# The committed models: B0 fine-tuned from stage 1 (its --init-weights is added by build()), the CNN from
# scratch, both on the stage-2 set. One epoch of B0 at 224 px: what one shared CPU core trains in about an hour.
_B0_ON_EDITS = ("--arch", "efficientnet_b0", "--drop-path", "0.4", "--mask-loss", "1", "--patience", "2",
                "--input-size", "224")
_B0_EDITS = (*_B0_ON_EDITS, "--lr", "3e-4", "--epochs", "1", "--warmup-epochs", "0.1")
# Then two more epochs at a lower peak, on both cores of the quiet machine (~20 min an epoch), another seed so
# the order and augmentation draws differ from the first epoch's. A third pass over the same set overfitted
# (validation loss 0.53 -> 0.68); one over a fresh draw of it, with a third more self-blends, ended at 0.515 on
# the draw's own validation crops and lifted whole-image validation ROC-AUC 0.717 -> 0.729. One more over a
# second draw, with the 1,870 hard negatives the previous best found in that draw's training photos, lifted it
# to 0.755 and its image threshold (5 % of unedited validation photos) fell from 0.9971 to 0.9599
# (docs/detection.md; the two changes were not measured apart).
_B0_CONTINUATIONS = (
    Continuation("more", (*_B0_ON_EDITS, "--lr", "2e-4", "--epochs", "2", "--warmup-epochs", "0.05",
                          *_cpu(threads=2, seed=1))),
    Continuation("fresh", (*_B0_ON_EDITS, "--lr", "1.5e-4", "--epochs", "1", "--warmup-epochs", "0.05",
                           *_cpu(threads=2, seed=2)), sample_seed=1, self_blends=16000),
    Continuation("negatives", (*_B0_ON_EDITS, "--lr", "1.5e-4", "--epochs", "1", "--warmup-epochs", "0.05",
                               *_cpu(threads=2, seed=3)), sample_seed=2, self_blends=16000, hard_negatives=True),
)
RECIPES: dict[str, dict[str, Recipe]] = {
    "efficientnet_b0": {"cuda": Recipe(EDIT_SET, 224, (*_B0_EDITS, *_CUDA), refit_head=True),
                        "cpu": Recipe(EDIT_SET, 224, (*_B0_EDITS, *_CPU), _B0_CONTINUATIONS, refit_head=True)},
    "small_cnn": {
        "cpu": Recipe(EDIT_SET, 224, ("--arch", "small_cnn", "--epochs", "3", "--lr", "2e-3", "--patience",
                                      "4", "--input-size", "112", *_CPU)),
    },
}


def recipe_for(arch: str, device: str, recipes: dict[str, dict[str, Recipe]] = RECIPES) -> Recipe:
    """``arch``'s recipe for ``device`` ("cuda" or "cpu"); a model with only a CPU recipe uses it anywhere."""
    return recipes[arch].get(device, recipes[arch]["cpu"])


def stage1_checkpoint(arch: str) -> Path:
    return RUNS / f"{arch}_sbi" / "best.safetensors"


def train_command(arch: str, recipe: Recipe) -> list[str]:
    """The exact ``deepfake-edge`` arguments that train the demo ``arch`` (quoted in docs/training.md)."""
    init = ("--init-weights", str(stage1_checkpoint(arch))) if arch in SELF_BLEND_RECIPES else ()
    return ["train", str(recipe.data), *recipe.train_args, *init, "--out", str(RUNS / arch)]


def _run(arguments: list[str]) -> int:
    print(f"$ deepfake-edge {' '.join(arguments)}", flush=True)
    return cli(arguments)


def build(arch: str, recipe: Recipe) -> int:
    """Train, publish, calibrate and evaluate one demo model; returns the first non-zero exit code."""
    if code := _run(train_command(arch, recipe)):
        return code
    run, report = RUNS / arch, REPORT_DIR / arch
    for continuation in recipe.continuations:
        previous, run = run, RUNS / f"{arch}_{continuation.name}"
        data = str(recipe.data_of(continuation))
        if continuation.hard_negatives and (code := _run(["data", "negatives", data,
                                                          str(previous / "best.safetensors")])):
            return code
        if code := _run(["train", data, *continuation.train_args, "--init-weights", str(previous / "best.safetensors"),
                         "--out", str(run)]):
            return code
    published = run / "best.safetensors"
    if recipe.refit_head:
        published = RUNS / f"{arch}_refit" / "best.safetensors"
        if code := _run(["refit-head", str(run / "best.safetensors"), str(recipe.data), "--out", str(published)]):
            return code
    report.mkdir(parents=True, exist_ok=True)
    checkpoint = shutil.copyfile(published, DEMO_DIR / f"{arch}.safetensors")
    shutil.copyfile(run / "history.json", report / "history.json")
    shutil.copyfile(run / "summary.json", report / "train_summary.json")
    steps = [["calibrate", str(checkpoint), str(recipe.data), *(["--copy-move"] if arch in COPY_MOVE_ARCHS else [])],
             ["evaluate", str(checkpoint), str(recipe.data), "--split", "test", "--out", str(report),
              "--history", str(report / "history.json")],
             ["evaluate", str(checkpoint), str(recipe.data), "--split", "test", "--whole-images", "--out", str(report)]]
    if arch in VIDEO_ARCHS:
        steps += [["calibrate", str(checkpoint), str(VIDEO_SET), "--videos"],
                  ["evaluate", str(checkpoint), str(VIDEO_SET), "--videos", "--split", "test", "--out", str(report)]]
    for step in steps:
        if code := _run(step):
            return code
    return 0


def _make_set(data: Path, count: int, image_size: int, edit_pairs: int = 0, seed: int = 0) -> int:
    """``data synth`` (and ``data edits``) into ``data`` unless a current set of that recipe is there; its
    photos are dealt to the splits by :data:`DEMO_SPLIT_SEED`, whatever its sample ``seed``."""
    if is_current_demo_set(data / "synth.json", count, image_size, seed) and (
            not edit_pairs or (data / "full.json").is_file()):
        return 0
    options = ["--seed", str(seed), "--split-seed", str(DEMO_SPLIT_SEED), "--workers", str(os.cpu_count() or 1)]
    if code := _run(["data", "synth", "--out", str(data), "--count", str(count), "--image-size", str(image_size),
                     *options]):
        return code
    return _run(["data", "edits", "--out", str(data), "--pairs", str(edit_pairs), *options]) if edit_pairs else 0


def _make_video_set() -> int:
    """``data videos`` into :data:`VIDEO_SET` unless a set of the demo's size, made from the photos installed
    now dealt by :data:`DEMO_SPLIT_SEED` like the training sets', is there."""
    manifest = VIDEO_SET / "video_set.json"
    made = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if made.get("pairs_per_split") == VIDEO_PAIRS and is_made_from(made, packaged_photo_records(), DEMO_SPLIT_SEED):
        return 0
    return _run(["data", "videos", "--out", str(VIDEO_SET), "--pairs", str(VIDEO_PAIRS),
                 "--split-seed", str(DEMO_SPLIT_SEED)])


def is_current_demo_set(manifest: Path, count: int, image_size: int, seed: int = 0) -> bool:
    """Whether ``manifest`` describes a set of the demo's size and sample ``seed``, its photos dealt to the
    splits by :data:`DEMO_SPLIT_SEED`, made from exactly the photos installed now."""
    if not manifest.is_file():
        return False
    made = json.loads(manifest.read_text())
    used = {name for names in made.get("photos", {}).values() for name in names}
    seeds = (made.get("seed", 0), made.get("split_seed", made.get("seed", 0)))
    return (made.get("count") == count and made.get("image_size") == image_size and seeds == (seed, DEMO_SPLIT_SEED)
            and used == {photo.name for photo in packaged_photo_records()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepfake_edge.training.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RECIPES), action="append", help="build only this model")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="whose recipes to follow (auto: cuda when torch sees a GPU); the committed B0's stage 1 "
                             "is cuda's, its stage 2 the CPU recipe's")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    for arch in args.only or list(RECIPES):
        if arch in SELF_BLEND_RECIPES and not stage1_checkpoint(arch).is_file():
            stage1 = recipe_for(arch, device, SELF_BLEND_RECIPES)
            if code := _make_set(stage1.data, SYNTH_COUNT, stage1.image_size):
                return code
            arguments = ["train", str(stage1.data), *stage1.train_args, "--out", str(stage1_checkpoint(arch).parent)]
            if code := _run(arguments):
                return code
        recipe = recipe_for(arch, device)
        if code := _make_set(recipe.data, EDIT_SET_SELF_BLENDS, recipe.image_size, EDIT_PAIRS):
            return code
        for continuation in recipe.continuations:
            if continuation.sample_seed and (code := _make_set(recipe.data_of(continuation), continuation.self_blends,
                                                               recipe.image_size, EDIT_PAIRS, continuation.sample_seed)):
                return code
        if arch in VIDEO_ARCHS and (code := _make_video_set()):
            return code
        if code := build(arch, recipe):
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
