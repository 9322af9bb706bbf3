"""Hard negatives: the regions of unedited training photos that a detector finds most suspicious.

A photo's verdict is its highest region (deepfake_edge/regions.py), so one unedited tile that looks edited is
a false alarm, and a photo offers ~25 chances. The region crops of ``data edits`` show the model the
unedited twin only where the edit is (region_crops.py); the tiles elsewhere, a person on a lawn, a sign, a
sky, are never trained on at native resolution. This scores every region of each unedited full-size photo
of a split (``<split>/full/Real/*.jpg``: faces, tiles and the global view, exactly as inference cuts them)
with a checkpoint, and writes the ``per_photo`` highest-scoring regions that reach ``min_probability`` as
Real crops ``<split>/Real/nNNNNNN_K.jpg``. They have no Fake twin: ``train`` batches them on their own,
beside the pairs, and its class weighting accounts for the extra Real images.

Only the training split is mined by default: negatives chosen by a model in the validation split would make
validation depend on the model that picked them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepfake_edge.digest import file_sha256
from deepfake_edge.model_card import LABELS
from deepfake_edge.preprocessing import Preprocessor, load_image
from deepfake_edge.regions import analyse
from deepfake_edge.training.datasets import HARD_NEGATIVE_PREFIX
from deepfake_edge.training.edit_synth import EDITS_FILE, FULL_FOLDER
from deepfake_edge.training.region_crops import CROP_QUALITY, SOURCES_FILE

DEFAULT_PER_PHOTO = 3
DEFAULT_MIN_PROBABILITY = 0.5  # a region the model would call Fake on its own
DEFAULT_SPLITS = ("train",)
MANIFEST_FILE = "hard_negatives.json"


def hardest_regions(probabilities: np.ndarray, per_photo: int, min_probability: float) -> list[int]:
    """Indices of the at most ``per_photo`` highest ``probabilities`` that reach ``min_probability``,
    highest first (ties: the earlier region)."""
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")[:per_photo]
    return [int(i) for i in order if probabilities[i] >= min_probability]


def mine_hard_negatives(root: str | Path, checkpoint: str | Path, per_photo: int = DEFAULT_PER_PHOTO,
                        min_probability: float = DEFAULT_MIN_PROBABILITY, splits: tuple[str, ...] = DEFAULT_SPLITS,
                        progress: bool = True) -> dict[str, dict[str, int]]:
    """Write the hard negatives of ``splits`` of the set at ``root`` (replacing any written before) and
    ``root/hard_negatives.json``; returns, per split, the photos scored and the crops written."""
    if per_photo < 1 or not 0.0 <= min_probability <= 1.0:
        raise ValueError("per_photo must be >= 1 and min_probability in [0, 1]")
    root = Path(root)
    missing = [split for split in splits if not (root / split / FULL_FOLDER / EDITS_FILE).is_file()]
    if missing:
        raise ValueError(f"no full-size photos in {root} for {', '.join(missing)}: run 'deepfake-edge data edits' "
                         "on this set first")
    # torch and onnxruntime load here, not on import: the CLI imports this module for its defaults.
    from deepfake_edge.training.whole_image import forward_rows, served_session

    counts: dict[str, dict[str, int]] = {}
    with served_session(checkpoint) as (session, preprocessor):
        def score(rows: np.ndarray) -> np.ndarray:
            return forward_rows(session, rows)[0]

        for split in splits:
            counts[split] = _mine_split(root / split, preprocessor, score, per_photo, min_probability, progress)
    manifest = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint),
                "per_photo": per_photo, "min_probability": min_probability, "splits": counts}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    return counts


def _mine_split(folder: Path, preprocessor: Preprocessor, score: Callable[[np.ndarray], np.ndarray], per_photo: int,
                min_probability: float, progress: bool) -> dict[str, int]:
    edits = json.loads((folder / FULL_FOLDER / EDITS_FILE).read_text())
    real = folder / LABELS[0]
    real.mkdir(parents=True, exist_ok=True)
    for old in real.glob(f"{HARD_NEGATIVE_PREFIX}*.jpg"):
        old.unlink()
    sources_path = folder / SOURCES_FILE
    sources = json.loads(sources_path.read_text()) if sources_path.is_file() else {}
    sources = {name: source for name, source in sources.items() if not name.startswith(HARD_NEGATIVE_PREFIX)}
    written = 0
    for stem in tqdm(sorted(edits), desc=f"hard negatives {folder.name}", unit="photo", disable=not progress):
        _, rows = analyse(load_image(folder / FULL_FOLDER / LABELS[0] / f"{stem}.jpg"), preprocessor)
        for rank, index in enumerate(hardest_regions(score(rows), per_photo, min_probability)):
            name = f"{HARD_NEGATIVE_PREFIX}{stem}_{rank}"
            Image.fromarray(rows[index].transpose(1, 2, 0)).save(real / f"{name}.jpg", quality=CROP_QUALITY)
            sources[name] = edits[stem].get("source", stem)
            written += 1
    sources_path.write_text(json.dumps(sources, indent=0, sort_keys=True) + "\n")
    return {"photos": len(edits), "crops": written}
