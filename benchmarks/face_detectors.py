"""Which face detector for ``deepfake_edge.faces``: recall, false positives and CPU time of the candidates.

    python -m deepfake_edge.benchmarks.face_detectors            # ~4 min on one core with every candidate
    python -m deepfake_edge.benchmarks.face_detectors --quick    # skips the 300-photo false-positive pass

Every candidate's weights ship inside an installed wheel (nothing is downloaded at run time):

- ``haar_default`` / ``haar_alt`` / ``haar_alt2``: OpenCV's Haar cascades (opencv-python-headless), run
  as the old ``faces.py`` ran them (photo shrunk to <= 512 px, scaleFactor 1.1, minNeighbors 8).
- ``lbp_skimage``: OpenCV's LBP frontal-face cascade, as scikit-image ships it (opencv-python's wheel has
  no LBP cascades; Debian's /usr/share/opencv4/lbpcascades is no pip package), same settings as Haar.
- ``dlib_hog``: dlib's HOG + linear SVM frontal face detector (compiled into ``dlib-bin``), photo shrunk
  to <= 640 px, no upsampling.
- ``yunet_yuface``: YuNet (libfacedetection's CNN, weights compiled into ``yuface``'s library), photo
  shrunk to <= 640, 512 or 448 px, score >= 0.5. ``deepfake_edge.faces`` is the 512 px one (row
  ``faces.detect_faces``). docs/faces.md has the table and the choice.

A candidate whose package is not installed is skipped (only the chosen one is a project dependency:
``pip install dlib-bin yuface`` for the others). Data, all inside installed packages:

- lfw: scikit-image's ``lfw_subset()``: 100 face crops and 100 non-faces, 25x25 grey. Each crop is
  upscaled 4x (bicubic, 100x100) and pasted in the middle of a 200x200 mid-grey (128) canvas, then made
  RGB. Recall = face crops with >= 1 box; false positives = non-face crops with >= 1 box. The same faces
  turned 90 degrees clockwise give the rotated recall.
- people: the 15 "people" photos of the packaged catalogue (``training/photos.py``). ``CLEAR_FACES``
  lists the centre of every clearly visible face, found by eye (crowds of tiny faces are not listed): a
  face is found when a box covers its centre; "other boxes" cover no listed face (false positives, but
  also profile, hidden or crowd faces that are not listed).
- no people: every catalogue photo of the other categories (scenes, animals, objects, nature, texture,
  science, documents), shrunk to <= 1024 px: photos with >= 1 box and total boxes. Some landmark scenes
  hold small people, so this is an upper bound on false positives.
- time: CPU ms per call on the astronaut resized to 1024x768, one thread (OpenCV and OpenMP limited to
  one thread), median of ``--repeats`` calls after a warm-up.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # yuface's OpenMP reads this once, at load

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]
Detector = Callable[[np.ndarray], list[Box]]

# Centres (x, y, in the photo's own pixels) of the clearly visible faces, looked at one by one.
CLEAR_FACES: dict[str, list[tuple[int, int]]] = {
    "astronaut": [(222, 119)],
    "camera": [(225, 153)],  # three-quarter view, eye at the viewfinder
    "grace_hopper": [(268, 226)],
    "opencv_messi": [(240, 112)],  # the crowd behind him is not listed
    "opencv_basketball": [(88, 112)],  # the man on the right turns his back
    "gcompris_music_australia": [(338, 184)],
    "gcompris_music_ireland": [(683, 151), (427, 159), (112, 146), (926, 152)],
    "gcompris_music_italy": [(358, 252), (696, 269), (454, 393)],  # hooded faces are not listed
    "gcompris_music_mexico": [(404, 173), (160, 159), (904, 347), (674, 316), (764, 334)],
    "gcompris_music_japan": [],  # a crowd of tiny faces at night
    "gcompris_music_orchestra": [],  # a whole orchestra, faces of a few pixels
    "elementary_insanely_huge_test_image": [(1364, 775), (2153, 810)],
    "elementary_twofish": [(501, 269)],
    "rmagick_Ballerina3": [(323, 148)],
    "cimg_postcard10": [(548, 157)],  # half a face behind a postcard
}


def _shrunk(photo: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    height, width = photo.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        photo = cv2.resize(photo, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    return photo, scale


def _clip(boxes, scale: float, shape) -> list[Box]:
    height, width = shape[:2]
    out = []
    for x, y, w, h in boxes:
        x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
        x1, y1 = min(width, round((x + w) / scale)), min(height, round((y + h) / scale))
        if x1 > x0 and y1 > y0:
            out.append((x0, y0, x1 - x0, y1 - y0))
    return out


def _cascade(path: str) -> Detector:
    cascade = cv2.CascadeClassifier(path)
    assert not cascade.empty(), path

    def detect(photo: np.ndarray) -> list[Box]:
        small, scale = _shrunk(photo, 512)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        if min(grey.shape) < 48:
            return []
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=8,
                                         minSize=(max(24, min(grey.shape) // 10),) * 2)
        return _clip(found, scale, photo.shape)
    return detect


def _lbp_skimage() -> Detector:
    """scikit-image's copy of OpenCV's lbpcascade_frontalface.xml has one misspelt tag ("featuhreParams")
    that OpenCV refuses: load a corrected copy (then byte-identical to OpenCV's own file)."""
    import tempfile

    import skimage.data

    text = Path(skimage.data.lbp_frontal_face_cascade_filename()).read_text()
    with tempfile.TemporaryDirectory() as folder:
        fixed = Path(folder) / "lbpcascade_frontalface.xml"
        fixed.write_text(text.replace("featuhreParams", "featureParams"))
        return _cascade(str(fixed))


def _dlib_hog() -> Detector:
    import dlib

    hog = dlib.get_frontal_face_detector()

    def detect(photo: np.ndarray) -> list[Box]:
        small, scale = _shrunk(photo, 640)
        return _clip([(r.left(), r.top(), r.width(), r.height()) for r in hog(np.ascontiguousarray(small), 0)],
                     scale, photo.shape)
    return detect


def _yunet_yuface(max_side: int = 640, score: float = 0.5) -> Detector:
    import yuface.yuface

    def detect(photo: np.ndarray) -> list[Box]:
        small, scale = _shrunk(photo, max_side)
        rows = yuface.yuface.detect(np.ascontiguousarray(small[:, :, ::-1])).astype(np.int16)
        return _clip([row[1:5] for row in rows if row[0] >= score * 100], scale, photo.shape)
    return detect


def _project() -> Detector:
    from deepfake_edge.faces import detect_faces
    return detect_faces


def candidates() -> dict[str, Callable[[], Detector]]:
    haar = cv2.data.haarcascades
    return {
        "haar_default": lambda: _cascade(haar + "haarcascade_frontalface_default.xml"),
        "haar_alt": lambda: _cascade(haar + "haarcascade_frontalface_alt.xml"),
        "haar_alt2": lambda: _cascade(haar + "haarcascade_frontalface_alt2.xml"),
        "lbp_skimage": _lbp_skimage,
        "dlib_hog": _dlib_hog,
        "yunet_yuface": _yunet_yuface,
        "yunet_yuface_512": lambda: _yunet_yuface(512),
        "yunet_yuface_448": lambda: _yunet_yuface(448),
        "faces.detect_faces": _project,
    }


def _lfw_canvases() -> tuple[list[np.ndarray], list[np.ndarray]]:
    import skimage.data

    canvases = []
    for crop in skimage.data.lfw_subset():
        face = cv2.resize(np.round(crop * 255).astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC)
        canvas = np.full((200, 200), 128, np.uint8)
        canvas[50:150, 50:150] = face
        canvases.append(cv2.cvtColor(canvas, cv2.COLOR_GRAY2RGB))
    return canvases[:100], canvases[100:]


def _load_photos(quick: bool):
    from deepfake_edge.training.photos import packaged_photo_records

    people, others = {}, []
    for record in packaged_photo_records():
        if record.category == "faces" or (quick and record.category != "people"):
            continue
        photo = np.asarray(record.load().convert("RGB"))
        if record.category == "people":
            people[record.name] = photo
        else:
            others.append(_shrunk(photo, 1024)[0])
    return people, others


def _covers(box: Box, point: tuple[int, int]) -> bool:
    x, y, w, h = box
    return x <= point[0] <= x + w and y <= point[1] <= y + h


def measure(name: str, detect: Detector, data: dict, repeats: int) -> dict:
    faces, non_faces, people, others, timing_photo = (data[k] for k in ("faces", "non_faces", "people",
                                                                        "others", "timing_photo"))
    row: dict = {"detector": name}
    row["lfw_recall"] = sum(bool(detect(c)) for c in faces) / len(faces)
    row["lfw_non_face_fp"] = sum(bool(detect(c)) for c in non_faces) / len(non_faces)
    row["lfw_recall_rot90"] = sum(bool(detect(np.ascontiguousarray(np.rot90(c, -1)))) for c in faces) / len(faces)
    found = listed = other = 0
    per_photo = {}
    for photo_name, photo in people.items():
        boxes = detect(photo)
        centres = CLEAR_FACES.get(photo_name, [])
        hit = sum(any(_covers(b, c) for b in boxes) for c in centres)
        extra = sum(not any(_covers(b, c) for c in centres) for b in boxes)
        found, listed, other = found + hit, listed + len(centres), other + extra
        per_photo[photo_name] = {"boxes": len(boxes), "found": hit, "listed": len(centres)}
    row.update(people_found=found, people_listed=listed, people_other_boxes=other, per_photo=per_photo)
    rotated = {n: len(detect(np.ascontiguousarray(np.rot90(people[n], -1)))) for n in ("astronaut", "grace_hopper")}
    row["rot90_boxes"] = rotated
    if others:
        counts = [len(detect(photo)) for photo in others]
        row.update(no_people_photos=len(others), no_people_with_box=sum(c > 0 for c in counts),
                   no_people_boxes=sum(counts))
    detect(timing_photo)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        detect(timing_photo)
        times.append((time.process_time() - start) * 1e3)
    row["cpu_ms_1024x768"] = round(statistics.median(times), 1)
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| detector | lfw recall | lfw non-face FP | lfw recall, 90° | people: clear faces found | "
             "people: other boxes | no-people photos with a box | boxes there | CPU ms 1024x768 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        no_people = (f"{r['no_people_with_box']}/{r['no_people_photos']} | {r['no_people_boxes']}"
                     if "no_people_photos" in r else "- | -")
        lines.append(f"| {r['detector']} | {r['lfw_recall']:.2f} | {r['lfw_non_face_fp']:.2f} | "
                     f"{r['lfw_recall_rot90']:.2f} | {r['people_found']}/{r['people_listed']} | "
                     f"{r['people_other_boxes']} | {no_people} | {r['cpu_ms_1024x768']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="*", help="names to run (default: every installed one)")
    parser.add_argument("--quick", action="store_true", help="skip the no-people photos")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    import skimage.data

    faces, non_faces = _lfw_canvases()
    people, others = _load_photos(args.quick)
    timing_photo = cv2.resize(skimage.data.astronaut(), (1024, 768), interpolation=cv2.INTER_LINEAR)
    data = {"faces": faces, "non_faces": non_faces, "people": people, "others": others,
            "timing_photo": timing_photo}
    rows = []
    for name, make in candidates().items():
        if args.detectors and name not in args.detectors:
            continue
        try:
            detect = make()
        except ImportError as error:
            print(f"{name}: skipped ({error})")
            continue
        rows.append(measure(name, detect, data, args.repeats))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_photo"}), flush=True)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
