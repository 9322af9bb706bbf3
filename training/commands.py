"""CLI verbs of the training area: ``data`` (synth, info); ``train`` and ``evaluate`` register here too."""

from __future__ import annotations

import argparse
from pathlib import Path

from deepfake_edge.cli import CommandError, add_verb

_DATA_EPILOG = """\
examples:
  deepfake-edge data synth                      # self-blended set from packaged photos -> data/synth
  deepfake-edge data synth ~/photos --count 20000 --image-size 224 --out data/my_sbi
  deepfake-edge data edits --out data/synth      # then: full-size edited photos + their region crops
  deepfake-edge data negatives data/synth runs/x/best.safetensors   # + regions a model wrongly finds edited
  deepfake-edge data videos --out data/videos    # test videos: edited clips + unedited twins (validation, test)
  deepfake-edge data info data/synth            # layout, class counts, skipped files
  deepfake-edge data info ~/datasets/deepfake-and-real-images

dataset layouts (folder names in any letter case):
  ROOT/{train,validation,test}/{Real,Fake}/*   kaggle layout (val/valid also mean validation)
  ROOT/{Real,Fake}/*                           flat layout, split stratified and seeded
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except the uninformative ``None`` and ``False`` of optional inputs and flags."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this area's verbs to the ``deepfake-edge`` parser."""
    _register_data(subparsers)
    from deepfake_edge.training import train_commands  # argparse only; torch loads when a verb runs

    train_commands.register(subparsers)


def _register_data(subparsers: argparse._SubParsersAction) -> None:
    data = add_verb(subparsers, "data", "build a self-blended training set, or inspect a dataset folder",
                    "Prepare and inspect real/fake image datasets.",
                    epilog=_DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = data.add_subparsers(dest="data_verb", metavar="SUBVERB", required=True)

    synth = add_verb(
        verbs, "synth", "make fakes from real photos by self-blending (SBI)",
        "Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): every fake is a real crop blended with a "
        "colour/sharpness/geometry-perturbed copy of itself inside a soft, deformed mask; its real twin is "
        "the untouched crop. Both are resized and JPEG-compressed alike. Output: OUT/{train,validation,test}/"
        "{Real,Fake}/NNNNNN.jpg, the blend masks in OUT/<split>/masks/NNNNNN.png and OUT/synth.json. "
        "Whole source photos go to one split, so test photos are never seen in training. "
        "The same arguments write identical files. These are NOT real deepfakes: use them for "
        "pipeline checks and pre-training, and real data for real use.",
        func=_run_synth, formatter_class=_HelpFormatter,
    )
    from deepfake_edge.training import synth as synth_module

    synth.add_argument("source", nargs="?", type=Path, default=None, metavar="SOURCE_DIR",
                       help="folder of real images (searched recursively); default: the photos that ship "
                            "inside scikit-image and matplotlib (including 100 LFW face crops)")
    synth.add_argument("--out", type=Path, default=synth_module.DEFAULT_OUT,
                       help="output folder; an earlier synth output there is replaced")
    synth.add_argument("--count", type=int, default=synth_module.DEFAULT_COUNT,
                       help="total images, half Real and half Fake")
    synth.add_argument("--image-size", type=int, default=synth_module.DEFAULT_IMAGE_SIZE, metavar="PX",
                       help="side of the square output images")
    synth.add_argument("--seed", type=int, default=0, help="random seed")
    synth.add_argument("--split-seed", type=int, default=None, metavar="SEED",
                       help="seed that deals the photos to train/validation/test (default: --seed); give an "
                            "existing set's to draw fresh samples of the same split photos")
    synth.add_argument("--val-fraction", type=float, default=0.15, help="share of images (and photos) for validation")
    synth.add_argument("--test-fraction", type=float, default=0.15, help="share of images (and photos) for test")
    synth.add_argument("--jpeg-quality", type=int, nargs=2, default=list(synth_module.DEFAULT_JPEG_QUALITY),
                       metavar=("LOW", "HIGH"), help="final JPEG quality, uniform in [LOW, HIGH]")
    synth.add_argument("--workers", type=int, default=1,
                       help="processes sharing out the photos (same output bytes for any number)")

    from deepfake_edge.training import edit_synth

    edits = add_verb(
        verbs, "edits", "add full-size edited photos (splice, copy-move, inpainting, graphics, face swap) to a set",
        "Write full-size real/edited photo pairs with masks to OUT/<split>/full/{Real,Fake,masks}/ "
        "(splices from other photos, copy-move, object removal by inpainting, pasted graphics, face "
        "swaps and pastes; at upload sizes, rotated/flipped/recompressed alike), then cut from each pair "
        "the regions inference scores where the edit is (faces, native-resolution tiles, the global view) "
        "into OUT/<split>/{Real,Fake}/eNNNNNN_K.jpg. Run it after 'data synth' on the same OUT: source "
        "photos follow the same seeded split (same --seed, or --split-seed), so the splits stay disjoint.",
        func=_run_edits, formatter_class=_HelpFormatter,
    )
    edits.add_argument("--out", type=Path, default=synth_module.DEFAULT_OUT, help="the set to add to")
    edits.add_argument("--pairs", type=int, default=edit_synth.DEFAULT_PAIRS, help="real/edited pairs in all")
    edits.add_argument("--sizes", type=int, nargs=2, default=list(edit_synth.DEFAULT_SIZES), metavar=("MIN", "MAX"),
                       help="range of the upload size's longer side, px")
    edits.add_argument("--input-size", type=int, default=224, metavar="PX", help="side of the region crops")
    edits.add_argument("--seed", type=int, default=0, help="random seed")
    edits.add_argument("--split-seed", type=int, default=None, metavar="SEED",
                       help="seed that deals the photos to train/validation/test (default: --seed); give the "
                            "same as data synth on this set, so the splits stay disjoint")
    edits.add_argument("--workers", type=int, default=1, help="processes making pairs in parallel")

    from deepfake_edge.training import hard_negatives

    negatives = add_verb(
        verbs, "negatives", "add the regions of unedited photos a checkpoint wrongly finds edited (hard negatives)",
        "Score every region of each unedited full-size photo of a split (ROOT/<split>/full/Real, written by "
        "'data edits': faces, native-resolution tiles and the global view, exactly as inference cuts them) "
        "with CHECKPOINT, and write the --per-photo highest-scoring ones that reach --min-probability as "
        "Real crops ROOT/<split>/Real/nNNNNNN_K.jpg, replacing earlier ones; ROOT/hard_negatives.json says "
        "which checkpoint chose them. A photo's verdict is its highest region, so these are the regions "
        "that make false alarms. Mine the training split only (the default): negatives chosen by a model "
        "in the validation split would tie validation to that model.",
        func=_run_negatives, formatter_class=_HelpFormatter,
    )
    negatives.add_argument("root", type=Path, metavar="ROOT", help="a set with full-size photos ('data edits')")
    negatives.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="the model whose false alarms to mine")
    negatives.add_argument("--per-photo", type=int, default=hard_negatives.DEFAULT_PER_PHOTO,
                           help="most regions kept per unedited photo, highest score first")
    negatives.add_argument("--min-probability", type=float, default=hard_negatives.DEFAULT_MIN_PROBABILITY,
                           metavar="P", help="keep a region only if the checkpoint gives it at least this")
    negatives.add_argument("--splits", nargs="+", default=list(hard_negatives.DEFAULT_SPLITS),
                           choices=("train", "validation", "test"), help="splits to mine")

    from deepfake_edge.training import video_synth

    video_synth.register_videos_command(verbs, _HelpFormatter)

    info = add_verb(verbs, "info", "show a dataset's layout, class counts and unreadable files",
                    "Read a dataset folder exactly as 'deepfake-edge train' will, and report what it finds.",
                    func=_run_info, formatter_class=_HelpFormatter)
    info.add_argument("root", type=Path, metavar="ROOT", help="dataset folder (kaggle or flat layout)")
    info.add_argument("--val-fraction", type=float, default=0.15, help="validation share when splitting")
    info.add_argument("--test-fraction", type=float, default=0.15, help="test share when splitting")
    info.add_argument("--seed", type=int, default=0, help="split seed")
    info.add_argument("--no-verify", action="store_true", help="trust file extensions, do not decode")


def _run_synth(args: argparse.Namespace) -> int:
    from deepfake_edge.training.synth import synthesize

    try:
        synthesize(args.out, source=args.source, count=args.count, image_size=args.image_size, seed=args.seed,
                   split_seed=args.split_seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                   jpeg_quality=tuple(args.jpeg_quality), workers=args.workers)
    except ValueError as error:
        raise CommandError(str(error)) from error
    return 0


def _run_edits(args: argparse.Namespace) -> int:
    from deepfake_edge.preprocessing import Preprocessor
    from deepfake_edge.training.edit_synth import synthesize_edits
    from deepfake_edge.training.region_crops import write_region_crops

    try:
        synthesize_edits(args.out, pairs=args.pairs, seed=args.seed, split_seed=args.split_seed,
                         sizes=tuple(args.sizes), workers=args.workers)
    except ValueError as error:
        raise CommandError(str(error)) from error
    written = write_region_crops(args.out, Preprocessor(args.input_size, round(args.input_size / 0.875)))
    print("region crops (real/fake twins): " + ", ".join(f"{split} {n}" for split, n in written.items()))
    return 0


def _run_negatives(args: argparse.Namespace) -> int:
    from deepfake_edge.training.hard_negatives import mine_hard_negatives

    try:
        counts = mine_hard_negatives(args.root, args.checkpoint, per_photo=args.per_photo,
                                     min_probability=args.min_probability, splits=tuple(args.splits))
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    print("hard negatives (Real crops): " + ", ".join(
        f"{split} {row['crops']} from {row['photos']} photos" for split, row in counts.items()))
    return 0


def _run_info(args: argparse.Namespace) -> int:
    import warnings

    from deepfake_edge.training.datasets import load_splits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped files are listed below instead
            splits = load_splits(args.root, args.val_fraction, args.test_fraction, args.seed,
                                 verify=not args.no_verify)
    except ValueError as error:
        raise CommandError(str(error)) from error
    print(f"root:   {splits.root}")
    print(f"layout: {splits.layout}")
    print(f"{'split':<12}{'Real':>8}{'Fake':>8}{'total':>8}")
    for split, counts in splits.class_counts().items():
        print(f"{split:<12}" + "".join(f"{n:>8}" for n in counts.values()) + f"{sum(counts.values()):>8}")
    print(f"skipped: {len(splits.skipped)} file(s)")
    for path, reason in splits.skipped[:20]:
        print(f"  {path}: {reason}")
    if len(splits.skipped) > 20:
        print(f"  ... and {len(splits.skipped) - 20} more")
    print(splits.describe())
    return 0
