"""What ``train --resume`` needs: a run's progress (:class:`TrainingState`) and its state file.

``last_state.pt`` holds the configuration, the progress and the ``state_dict`` of every part that training
changes (model, optimiser, scheduler, gradient scaler, and the blend-mask head when it is on). It is kept
apart from ``best.safetensors``, the weights file that ships.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from deepfake_edge.training.config import TrainConfig

log = logging.getLogger(__name__)

STATE_FILE = "last_state.pt"
STATE_FORMAT = 2  # 2: timm scheduler + TrainingState (format 1, a LambdaLR and a plain dict, is not read)
_TIE = 1e-4


@dataclass
class TrainingState:
    """Where a run stands after ``epoch`` epochs; saved in ``last_state.pt`` so ``--resume`` continues it."""

    epoch: int = 0
    updates: int = 0  # optimiser steps so far: the learning-rate schedule's clock
    best_epoch: int = 0  # 0: no checkpoint written yet
    best_auc: float = -1.0
    best_loss: float = math.inf
    stale_epochs: int = 0  # epochs since the best one (early stopping)
    train_images: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch, as in history.json

    @property
    def throughput(self) -> float:
        """Training images per second (forward + backward + step, without validation)."""
        return self.train_images / max(self.train_seconds, 1e-9)

    def record(self, epoch: int, auc: float, val_loss: float) -> bool:
        """Close ``epoch`` with its validation ROC-AUC (NaN counts as 0) and loss; True if it is the new best.

        Ties in AUC (within 1e-4, common once it saturates on easy data) go to the lower validation loss."""
        auc = 0.0 if math.isnan(auc) else auc
        improved = auc > self.best_auc + _TIE or (auc >= self.best_auc - _TIE and val_loss < self.best_loss)
        self.epoch = epoch
        if improved:
            self.best_auc, self.best_loss, self.best_epoch = max(auc, self.best_auc), val_loss, epoch
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        return improved


def save_state(path: Path, config: TrainConfig, state: TrainingState, parts: Mapping[str, Any]) -> None:
    """Write ``config``, ``state`` and the ``state_dict`` of each of ``parts`` (name -> module, optimiser, ...)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"format": STATE_FORMAT, "config": dataclasses.asdict(config), "progress": dataclasses.asdict(state),
                **{name: part.state_dict() for name, part in parts.items()}}, tmp)
    tmp.replace(path)  # never leave a half-written state file behind an interrupted run


def load_state(path: str | Path) -> dict[str, Any]:
    """The saved dictionary of a state file of this format; a clear error for any other file."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a state file of this version's 'train' (start a new run)")
    return saved


def resume(path: str | Path, parts: Mapping[str, Any]) -> TrainingState:
    """Load each of ``parts`` from the state file at ``path`` (the names :func:`save_state` wrote); its progress."""
    saved = load_state(path)
    for name, part in parts.items():
        part.load_state_dict(saved[name])
    state = TrainingState(**saved["progress"])
    log.info("resumed from %s after epoch %d", path, state.epoch)
    return state


def config_from_state(path: str | Path) -> TrainConfig:
    """The configuration of the run a state file belongs to (``--resume`` continues exactly that run)."""
    return TrainConfig(**load_state(path)["config"])
