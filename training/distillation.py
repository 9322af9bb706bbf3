"""Keep what an earlier model knew while a run learns something new: distillation on the self-blended crops.

Stage 2 of the demo B0 starts from the stage-1 checkpoint, which learned self-blends only, and teaches it the
edits people make; every CPU epoch of it traded some of the self-blend skill away (crop test ROC-AUC on the
self-blends 0.977 -> 0.944 over five epochs). ``train --distill-from TEACHER`` gives every self-blended sample of
a batch (and its unedited twin) the teacher's fake probability as a second, soft target, *Learning without
Forgetting* (Li & Hoiem, 2016): the optimised loss gains ``distill_weight * BCE(student logit, teacher
probability)`` over those samples. The regions of full-size photos (``data edits``' and ``data negatives``'
crops) get none: the teacher never learned them, and its answers there are what stage 2 corrects.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.functional import binary_cross_entropy_with_logits

from deepfake_edge.checkpoint import load_checkpoint
from deepfake_edge.preprocessing import normalize
from deepfake_edge.training.datasets import is_full_size_crop


def distilled(samples: list) -> list[bool]:
    """Which samples get the teacher's soft target: the self-blended crops and their twins."""
    return [not is_full_size_crop(sample.path) for sample in samples]


class Teacher:
    """A frozen checkpoint whose fake probabilities on a batch's flagged images are soft targets.

    It normalises with its own card's mean and std, so it may come from other initial weights than the student."""

    def __init__(self, checkpoint: str | Path, device: torch.device, input_size: int) -> None:
        model, self.card = load_checkpoint(checkpoint)
        if self.card.input_size != input_size:
            raise ValueError(f"the teacher {checkpoint} sees {self.card.input_size} px, the run {input_size} px")
        self.model = model.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's fake probability (N,) of UINT8 (N, 3, H, W) ``images`` already on its device."""
        batch = normalize(images, self.card.mean, self.card.std).contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(self.model(batch).squeeze(1).float())

    def loss(self, student_logits: torch.Tensor, images: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
        """Mean BCE between the student's logits and the teacher's probabilities over the flagged rows (0 when
        none is flagged, so every batch gives a loss)."""
        if not bool(flags.any()):
            return student_logits.sum() * 0.0
        targets = self.probabilities(images[flags])
        return binary_cross_entropy_with_logits(student_logits[flags].float(), targets)
