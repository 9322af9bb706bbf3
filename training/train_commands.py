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
    from deepfake_edge.training.commands import _HelpFormatter
    from deepfake_edge.training.config import TrainConfig

    defaults = TrainConfig()
    p = subparsers.add_parser(
        "train", help="train a real/fake detector (EfficientNet-B0 by default)",
        description="Train a one-logit detector; writes best.safetensors (weights + model card), "
                    "last_state.pt (for --resume), history.json and curves.png into --out.",
        formatter_class=_HelpFormatter,
    )
    _add_data_options(p)
    p.add_argument("--arch", default=defaults.arch, help="efficientnet_b0, small_cnn or any timm model name")
    p.add_argument("--input-size", type=int, default=defaults.input_size, help="square side the network sees, px")
    p.add_argument("--resize-size", type=int, default=defaults.resize_size,
                   help="shorter side before the centre crop, px (default: input size / 0.875)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training split")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per optimiser step")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                   help="AdamW weight decay (none on norms and biases)")
    p.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs,
                   help="linear warm-up before the cosine decay, in epochs (fractions allowed)")
    p.add_argument("--clip-grad", type=float, default=defaults.clip_grad, help="gradient-norm clipping")
    p.add_argument("--drop-path", dest="drop_path_rate", type=float, default=defaults.drop_path_rate,
                   help="stochastic depth rate for timm models; the demo B0 uses 0.4, which lifted its test "
                        "ROC-AUC from 0.83 to 0.88; 0 turns it off")
    p.add_argument("--mask-loss", type=float, default=defaults.mask_loss,
                   help="weight of an auxiliary loss that teaches the last feature map where the edit is (needs "
                        "the masks/ folder 'data synth' and 'data edits' write; the head is training-only, "
                        "checkpoints are unchanged); the demo B0 uses 1, which raised its validation ROC-AUC by "
                        "0.007 on two seeds; 0 turns it off")
    p.add_argument("--freeze-blocks", type=int, default=defaults.freeze_blocks,
                   help="keep the stem and the first N stages at their initial weights (EfficientNet-style models)")
    p.add_argument("--patience", type=int, default=defaults.patience,
                   help="early stopping: epochs without a better validation AUC")
    p.add_argument("--init-weights", default=defaults.init_weights,
                   help="initial weights: a .safetensors/.pt state dict, or 'lite0' (packaged EfficientNet-Lite0 "
                        "ImageNet) (default: random)")
    p.add_argument("--no-pair-batches", dest="pair_batches", action="store_false",
                   help="do not batch each fake with its same-named real twin under one augmentation draw "
                        "(pairs are batched by default)")
    p.add_argument("--folds", type=int, default=0,
                   help="stratified k-fold cross-validation over train+validation; 0 trains once")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory")
    p.add_argument("--resume", type=Path, default=None,
                   help="continue the run of this last_state.pt (its stored settings win over the options above)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop this invocation after N epochs (resume later; default: run to the end)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of initialisation, order and augmentation")
    p.add_argument("--workers", type=int, default=defaults.workers, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--checkpoint-dtype", choices=("float32", "float16"), default=defaults.checkpoint_dtype,
                   help="dtype of the saved weights")
    p.add_argument("--device", default=defaults.device, help="auto (CUDA if available), cpu, cuda, cuda:1...")
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
    from deepfake_edge.training.config import TrainConfig
    from deepfake_edge.training.train import config_from_state, fit

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
