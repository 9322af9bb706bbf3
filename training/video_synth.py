"""Test videos made offline (issue 23): edited clips, each with its unedited twin, for calibrating the video
verdict and testing it. Never for training: there are only validation and test videos.

Layout::

    OUT/<split>/Real/<stem>.mp4   the unedited twin
    OUT/<split>/Fake/<stem>.mp4   the edited clip: same footage, frame count, size, rate and encoding
    OUT/<split>/videos.json       {stem: {family, footage, source, segment_s, donor, edit, frames, fps, width,
                                  height, duration_s, camera, edit_boxes}}
    OUT/video_set.json            how the set was made: seed, encoding, counts, sources per split

Splits are ``validation`` and ``test``. Footage, two kinds (``footage`` in the records):

* ``camera`` (training/video_camera_clips.py): segments of real camera footage shipped by opencv-doc
  (``vtest.avi``, ``tree.avi``). Validation clips come from the first half of each file, test clips from the
  second half. The edit is made on every frame, consistently: ``splice``, ``graphic``, ``copy_move`` or
  ``inpaint``.
* ``photo`` (training/video_photo_clips.py): a camera move (pan with a slow zoom in or out, eased) over a real
  photograph, 24 or 25 fps, 1280x720 when the photo is large enough. The photo is edited first
  (training/edits.py ``make_edit``: ``face_swap``, ``splice``, ``copy_move``, ``inpaint``, ``graphic``; or
  ``self_blend``, training/blending.py's self-blend on a face), then the same camera path is rendered over the
  edited and the unedited photo, so the edit moves with the scene. Photo clips take their family from
  :data:`PHOTO_FAMILY_CYCLE`: three in seven are face edits.

Sources never cross splits: photos are dealt by ``synth.assign_splits`` with ``split_seed`` (default 0, the
seed ``data synth``/``data edits`` use by default), so validation videos are made only from training's
validation photos and test videos only from its test photos, never from photos a model trained on;
donors come from the same split. ``face_swap`` prefers people photos (the donor face lands on a detected
face and follows it through the pan); on a photo without one it is a face pasted somewhere plausible.

Encoding: both twins alike, training/video_io.py's H.264 (libx264, CRF 23, preset veryfast, yuv420p, MP4, a
fixed encoder thread count; the same arguments give the same frames, though not always the same bytes). Every pair is
seeded by (seed, split, index); a stem is ``NNN_<footage>_<family>``, the family actually made (a fallback
renames it).

``edit_boxes`` gives, per frame, the box ``[x0, y0, x1, y1]`` (end exclusive, frame pixels) outside which
the edited frame equals its twin before encoding (``null`` for a frame where the edit is out of view).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from deepfake_edge.model_card import LABELS
from deepfake_edge.training.photos import Photo, packaged_photo_records
from deepfake_edge.training.video_camera_clips import (CAMERA_FAMILIES, CAMERA_FPS, OPENCV_DATA, Footage,
                                                       camera_footage, camera_pair, footage_half)
from deepfake_edge.training.video_io import CODEC, CRF, ENCODER_THREADS, PIX_FMT, PRESET, VideoWriter
from deepfake_edge.training.video_photo_clips import DEFAULT_MAX_FRAME, FRAME_LADDER, photo_base, photo_pair

VIDEO_SPLITS = ("validation", "test")
VIDEOS_FILE = "videos.json"
SET_MANIFEST = "video_set.json"
FOOTAGE_KINDS = ("camera", "photo")
# The order photo clips take families in, round-robin from a random start: face edits (what a video
# deepfake detector is first for) get three clips in seven, the camera clips cover the other four families.
PHOTO_FAMILY_CYCLE = ("face_swap", "self_blend", "splice", "face_swap", "copy_move", "inpaint", "graphic")
VIDEO_FAMILIES = ("face_swap", "self_blend", "splice", "copy_move", "inpaint", "graphic")
DEFAULT_PAIRS = 24
DEFAULT_DURATIONS = (3.0, 5.0)
PHOTO_FPS = (24, 25)
MIN_PHOTO_SIDE = 400  # smaller photos (LFW's 25 px crops) only serve as face donors
_MAX_PHOTO_WEIGHT = 1024.0


# ------------------------------------------------------------------------------------------- planning


def synthesize_videos(
    out_dir: str | Path,
    pairs_per_split: int = DEFAULT_PAIRS,
    seed: int = 0,
    progress: bool = True,
    *,
    durations: tuple[float, float] = DEFAULT_DURATIONS,
    max_frame: tuple[int, int] = DEFAULT_MAX_FRAME,
    photos: list[Photo] | None = None,
    footage_dir: str | Path | None = OPENCV_DATA,
    split_seed: int = 0,
    camera_share: float = 0.5,
    crf: int = CRF,
) -> dict:
    """Write ``pairs_per_split`` (unedited, edited) video pairs for each of validation and test under
    ``out_dir`` (module docstring: layout, footage, edits). Returns the manifest written to
    ``out_dir/video_set.json``.

    ``durations`` bounds each clip's length in seconds, ``max_frame`` the photo clips' frame size (a 16:9
    size of :data:`FRAME_LADDER`); ``photos`` defaults to the packaged catalogue, dealt to splits by
    ``synth.assign_splits(photos, 0.15, 0.15, split_seed)`` (data synth's defaults); ``footage_dir``
    holds vtest.avi/tree.avi (None: photo clips only); ``camera_share`` of each split's pairs are camera
    clips when footage is found. ``crf`` 0 encodes losslessly (tests compare twins exactly). Earlier
    ``<split>/`` folders of a video set there are replaced; a folder
    that is not one (a training set) is refused.
    """
    if pairs_per_split < 1:
        raise ValueError(f"pairs_per_split must be at least 1, got {pairs_per_split}")
    if not 0.2 <= durations[0] <= durations[1] <= 60:
        raise ValueError(f"durations must be 0.2 <= low <= high <= 60 s, got {durations}")
    if tuple(max_frame) not in FRAME_LADDER:
        raise ValueError(f"max_frame must be one of {FRAME_LADDER}, got {max_frame}")
    if not 0.0 <= camera_share <= 1.0:
        raise ValueError(f"camera_share must be in [0, 1], got {camera_share}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    out_dir = Path(out_dir)
    if out_dir.is_file():
        raise ValueError(f"{out_dir} is a file")
    for split in VIDEO_SPLITS:
        folder = out_dir / split
        if folder.is_dir() and any(folder.iterdir()) and not (folder / VIDEOS_FILE).is_file():
            raise ValueError(f"{folder} exists and is not a video set (no {VIDEOS_FILE}); choose another folder")
    started = time.perf_counter()
    assigned = _deal(packaged_photo_records() if photos is None else list(photos), split_seed)
    footage = camera_footage(footage_dir)
    staging = out_dir / ".videos.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    counts: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    for split_index, split in enumerate(VIDEO_SPLITS):
        jobs = _plan_split(split, split_index, assigned[split], footage, pairs_per_split, durations,
                           tuple(max_frame), seed, camera_share)
        records = _write_split(staging / split, jobs, crf, progress)
        counts[split] = {
            "pairs": len(records),
            "families": {f: sum(r["family"] == f for r in records.values()) for f in VIDEO_FAMILIES},
            "footage": {k: sum(r["footage"] == k for r in records.values()) for k in FOOTAGE_KINDS},
            "frames": sum(r["frames"] for r in records.values()),
        }
        sources[split] = {
            "photos": sorted({r["source"] for r in records.values() if r["footage"] == "photo"}),
            "donors": sorted({r["donor"] for r in records.values() if r["donor"]}),
            "segments": sorted([r["source"], *r["segment_s"]] for r in records.values() if r["footage"] == "camera"),
        }
    manifest = {
        "generator": "deepfake-edge test videos (training/video_synth.py)",
        "description": (f"{pairs_per_split} unedited/edited video pairs per split (validation, test) for "
                        "calibrating and testing the video verdict, never for training: camera footage "
                        "(opencv-doc vtest.avi/tree.avi, first half validation, second half test) edited on "
                        "every frame, and camera moves over packaged photos edited first; sources and donors "
                        "are disjoint across splits."),
        "seed": seed, "split_seed": split_seed, "pairs_per_split": pairs_per_split,
        "durations_s": list(durations), "max_frame": list(max_frame), "camera_share": camera_share,
        "encoding": {"codec": CODEC, "crf": crf, "preset": PRESET, "pix_fmt": PIX_FMT, "threads": ENCODER_THREADS,
                     "container": "mp4"},
        "footage": [{"name": f.name, "duration_s": round(f.duration_s, 3), "size": list(f.size)} for f in footage],
        "counts": counts, "sources": sources,
        "photos": _names(assigned),
        "layout": {
            "real": f"<split>/{LABELS[0]}/<stem>.mp4: the unedited twin",
            "fake": f"<split>/{LABELS[1]}/<stem>.mp4: the edited clip (same frames, size, rate, encoding)",
            "videos": f"<split>/{VIDEOS_FILE}: family, footage, source, segment, donor, edit, frames, fps, size, "
                      "camera path, per-frame edit boxes",
        },
    }
    (staging / SET_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    _swap_in(staging, out_dir)
    if progress:
        seconds = time.perf_counter() - started
        total = sum(c["pairs"] for c in counts.values())
        print(f"wrote {total} video pairs to {out_dir} in {seconds:.1f} s ({seconds / max(total, 1):.2f} s a pair)")
        for split in VIDEO_SPLITS:
            print(f"  {split:<10} " + "  ".join(f"{f} {n}" for f, n in counts[split]["families"].items() if n)
                  + "  (" + ", ".join(f"{k} {n}" for k, n in counts[split]["footage"].items()) + ")")
    return manifest


def _swap_in(staging: Path, out_dir: Path) -> None:
    for split in VIDEO_SPLITS:
        target, retired = out_dir / split, out_dir / f".{split}.old"
        shutil.rmtree(retired, ignore_errors=True)
        if target.exists():
            target.rename(retired)
        (staging / split).rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    (staging / SET_MANIFEST).replace(out_dir / SET_MANIFEST)
    shutil.rmtree(staging, ignore_errors=True)


@dataclass(frozen=True)
class _Job:
    index: int
    footage: str  # "camera" or "photo"
    family: str
    fps: int
    n_frames: int
    rng_seed: tuple[int, ...]
    source: Footage | Photo
    start_s: float = 0.0
    donor: Photo | None = None
    face_donors: tuple[Photo, ...] = ()
    max_frame: tuple[int, int] = DEFAULT_MAX_FRAME


def is_made_from(manifest: dict, photos: list[Photo], split_seed: int) -> bool:
    """Whether a video set's ``manifest`` (its ``video_set.json``) was made from exactly ``photos`` dealt to
    the splits with ``split_seed``: a catalogue that gained or lost a photo deals them differently."""
    return manifest.get("split_seed") == split_seed and manifest.get("photos") == _names(_deal(photos, split_seed))


def _deal(photos: list[Photo], split_seed: int) -> dict[str, list[Photo]]:
    from deepfake_edge.training.synth import assign_splits

    return assign_splits(photos, 0.15, 0.15, split_seed)


def _names(assigned: dict[str, list[Photo]]) -> dict[str, list[str]]:
    return {split: sorted(p.name for p in assigned[split]) for split in VIDEO_SPLITS}


def _plan_split(split: str, split_index: int, photos: list[Photo], footage: list[Footage], n_pairs: int,
                durations: tuple[float, float], max_frame: tuple[int, int], seed: int,
                camera_share: float) -> list[_Job]:
    rng = np.random.default_rng([seed, split_index, 1])
    destinations = [p for p in photos if p.category != "faces" and max(p.size) >= MIN_PHOTO_SIDE]
    n_camera = int(round(n_pairs * camera_share)) if footage else 0
    if not destinations:
        if not footage:
            raise ValueError(f"split {split} has no photo of {MIN_PHOTO_SIDE} px or more and no camera footage")
        n_camera = n_pairs
    n_camera = min(n_camera, n_pairs)
    jobs: list[_Job] = []
    jobs += _plan_camera(split_index, footage, n_camera, durations, destinations, seed, rng)
    jobs += _plan_photos(photos, destinations, n_pairs - n_camera, len(jobs), durations, max_frame, seed, split_index,
                         rng)
    return jobs


def _plan_camera(split_index: int, footage: list[Footage], n_clips: int, durations: tuple[float, float],
                 donors: list[Photo], seed: int, rng: np.random.Generator) -> list[_Job]:
    """Camera clips spread over each file's half (validation: first, test: second), in proportion to the
    halves' lengths; non-overlapping while they fit, evenly spread otherwise."""
    if n_clips == 0:
        return []
    halves = []
    for f in footage:
        half = footage_half(f.duration_s)
        start = 0.0 if split_index == 0 else half
        end = half if split_index == 0 else f.duration_s - 1.0 / CAMERA_FPS  # the last frame shows 1/fps
        halves.append((f, start, end))
    lengths = np.array([end - start for _, start, end in halves])
    quota = lengths / lengths.sum() * n_clips
    per_file = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - per_file), kind="stable")[:n_clips - per_file.sum()]:
        per_file[i] += 1
    clips = []
    for (f, start, end), n in zip(halves, per_file):
        if n == 0:
            continue
        frames = [max(2, int(round(rng.uniform(*durations) * CAMERA_FPS))) for _ in range(n)]
        frames = [min(k, int((end - start) * CAMERA_FPS)) for k in frames]
        lengths_s = np.array(frames) / CAMERA_FPS
        slack = (end - start) - lengths_s.sum()
        if slack >= 0:
            gaps = rng.dirichlet(np.ones(n + 1)) * slack
            starts = start + np.cumsum(gaps[:-1]) + np.r_[0, np.cumsum(lengths_s[:-1])]
        else:
            starts = np.array([start + (end - start - d) * (i + 0.5) / n for i, d in enumerate(lengths_s)])
        clips += [(f, math.floor(s * CAMERA_FPS) / CAMERA_FPS, k) for s, k in zip(starts, frames)]
    order = rng.permutation(len(clips))
    first = int(rng.integers(len(CAMERA_FAMILIES)))
    jobs = []
    for position, clip_index in enumerate(order):
        f, start_s, n_frames = clips[int(clip_index)]
        family = CAMERA_FAMILIES[(first + position) % len(CAMERA_FAMILIES)]
        donor = donors[int(rng.integers(len(donors)))] if family == "splice" and donors else None
        if family == "splice" and donor is None:
            family = "copy_move"
        index = len(jobs)
        jobs.append(_Job(index, "camera", family, CAMERA_FPS, n_frames,
                         (seed, split_index, 2, index), f, start_s, donor))
    return jobs


def _plan_photos(photos: list[Photo], destinations: list[Photo], n_clips: int, offset: int,
                 durations: tuple[float, float], max_frame: tuple[int, int], seed: int, split_index: int,
                 rng: np.random.Generator) -> list[_Job]:
    if n_clips == 0:
        return []
    people = [p for p in destinations if p.find_faces and photo_base(p)[1]]
    face_crops = [p for p in photos if p.category == "faces"]
    weights = np.array([min(math.sqrt(p.size[0] * p.size[1]), _MAX_PHOTO_WEIGHT) for p in destinations])
    first = int(rng.integers(len(PHOTO_FAMILY_CYCLE)))
    jobs = []
    for position in range(n_clips):
        family = PHOTO_FAMILY_CYCLE[(first + position) % len(PHOTO_FAMILY_CYCLE)]
        wants_people = family == "self_blend" or (family == "face_swap" and rng.random() < 0.7)
        if wants_people and people:
            photo = people[int(rng.integers(len(people)))]
        else:
            photo = destinations[int(rng.choice(len(destinations), p=weights / weights.sum()))]
        others = [p for p in destinations if p.scene != photo.scene] or [photo]
        donor = others[int(rng.integers(len(others)))]
        face_donors = []
        other_people = [p for p in people if p.scene != photo.scene]
        if other_people and rng.random() < 0.6:
            face_donors.append(other_people[int(rng.integers(len(other_people)))])
        if face_crops:
            face_donors.append(face_crops[int(rng.integers(len(face_crops)))])
        fps = int(PHOTO_FPS[int(rng.integers(len(PHOTO_FPS)))])
        n_frames = max(2, int(round(rng.uniform(*durations) * fps)))
        index = offset + position
        jobs.append(_Job(index, "photo", family, fps, n_frames,
                         (seed, split_index, 3, index), photo, 0.0, donor, tuple(face_donors), max_frame))
    return jobs


# -------------------------------------------------------------------------------------------- writing


def _write_split(folder: Path, jobs: list[_Job], crf: int, progress: bool) -> dict[str, dict]:
    for label in LABELS:
        (folder / label).mkdir(parents=True, exist_ok=True)
    records = {}
    for job in tqdm(jobs, desc=f"videos {folder.name}", unit="pair", disable=not progress):
        stem, record = _write_pair(folder, job, crf)
        records[stem] = record
    records = dict(sorted(records.items()))
    (folder / VIDEOS_FILE).write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return records


def _write_pair(folder: Path, job: _Job, crf: int = CRF) -> tuple[str, dict]:
    rng = np.random.default_rng(list(job.rng_seed))
    if job.footage == "camera":
        frames, record = camera_pair(job.source, job.start_s, job.n_frames, job.fps,  # type: ignore[arg-type]
                                     job.family, job.donor, rng)
    else:
        frames, record = photo_pair(job.source, job.family, job.donor, job.face_donors,  # type: ignore[arg-type]
                                    job.n_frames, job.max_frame, rng)
    stem = f"{job.index:03d}_{job.footage}_{record['family']}"
    boxes = []
    width, height = record["width"], record["height"]
    with VideoWriter(folder / LABELS[0] / f"{stem}.mp4", width, height, job.fps, crf) as real_out, \
            VideoWriter(folder / LABELS[1] / f"{stem}.mp4", width, height, job.fps, crf) as fake_out:
        for real, fake, mask in frames:
            real_out.write(real)
            fake_out.write(fake)
            boxes.append(_mask_box(mask))
    if all(box is None for box in boxes):
        raise RuntimeError(f"{stem}: the edit is out of view in every frame")
    record.update({"frames": len(boxes), "fps": job.fps, "duration_s": round(len(boxes) / job.fps, 4),
                   "edit_boxes": boxes})
    return stem, record


def _mask_box(mask: np.ndarray) -> list[int] | None:
    x, y, w, h = cv2.boundingRect((mask > 0).astype(np.uint8))
    return None if w == 0 or h == 0 else [int(x), int(y), int(x + w), int(y + h)]


# ----------------------------------------------------------------------------------------------- CLI


def register_videos_command(verbs: argparse._SubParsersAction,
                            formatter_class: type[argparse.HelpFormatter] = argparse.ArgumentDefaultsHelpFormatter
                            ) -> argparse.ArgumentParser:
    """Add ``data videos`` to the ``data`` verb's sub-parsers (training/commands.py)."""
    from deepfake_edge.cli import add_verb

    parser = add_verb(
        verbs, "videos", "make test videos: edited clips with their unedited twins (validation and test only)",
        "Write unedited/edited H.264 video pairs to OUT/{validation,test}/{Real,Fake}/<stem>.mp4 with "
        f"OUT/<split>/{VIDEOS_FILE} (family, footage, source, edit, frames, fps, size, per-frame edit boxes) and "
        f"OUT/{SET_MANIFEST}: real camera footage (opencv-doc's vtest.avi and tree.avi: validation from their "
        "first half, test from their second) edited on every frame (a moving splice, a static or drifting "
        "graphic, copy-move at a fixed offset, inpainting), and camera moves over packaged photos edited first "
        "(face swap, self-blended face, splice, copy-move, inpainting, graphic). Photos follow the training "
        "split of --split-seed, so test videos never show a photo a model trained on. For 'calibrate --videos' "
        "and 'evaluate --videos'; not for training.",
        func=run_videos_command, formatter_class=formatter_class,
    )
    parser.add_argument("--out", type=Path, default=Path("data/videos"),
                        help="output folder; an earlier video set there is replaced")
    parser.add_argument("--pairs", type=int, default=DEFAULT_PAIRS, help="unedited/edited pairs per split")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same arguments, same files)")
    parser.add_argument("--split-seed", type=int, default=0,
                        help="seed of the photo split (the one 'data synth' used for the model's training set)")
    parser.add_argument("--durations", type=float, nargs=2, default=list(DEFAULT_DURATIONS), metavar=("MIN", "MAX"),
                        help="range of clip lengths, seconds")
    parser.add_argument("--max-frame", choices=[f"{w}x{h}" for w, h in FRAME_LADDER], default="1280x720",
                        metavar="WxH", help="largest frame size of the photo clips: "
                                            + ", ".join(f"{w}x{h}" for w, h in FRAME_LADDER))
    parser.add_argument("--camera-share", type=float, default=0.5,
                        help="share of each split's pairs made from camera footage (when opencv-doc is installed)")
    return parser


def run_videos_command(args: argparse.Namespace) -> int:
    from deepfake_edge.cli import CommandError

    width, height = (int(v) for v in args.max_frame.split("x"))
    try:
        synthesize_videos(args.out, args.pairs, args.seed, durations=tuple(args.durations), max_frame=(width, height),
                          split_seed=args.split_seed, camera_share=args.camera_share)
    except ValueError as error:
        raise CommandError(str(error)) from error
    return 0
