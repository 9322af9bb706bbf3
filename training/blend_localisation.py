"""Auxiliary training target: where in the image is the blend? (``deepfake-edge train --mask-loss W``).

A self-blended fake differs from its real twin only inside its blend mask, and ``data synth`` saves that
mask. :class:`BlendMaskHead` is a 1x1 convolution on the detector's last feature map that predicts, for
every cell of that map, the fraction of it that is blended: the mask averaged over the cell for a fake,
zero everywhere for a real image. Training it beside the real/fake logit asks the shared features to
point at the blend itself, not at content that merely correlates with it (texture, natural blur edges),
which is what moves the score of real images. In the spirit of Face X-ray (Li et al., CVPR 2020) and the
localisation branch some SBI follow-ups add.

The head exists only during training: checkpoints, export and serving see the plain one-logit model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BlendMaskHead(nn.Module):
    """``features (N, C, h, w)`` -> blend-fraction logits ``(N, 1, h, w)``; starts at zero (p = 0.5 everywhere)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)

    def loss(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy against :func:`blend_fractions` of ``masks`` on the feature grid."""
        logits = self(features).float()
        return F.binary_cross_entropy_with_logits(logits, blend_fractions(masks, logits.shape[-2:]))


def blend_fractions(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """uint8 masks (N, 1, H, W), 255 = blended -> the blended fraction of each cell of a ``grid`` (N, 1, h, w)."""
    return F.adaptive_avg_pool2d(masks.float() / 255.0, grid)
