"""The per-checkpoint INT8 recipe file: the FP32-fallback search's outcome, committed beside the checkpoint.

The search (:mod:`deepfake_edge.export.fallback`) quantizes a few dozen candidates and is most of an
export's time. Its outcome depends only on the checkpoint, the quantization recipe and the data, so
``export`` writes it to ``<checkpoint stem>.int8.json`` next to the checkpoint (for the demo models:
``models/demo/efficientnet_b0.int8.json``), keyed by the checkpoint file's SHA-256. A later export of
the same checkpoint with the same recipe quantizes with the stored FP32 units directly (still
calibrating, and still checking INT8 against FP32 on the test split); a retrained checkpoint has
another SHA-256, so its export searches again and rewrites the file. ``--search-fallback`` forces the search.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from deepfake_edge.digest import file_sha256

SUFFIX = ".int8.json"
FORMAT = 1


def recipe_path(checkpoint: Path) -> Path:
    """``models/demo/efficientnet_b0.safetensors`` -> ``models/demo/efficientnet_b0.int8.json``."""
    return checkpoint.with_name(checkpoint.stem + SUFFIX)


@dataclass(frozen=True)
class StoredRecipe:
    """What a recipe file holds that the export uses: the FP32 units, and the file it came from."""

    path: Path
    fp32_units: tuple[str, ...]
    data: dict

    @property
    def missed_bound_when_written(self) -> bool:
        """Whether the search's own best already missed the accuracy bound on the test split."""
        return bool(self.data.get("test_problems"))


def load(checkpoint: Path, recipe_description: dict) -> tuple[StoredRecipe | None, str]:
    """The stored outcome for ``checkpoint`` under the recipe ``recipe_description`` (``recipe.describe()``).

    Returns (stored, why): ``stored`` is None when there is no file, it is unreadable, or it was written
    for another checkpoint file (SHA-256) or another recipe; ``why`` says which, for the log.
    """
    path = recipe_path(checkpoint)
    if not path.is_file():
        return None, f"no INT8 recipe file {path}"
    try:
        data = json.loads(path.read_text())
        stored_sha, stored_recipe, units = data["checkpoint_sha256"], data["recipe"], data["fp32_units"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"{path} is unreadable ({error!r})"
    if stored_sha != file_sha256(checkpoint):
        return None, f"{path} was written for another checkpoint file (SHA-256 {stored_sha[:12]}...)"
    if stored_recipe != recipe_description:
        return None, f"{path} was written for another quantization recipe"
    if not isinstance(units, list) or not all(isinstance(unit, str) for unit in units):
        return None, f"{path} has no list of FP32 units"
    return StoredRecipe(path, tuple(units), data), f"reusing the FP32 units of {path}"


def write(checkpoint: Path, recipe_description: dict, fp32_units: tuple[str, ...], *, validation: dict | None,
          test: dict, calibration_images: int, calibration_source: str) -> Path:
    """Write the search's outcome for ``checkpoint``; returns the file written.

    ``validation``: the chosen candidate's trial on the validation split; ``test``: the INT8-vs-FP32
    ``compare`` report on the test split.
    """
    keys = ("images", "decision_agreement", "decisions_differing", "mean_abs_delta_probability",
            "reference_roc_auc", "roc_auc", "roc_auc_delta")
    data = {
        "format": FORMAT,
        "about": "FP32 units for static INT8, chosen by `deepfake-edge export`'s search for this checkpoint file; "
                 "reused while its SHA-256 and the recipe match (docs/export.md)",
        "checkpoint": checkpoint.name,
        "checkpoint_sha256": file_sha256(checkpoint),
        "recipe": recipe_description,
        "fp32_units": list(fp32_units),
        "calibration": {"images": calibration_images, "source": _source(calibration_source)},
        "search_validation": validation and {**validation, "source": _source(validation.get("source"))},
        "test_int8_vs_fp32": {key: test.get(key) for key in keys} | {"source": _source(test.get("source"))},
        # The accuracy bound the search's best missed on the test split, if any: searching again gives the
        # same units, so a later export reuses them (and warns) instead of searching every time.
        "test_problems": list(test.get("problems", [])),
    }
    path = recipe_path(checkpoint)
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    staging.replace(path)
    return path


def _source(source: str | None) -> str | None:
    """An image source for the file: the export's throwaway synthesized set named as such, not by its temp path."""
    return source and re.sub(r"^.*/deepfake-edge-export-[^/]+/synth\b", "synthesized set (seed 0)", source)


def _json_default(value: object) -> object:
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)
