"""Checkpoint format: a safetensors file holding the weights, with the :class:`ModelCard` as metadata.

``save_checkpoint`` / ``load_checkpoint`` are the only readers and writers of detector weights, so a
checkpoint is self-describing: ``load_checkpoint(path)`` needs nothing but the path.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from deepfake_edge.model_card import ModelCard
from deepfake_edge.models import build_model

_CARD_KEY = "deepfake_edge.model_card"


def save_checkpoint(path: str | Path, model: nn.Module, card: ModelCard, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``model``'s weights (floating tensors cast to ``dtype``) and ``card`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: (t.detach().to(dtype) if t.is_floating_point() else t.detach()).contiguous().cpu()
        for name, t in model.state_dict().items()
    }
    save_file(tensors, str(path), metadata={_CARD_KEY: card.to_json()})
    return path


def read_card(path: str | Path) -> ModelCard:
    """The model card of a checkpoint, without loading its weights."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if _CARD_KEY not in metadata:
        raise ValueError(f"{path} is not a deepfake-edge checkpoint (no model card in its metadata)")
    return ModelCard.from_json(metadata[_CARD_KEY])


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model described by the checkpoint's card, load its weights (as float32), eval mode."""
    card = read_card(path)
    model = build_model(card.arch)
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    state = {name: t.float() if t.is_floating_point() else t for name, t in state.items()}
    model.load_state_dict(state)
    return model.to(device).eval(), card
