"""The ``calibrate``, ``train`` and ``evaluate`` verbs (registered by ``deepfake_edge.training.commands``).

Only argparse lives here; torch and the training code are imported when a verb runs. Progress lines come
from the training modules' loggers (``log_to_terminal`` shows them on stderr), results go to stdout, and
input problems are raised as :class:`~deepfake_edge.cli.CommandError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deepfake_edge.cli import CommandError, add_verb, log_to_terminal
from deepfake_edge.training.commands import _HelpFormatter
from deepfake_edge.training.config import RefitOptions, TrainConfig

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_calibrate(subparsers)
    _register_train(subparsers)
    _register_evaluate(subparsers)
    _register_refit_head(subparsers)


def _verb(subparsers: argparse._SubParsersAction, name: str, help: str, func: Callable[[argparse.Namespace], int],
          checkpoint: str | None = None) -> argparse.ArgumentParser:
    """Add verb ``name`` run by ``func``, whose docstring is the description ``--help`` opens with (the defaults
    are shown too); ``checkpoint`` is the help of a leading checkpoint argument, for the verbs that take one."""
    parser = add_verb(subparsers, name, help, inspect.getdoc(func), func=func, formatter_class=_HelpFormatter)
    if checkpoint:
        parser.add_argument("checkpoint", type=Path, help=checkpoint)
    return parser


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path,
                        help="dataset root: ROOT/{train,validation,test}/{Real,Fake}/ or ROOT/{Real,Fake}/")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="validation share when it must be carved out")
    parser.add_argument("--test-fraction", type=float, default=0.15, help="test share when it must be carved out")
    parser.add_argument("--no-verify", action="store_true", help="skip decoding every image up front")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per :class:`TrainConfig` field the CLI exposes; its default (and type) is the field's."""
    defaults = TrainConfig()

    def option(flag: str, help: str, dest: str | None = None, **kwargs: Any) -> None:
        dest = dest or flag.removeprefix("--").replace("-", "_")
        default = getattr(defaults, dest)
        if default is not None and "action" not in kwargs:
            kwargs.setdefault("type", type(default))
        parser.add_argument(flag, dest=dest, default=default, help=help, **kwargs)

    option("--arch", "efficientnet_b0, small_cnn or any timm model name")
    option("--input-size", "square side the network sees, px")
    option("--resize-size", "shorter side before the centre crop, px (default: input size / 0.875)", type=int)
    option("--epochs", "passes over the training split")
    option("--batch-size", "images per optimiser step")
    option("--lr", "peak AdamW learning rate")
    option("--weight-decay", "AdamW weight decay (none on norms and biases)")
    option("--warmup-epochs", "linear warm-up before the cosine decay, in epochs (fractions allowed)")
    option("--clip-grad", "gradient-norm clipping")
    option("--drop-path", "stochastic depth rate for timm models; the demo B0 uses 0.4, which lifted its test "
                          "ROC-AUC from 0.83 to 0.88; 0 turns it off", dest="drop_path_rate")
    option("--mask-loss", "weight of an auxiliary loss that teaches the last feature map where the edit is (needs "
                          "the masks/ folder 'data synth' and 'data edits' write; the head is training-only, "
                          "checkpoints are unchanged); the demo B0 uses 1, which raised its validation ROC-AUC by "
                          "0.007 on two seeds; 0 turns it off")
    option("--distill-from", "a checkpoint whose fake probabilities on the self-blended samples (not the crops of "
                             "full-size photos) are a second, soft target, so a run that learns new edits keeps "
                             "what that model knew (docs/training.md) (default: none)", type=str)
    option("--distill-weight", "weight of that soft target's loss")
    option("--freeze-blocks", "keep the stem and the first N stages at their initial weights (EfficientNet-style "
                              "models)")
    option("--patience", "early stopping: epochs without a better validation AUC")
    option("--init-weights", "initial weights: a .safetensors/.pt state dict, or 'lite0' (packaged "
                             "EfficientNet-Lite0 ImageNet) (default: random)", type=str)
    option("--pair-batches", "batch each fake with its same-named real twin under one augmentation draw",
           action=argparse.BooleanOptionalAction)
    option("--seed", "seed of initialisation, order and augmentation")
    option("--workers", "DataLoader worker processes")
    option("--checkpoint-dtype", "dtype of the saved weights", choices=("float32", "float16"))
    option("--device", "auto (CUDA if available), cpu, cuda, cuda:1...")


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    p = _verb(subparsers, "train", "train a real/fake detector (EfficientNet-B0 by default)", run_train)
    _add_data_options(p)
    _add_config_options(p)
    p.add_argument("--folds", type=int, default=0,
                   help="stratified k-fold cross-validation over train+validation; 0 trains once")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="run directory")
    p.add_argument("--resume", type=Path, default=None,
                   help="continue the run of this last_state.pt (its stored settings win over the options above)")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop this invocation after N epochs (resume later; default: run to the end)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
    p = _verb(subparsers, "evaluate", "metrics and plots of a checkpoint on a dataset split", run_evaluate,
              checkpoint="a .safetensors checkpoint written by 'train'")
    _add_data_options(p)
    p.add_argument("--split", choices=("train", "validation", "test", "all"), default="test",
                   help="which split to score")
    p.add_argument("--seed", type=int, default=0, help="split seed for layouts that must be split (flat)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON on stdout (nothing else)")
    p.add_argument("--out", type=Path, default=None, help="write metrics.json and PNG plots here")
    p.add_argument("--history", type=Path, default=None,
                   help="history.json to plot (default: found beside the checkpoint)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1...")
    p.add_argument("--whole-images", action="store_true",
                   help="score the split's full-size photos (data edits' <split>/full/) by whole-image analysis "
                        "at the card's image threshold: ROC-AUC, caught, false alarms, pointing game per edit "
                        "family (--out: whole_image.json)")
    p.add_argument("--videos", action="store_true",
                   help="score the split's videos (from 'data videos'; DATA is that set) frame by frame under the "
                        "card's video rule and threshold: ROC-AUC per edit family and footage, caught, false alarms "
                        "(--out: video_report.json, video_timelines.png)")


def _register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    from deepfake_edge.regions import DEFAULT_MAX_FALSE_ALARM

    p = _verb(subparsers, "calibrate", "set a checkpoint's whole-image threshold on full-size validation photos",
              run_calibrate, checkpoint="a .safetensors checkpoint (rewritten with the threshold)")
    p.add_argument("data", type=Path, help="a set with <split>/full/ photos, from 'data edits' (with --videos: a "
                                           "set from 'data videos')")
    p.add_argument("--max-false-alarm", type=float, default=DEFAULT_MAX_FALSE_ALARM,
                   help="share of unedited validation photos (or videos) allowed to be called Fake")
    p.add_argument("--videos", action="store_true",
                   help="calibrate the video verdict instead: on DATA's validation videos pick the frame-aggregation "
                        "rule with the best ROC-AUC and its threshold (the card's video_rule, video_threshold)")
    p.add_argument("--copy-move", action="store_true",
                   help="also fit the copy-move check's calibration (the card's copy_move_calibration) on DATA's "
                        "training copy-move pairs, which turns it on in whole-image analysis (the demo B0's card has "
                        "it); ~0.1 s per photo with two cores (docs/detection.md)")


def run_calibrate(args: argparse.Namespace) -> int:
    """Score the validation split's full-size photos (from 'data edits') by whole-image analysis (faces, tiles,
    global view; the highest region decides) and store in the checkpoint's card the lowest threshold that calls
    at most --max-false-alarm of the unedited photos Fake."""
    from deepfake_edge.training.whole_image import calibrate, format_whole_image_report

    if args.videos:
        from deepfake_edge.training.video_eval import run_calibrate_videos

        return run_calibrate_videos(args)
    log_to_terminal()
    try:
        validation = calibrate(args.checkpoint, args.data, args.max_false_alarm, copy_move=args.copy_move)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    print(f"{args.checkpoint}: image_threshold set on validation photos\n{format_whole_image_report(validation)}")
    return 0


def _load(args: argparse.Namespace, seed: int):
    from deepfake_edge.training.datasets import load_splits

    splits = load_splits(args.data, args.val_fraction, args.test_fraction, seed=seed, verify=not args.no_verify)
    log.info("%s", splits.describe())
    return splits


def _train_config(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The run's settings and directory: the options, or with ``--resume`` the state file's own."""
    from deepfake_edge.training.train_state import config_from_state

    if args.resume:
        config = config_from_state(args.resume)
        log.info("resuming %s: using its stored settings (%s, %d px, %d epochs)", args.resume, config.arch,
                 config.input_size, config.epochs)
        return config, args.resume.parent
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields}), args.out


def run_train(args: argparse.Namespace) -> int:
    """Train a one-logit detector; writes best.safetensors (weights + model card), last_state.pt (for --resume),
    history.json and curves.png into --out."""
    import torch

    from deepfake_edge.training.cross_validation import cross_validate, format_summary
    from deepfake_edge.training.train import fit

    log_to_terminal()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config, out = _train_config(args)
        splits = _load(args, config.seed)
        if args.folds:
            results = cross_validate(splits, args.folds, config, out)
            print(format_summary(results["summary"], args.folds))
        else:
            fit(splits.train, splits.validation, config, out, training_data=splits.describe(),
                resume=args.resume, stop_after=args.stop_after)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Accuracy, ROC-AUC, AP, precision, recall, F1, FPR at the card's threshold, EER and the confusion matrix;
    with --out also metrics.json, roc.png, confusion_matrix.png and training_curves.png (when the run's
    history.json is found)."""
    from deepfake_edge.training.evaluate import evaluate_checkpoint, format_report, to_json

    log_to_terminal()
    if args.videos:
        from deepfake_edge.training.video_eval import run_evaluate_videos

        return run_evaluate_videos(args)
    if args.whole_images:
        return _evaluate_whole_images(args)
    try:
        splits = _load(args, args.seed)
        samples = splits.train + splits.validation + splits.test if args.split == "all" else splits.split(args.split)
        report = evaluate_checkpoint(args.checkpoint, samples, split=args.split, out_dir=args.out,
                                     batch_size=args.batch_size, workers=args.workers, device=args.device,
                                     history=args.history)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    print(to_json(report) if args.json else format_report(report))
    return 0


def _evaluate_whole_images(args: argparse.Namespace) -> int:
    from deepfake_edge.checkpoint import read_card
    from deepfake_edge.training.whole_image import card_threshold, format_whole_image_report, report, score_photos

    if args.split == "all":
        raise CommandError("--whole-images scores one split")
    try:
        summary = report(score_photos(args.checkpoint, args.data, args.split), card_threshold(read_card(args.checkpoint)))
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "whole_image.json").write_text(json.dumps({"split": args.split, **summary}, indent=2) + "\n")
    print(json.dumps(summary) if args.json else format_whole_image_report(summary))
    return 0


def _register_refit_head(subparsers: argparse._SubParsersAction) -> None:
    p = _verb(subparsers, "refit-head", "refit a checkpoint's last layer on every region of the training photos",
              run_refit_head, checkpoint="a .safetensors checkpoint (left as it is)")
    p.add_argument("data", type=Path, help="a set with train/full/ photos from 'data edits' (and its crops)")
    p.add_argument("--out", type=Path, required=True, help="the refitted checkpoint to write")
    p.add_argument("--max-pairs", type=int, default=None, help="training pairs to use (default: all)")
    defaults = RefitOptions()
    helps = {"photo_weight": "weight of each photo's soft-maximum region against its label",
             "self_blend_weight": "weight of the self-blended training crops",
             "pull": "L2 pull towards the checkpoint's own classifier", "fake_share": "share of the region loss "
             "on Fake regions", "temperature": "of the soft maximum, in logits", "iterations": "L-BFGS iterations",
             "seed": "picks the self-blended crops"}
    for name, help in helps.items():
        default = getattr(defaults, name)
        p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=help)


def run_refit_head(args: argparse.Namespace) -> int:
    """Keep the backbone and refit the linear classifier on what whole-image analysis scores: every region
    (faces, tiles, global view) of both twins of each training pair, labelled by the edit mask, each photo's
    soft-maximum region against the photo's label, and the self-blended crops (docs/training.md). The crop
    threshold is set again on the validation crops; run 'calibrate' on the result for its image threshold (with
    --copy-move for a card that had the copy-move check)."""
    from deepfake_edge.training.head_refit import refit_head

    log_to_terminal()
    options = RefitOptions(**{name: getattr(args, name) for name in RefitOptions.__dataclass_fields__})
    try:
        record = refit_head(args.checkpoint, args.data, args.out, options, args.max_pairs)
    except (ValueError, FileNotFoundError) as error:
        raise CommandError(str(error)) from error
    regions = record["regions"]
    print(f"{args.out}: head refitted on {record['photos']} photos ({regions['fake']} Fake, {regions['real']} Real "
          f"regions, {regions['left_out']} left out) and {record['self_blend_crops']} self-blended crops in "
          f"{record['seconds']:.0f} s; run 'deepfake-edge calibrate {args.out} {args.data}' next (with --copy-move "
          f"to keep the copy-move check)")
    return 0

