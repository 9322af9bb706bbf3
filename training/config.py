"""What defines a training run, apart from the code: :class:`TrainConfig`, and :class:`RefitOptions` for
``refit-head`` (no torch here, so the CLI can show their defaults without loading torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Everything that defines a run (stored in the state file, so ``--resume`` continues the same run)."""

    arch: str = "efficientnet_b0"
    input_size: int = 128
    resize_size: int | None = None  # default: input_size / 0.875, the usual centre-crop ratio
    interpolation: str = "bilinear"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip_grad: float = 1.0
    drop_rate: float = 0.2
    drop_path_rate: float = 0.0
    freeze_blocks: int = 0
    patience: int = 5
    init_weights: str | None = None
    seed: int = 0
    workers: int = 1
    checkpoint_dtype: str = "float32"
    device: str = "auto"
    pair_batches: bool = True
    mask_loss: float = 0.0  # weight of the auxiliary blend-localisation loss (blend_localisation.py); 0 = off
    distill_from: str | None = None  # a checkpoint whose answers on self-blends are kept (distillation.py)
    distill_weight: float = 1.0

    def resolved_resize_size(self) -> int:
        return self.resize_size or round(self.input_size / 0.875)


@dataclass(frozen=True)
class RefitOptions:
    """``refit-head``'s settings: the weights of its objective's terms (training/head_refit.py) and the L-BFGS
    iterations; ``seed`` draws the self-blended crops."""

    fake_share: float = 0.5
    photo_weight: float = 2.0
    temperature: float = 0.25
    self_blend_weight: float = 0.5
    pull: float = 0.01
    iterations: int = 60
    seed: int = 0
