"""Detector architectures: any timm backbone with one logit, and a small CNN baseline.

Every model returned by :func:`build_model` has the same three-part contract that export relies on:
``forward_features(x) -> (N, C, h, w)`` (the last convolutional activation), a global average pool,
and ``get_classifier() -> nn.Linear(C, 1)``. ``forward(x)`` returns the fake logit, shape (N, 1), and
equals ``forward_head(forward_features(x))`` (training reuses the features for an auxiliary target).
"""

from __future__ import annotations

import torch
from torch import nn

from deepfake_edge._compat import import_timm

SMALL_CNN = "small_cnn"


class SmallCNN(nn.Module):
    """A 5-stage Conv-BN-SiLU baseline (~0.4 M parameters): the "custom CNN" seed projects serve."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 192, 256), drop_rate: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for width in widths:
            layers += [
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.SiLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
                nn.BatchNorm2d(width),
                nn.SiLU(inplace=True),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.num_features = in_channels
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(in_channels, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def get_classifier(self) -> nn.Linear:
        return self.classifier

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(features.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def build_model(arch: str, drop_rate: float = 0.2, drop_path_rate: float = 0.0) -> nn.Module:
    """Create an untrained detector: ``small_cnn`` or any timm model name (``efficientnet_b0``...).

    ``drop_rate`` is dropout before the classifier; ``drop_path_rate`` is timm's stochastic depth (residual
    branches dropped per sample, linearly more in deeper blocks), which the small CNN does not have.
    """
    if arch == SMALL_CNN:
        if drop_path_rate:
            raise ValueError("small_cnn has no residual blocks: stochastic depth (--drop-path) needs a timm model")
        return SmallCNN(drop_rate=drop_rate)
    timm = import_timm()
    return timm.create_model(arch, pretrained=False, num_classes=1, drop_rate=drop_rate, drop_path_rate=drop_path_rate)


def freeze_early_layers(model: nn.Module, blocks: int) -> int:
    """Stop training the stem and the first ``blocks`` stages of a timm EfficientNet-style model.

    Returns the number of parameters frozen. Use :func:`train_mode` instead of ``model.train()`` so the
    frozen BatchNorm layers keep their (pretrained) running statistics too.
    """
    stages = getattr(model, "blocks", None)
    if not hasattr(model, "conv_stem") or stages is None:
        raise ValueError(f"{type(model).__name__} has no conv_stem/blocks: "
                         "--freeze-blocks needs an EfficientNet-style model")
    if not 0 <= blocks <= len(stages):
        raise ValueError(f"--freeze-blocks must be between 0 and {len(stages)} for this model (got {blocks})")
    frozen = [model.conv_stem, model.bn1, *stages[:blocks]]
    params = [p for module in frozen for p in module.parameters()]
    for param in params:
        param.requires_grad_(False)
    return sum(p.numel() for p in params)


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except that modules whose parameters are all frozen stay in eval mode."""
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            module.eval()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
