"""The ``train`` and ``evaluate`` verbs (registered by ``deepfake_edge.training.commands``).

Only argparse lives here; torch and the training code are imported when a verb runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_calibrate(subparsers)
    _register_train(subparsers)
    _register_evaluate(subparsers)


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path,
                        help="dataset root: ROOT/{train,validation,test}/{Real,Fake}/ or ROOT/{Real,Fake}/")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="validation share when it must be carved out")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="test share when it must be carved out")
    parser.add_argument("--no-verify", action="store_true", help="skip decoding every image up front")


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a real/fake detector (EfficientNet-B0 by default)",
        description="Train a one-logit detector; writes best.safetensors (weights + model card), "
                    "last_state.pt (for --resume), history.json and curves.png into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_data_options(p)
    p.add_argument("--arch", default="efficientnet_b0", help="efficientnet_b0, small_cnn or any timm model name")
    p.add_argument("--input-size", type=int, default=128, help="square side the network sees (pixels)")
    p.add_argument("--resize-size", type=int, default=None,
                   help="shorter side before the centre crop (default input/0.875)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--clip-grad", type=float, default=1.0, help="gradient-norm clipping")
    p.add_argument("--drop-path", dest="drop_path_rate", type=float, default=0.0,
                   help="stochastic depth rate for timm models; the demo B0 uses 0.4, which lifted its test "
                        "ROC-AUC from 0.83 to 0.88; 0 turns it off")
    p.add_argument("--mask-loss", type=float, default=0.0,
                   help="weight of an auxiliary loss that teaches the last feature map where the blend is (needs "
                        "the masks/ folder 'data synth' writes; the head is training-only, checkpoints are "
                        "unchanged); the demo B0 uses 1, which raised its validation ROC-AUC by 0.007 on two "
                        "seeds; 0 turns it off")
    p.add_argument("--freeze-blocks", type=int, default=0,
                   help="keep the stem and the first N stages at their initial weights (EfficientNet-style models)")
    p.add_argument("--patience", type=int, default=5, help="early stopping: epochs without a better validation AUC")
    p.add_argument("--init-weights", default=None,
                   help="initial weights: a .safetensors/.pt state dict, "
                        "or 'lite0' (packaged EfficientNet-Lite0 ImageNet)")
    p.add_argument("--no-pair-batches", dest="pair_batches", action="store_false",
                   help="do not batch each fake with its same-named real twin under one augmentation draw")
    p.add_argument("--folds", type=int, default=0, help="stratified k-fold cross-validation over train+validation")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory")
    p.add_argument("--resume", type=Path, default=None,
                   help="continue the run of this last_state.pt (its stored settings win over the options above)")
    p.add_argument("--stop-after", type=int, default=None, help="stop this invocation after N epochs (resume later)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--checkpoint-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1...")
    p.set_defaults(func=run_train)


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="metrics and plots of a checkpoint on a dataset split",
        description="Accuracy, ROC-AUC, AP, precision, recall, F1, FPR at the card's threshold, EER and the "
                    "confusion matrix; with --out also metrics.json, roc.png, confusion_matrix.png and "
                    "training_curves.png (when the run's history.json is found).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint written by 'train'")
    _add_data_options(p)
    p.add_argument("--split", choices=("train", "validation", "test", "all"), default="test")
    p.add_argument("--seed", type=int, default=0, help="split seed for layouts that must be split (flat)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout (nothing else)")
    p.add_argument("--out", type=Path, default=None, help="write metrics.json and PNG plots here")
    p.add_argument("--history", type=Path, default=None,
                   help="history.json to plot (default: found beside the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--whole-images", action="store_true",
                   help="score the split's full-size photos (data edits' <split>/full/) by whole-image analysis "
                        "at the card's image threshold: ROC-AUC, caught, false alarms, pointing game per edit "
                        "family (--out: whole_image.json)")
    p.set_defaults(func=run_evaluate)


def _register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    from deepfake_edge.regions import DEFAULT_MAX_FALSE_ALARM

    p = subparsers.add_parser(
        "calibrate", help="set a checkpoint's whole-image threshold on full-size validation photos",
        description="Score the validation split's full-size photos (from 'data edits') by whole-image analysis "
                    "(faces, tiles, global view; the highest region decides) and store in the checkpoint's card "
                    "the lowest threshold that calls at most --max-false-alarm of the unedited photos Fake.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint (rewritten with the threshold)")
    p.add_argument("data", type=Path, help="a set with <split>/full/ photos, from 'data edits'")
    p.add_argument("--max-false-alarm", type=float, default=DEFAULT_MAX_FALSE_ALARM,
                   help="share of unedited validation photos allowed to be called Fake")
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from deepfake_edge.training.whole_image import calibrate, format_whole_image_report

    try:
        validation = calibrate(args.checkpoint, args.data, args.max_false_alarm)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.checkpoint}: image_threshold set on validation photos\n{format_whole_image_report(validation)}")
    return 0


def _load(args: argparse.Namespace, seed: int):
    from deepfake_edge.training.datasets import load_splits

    splits = load_splits(args.data, args.val_fraction, args.test_fraction, seed=seed, verify=not args.no_verify)
    print(splits.describe(), file=sys.stderr)
    return splits


def run_train(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from deepfake_edge.training.cross_validation import cross_validate
    from deepfake_edge.training.train import TrainConfig, config_from_state, fit

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.resume:
        config, out = config_from_state(args.resume), args.resume.parent
        print(f"resuming {args.resume}: using its stored settings ({config.arch}, {config.input_size} px, "
              f"{config.epochs} epochs)", file=sys.stderr)
    else:
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        config = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
        out = args.out
    try:
        splits = _load(args, config.seed)
        if args.folds:
            cross_validate(splits, args.folds, config, out)
        else:
            fit(splits.train, splits.validation, config, out, training_data=splits.describe(),
                resume=args.resume, stop_after=args.stop_after)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from deepfake_edge.training.evaluate import evaluate_checkpoint, format_report, to_json

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.whole_images:
        return _evaluate_whole_images(args)
    try:
        splits = _load(args, args.seed)
        samples = splits.train + splits.validation + splits.test if args.split == "all" else splits.split(args.split)
        report = evaluate_checkpoint(args.checkpoint, samples, split=args.split, out_dir=args.out,
                                     batch_size=args.batch_size, workers=args.workers, device=args.device,
                                     history=args.history)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(to_json(report) if args.json else format_report(report))
    return 0


def _evaluate_whole_images(args: argparse.Namespace) -> int:
    from deepfake_edge.checkpoint import read_card
    from deepfake_edge.training.whole_image import card_threshold, format_whole_image_report, report, score_photos

    if args.split == "all":
        print("error: --whole-images scores one split", file=sys.stderr)
        return 2
    try:
        summary = report(score_photos(args.checkpoint, args.data, args.split), card_threshold(read_card(args.checkpoint)))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "whole_image.json").write_text(json.dumps({"split": args.split, **summary}, indent=2) + "\n")
    print(json.dumps(summary) if args.json else format_whole_image_report(summary))
    return 0
