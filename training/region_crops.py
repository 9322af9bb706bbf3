"""Training crops cut from full-size edited photos with the same regions inference scores.

``data edits`` writes full-size real/fake pairs (edit_synth.py); a detector, though, is trained on what it
is shown at inference: face crops, native-resolution tiles and the global view (deepfake_edge/regions.py).
For each pair this cuts, from the edited photo and its unedited twin alike, the regions the edit falls
in (each face box it touches, the tiles holding most of it, the global view when the edit shows there)
and writes them as ``Fake/eNNNNNN_K.jpg`` / ``Real/eNNNNNN_K.jpg`` twins with the edit's mask, beside the
self-blended crops, so ``train`` reads both without knowing the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepfake_edge.faces import detect_faces
from deepfake_edge.model_card import LABELS
from deepfake_edge.preprocessing import Preprocessor, load_image
from deepfake_edge.regions import Region, cut_regions, plan_regions
from deepfake_edge.training.datasets import EDIT_CROP_PREFIX, MASK_FOLDER, SPLITS
from deepfake_edge.training.edit_synth import EDITS_FILE, FULL_FOLDER

# A region is a Fake crop when the edit covers at least this share of it (and this many pixels): a
# sliver of a seam in a corner is not something a 224-px view can be asked to see.
MIN_EDIT_SHARE = 0.02
MIN_EDIT_PIXELS = 400
TILES_PER_EDIT = 2  # the tiles holding most of the edit
CROP_QUALITY = 95  # the crops are re-encoded once more; keep that step near-lossless
SOURCES_FILE = "sources.json"


def write_region_crops(root: Path, preprocessor: Preprocessor, progress: bool = True) -> dict[str, int]:
    """Cut the training crops of every ``<split>/full`` pair under ``root``; returns crops per split."""
    written = {}
    for split in SPLITS:
        full = root / split / FULL_FOLDER
        if not (full / EDITS_FILE).is_file():
            continue
        edits = json.loads((full / EDITS_FILE).read_text())
        sources_path = root / split / SOURCES_FILE
        sources = json.loads(sources_path.read_text()) if sources_path.is_file() else {}
        for folder in (*LABELS, MASK_FOLDER):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        count = 0
        for stem, record in tqdm(sorted(edits.items()), desc=f"region crops {split}", unit="pair",
                                 disable=not progress):
            for index, (real, fake, mask) in enumerate(_pair_crops(full, stem, preprocessor)):
                name = f"{EDIT_CROP_PREFIX}{stem}_{index}"
                real.save(root / split / LABELS[0] / f"{name}.jpg", quality=CROP_QUALITY)
                fake.save(root / split / LABELS[1] / f"{name}.jpg", quality=CROP_QUALITY)
                mask.save(root / split / MASK_FOLDER / f"{name}.png")
                sources[name] = record.get("source", stem)
                count += 1
        sources_path.write_text(json.dumps(sources, indent=0, sort_keys=True) + "\n")
        written[split] = count
    return written


def edit_regions(mask: np.ndarray, regions: tuple[Region, ...]) -> list[int]:
    """Indices of the regions to train on for an edit with ``mask`` (float [H, W] in [0, 1]): every face
    and the global view the edit shows in, and the :data:`TILES_PER_EDIT` tiles holding most of it."""
    chosen, tiles = [], []
    for index, region in enumerate(regions):
        x0, y0, x1, y1 = region.box
        inside = float((mask[y0:y1, x0:x1] > 0.5).sum())
        area = max(1, (x1 - x0) * (y1 - y0))
        if inside < MIN_EDIT_PIXELS or inside / area < MIN_EDIT_SHARE:
            continue
        if region.kind == "tile":
            tiles.append((inside, index))
        else:
            chosen.append(index)
    return chosen + [index for _, index in sorted(tiles, reverse=True)[:TILES_PER_EDIT]]


def _pair_crops(full: Path, stem: str, preprocessor: Preprocessor):
    real = load_image(full / LABELS[0] / f"{stem}.jpg")
    fake = load_image(full / LABELS[1] / f"{stem}.jpg")
    with Image.open(full / MASK_FOLDER / f"{stem}.png") as mask_image:
        mask = np.asarray(mask_image.convert("L"), dtype=np.float32) / 255.0
    # Faces are searched in the edited photo, as inference would: a pasted face must be found to be cut.
    plan = plan_regions(real.size, preprocessor, detect_faces(np.asarray(fake)))
    chosen = edit_regions(mask, plan.regions)
    if not chosen:
        return []
    subset = type(plan)(plan.image_size, plan.analysed_size, tuple(plan.regions[i] for i in chosen), plan.notes)
    real_rows, fake_rows = cut_regions(real, subset, preprocessor), cut_regions(fake, subset, preprocessor)
    mask_rows = cut_regions(Image.fromarray(np.round(mask * 255).astype(np.uint8)).convert("RGB"), subset,
                            preprocessor)
    return [(Image.fromarray(r.transpose(1, 2, 0)), Image.fromarray(f.transpose(1, 2, 0)),
             Image.fromarray(m[0])) for r, f, m in zip(real_rows, fake_rows, mask_rows)]
