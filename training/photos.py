"""Where ``data synth`` finds real photographs: a user's folder, or the photos that ship inside packages.

Nothing is downloaded at run time. The packaged catalogue is the scikit-image, matplotlib and
scikit-learn photos (always installed with this project) plus photos from Debian packages when they are
installed (``make demo-model`` installs them; the catalogue is ``debian_photos.py``): opencv-doc's
examples, wallpapers, GCompris' landmarks and animals, Tux Paint's templates, Scratch's backdrops and
more, camera photographs only. Photo diversity, not crop count, is what lets a detector trained on
self-blended crops generalise to the unseen photos of the test split (docs/data.md has the measurements).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepfake_edge.preprocessing import BadImageError, load_image
from deepfake_edge.serving_contract import IMAGE_EXTENSIONS
from deepfake_edge.training.datasets import verify_image
from deepfake_edge.training.debian_photos import DEBIAN_PHOTOS, photo_name
from deepfake_edge.training.qt_resources import QtResourceError, ResourceMember

# Every entry maps a name to (category, scene). Photos of one scene share a split; categories are spread
# over the splits (see synth.assign_splits). "people" photos get face-centred crops.
_SKIMAGE_PHOTOS = {
    "astronaut": ("people", "astronaut"), "camera": ("people", "camera"),
    "chelsea": ("objects", "chelsea"), "coffee": ("objects", "coffee"), "rocket": ("objects", "rocket"),
    "coins": ("objects", "coins"), "motorcycle_left": ("objects", "motorcycle"),
    "motorcycle_right": ("objects", "motorcycle"), "brick": ("texture", "brick"),
    "grass": ("texture", "grass"), "gravel": ("texture", "gravel"), "moon": ("science", "moon"),
    "hubble_deep_field": ("science", "hubble"), "retina": ("science", "retina"),
    "immunohistochemistry": ("science", "ihc"), "text": ("documents", "text"), "page": ("documents", "page"),
}
_LFW_FACES = 100  # lfw_subset.npy: 100 face crops (25x25 grey) followed by 100 non-faces
_SKLEARN_PHOTOS = {"china.jpg": ("scenes", "china"), "flower.jpg": ("objects", "flower")}

DEBIAN_SHARE = Path("/usr/share")


@dataclass(frozen=True)
class Photo:
    """A source photograph, loaded on demand. ``category`` spreads photos over the splits, photos of
    one ``scene`` stay in one split, ``find_faces`` turns on face-centred crops."""

    name: str
    category: str
    scene: str
    source: Path | Image.Image | ResourceMember
    find_faces: bool = False

    @property
    def size(self) -> tuple[int, int]:
        if isinstance(self.source, Image.Image):
            return self.source.size
        with Image.open(self._file()) as image:
            return image.size

    def load(self) -> Image.Image:
        return self.source if isinstance(self.source, Image.Image) else load_image(self._file())

    def _file(self) -> Path | io.BytesIO:
        return io.BytesIO(self.source.read_bytes()) if isinstance(self.source, ResourceMember) else self.source


def _installed(path: Path) -> Path | ResourceMember | None:
    """``path`` if it is a file, the archive member it names if it runs through an ``.rcc`` file, else None."""
    if path.is_file():
        return path
    archive = next((parent for parent in path.parents if parent.suffix == ".rcc"), None)
    if archive is None or not archive.is_file():
        return None
    member = ResourceMember(archive, str(path.relative_to(archive)))
    try:  # another version of the package may have moved the member: leave it out like a missing file
        member.read_bytes()
    except QtResourceError:
        return None
    return member


def packaged_photos() -> list[tuple[str, Image.Image]]:
    """The real photographs that ship inside installed packages, as ``(name, RGB image)``."""
    return [(photo.name, photo.load()) for photo in packaged_photo_records()]


def packaged_photo_records() -> list[Photo]:
    """The packaged catalogue (module docstring) as lazily loaded :class:`Photo` records."""
    import matplotlib
    import skimage.data
    import sklearn.datasets

    images = {}
    for name in _SKIMAGE_PHOTOS:
        if name.startswith("motorcycle_"):
            array = skimage.data.stereo_motorcycle()[0 if name.endswith("left") else 1]
        else:
            array = getattr(skimage.data, name)()
        images[name] = Image.fromarray(array).convert("RGB")
    images["grace_hopper"] = load_image(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    categories = {**_SKIMAGE_PHOTOS, "grace_hopper": ("people", "grace_hopper")}
    photos = [Photo(name, *categories[name], image, find_faces=categories[name][0] == "people")
              for name, image in images.items()]
    sklearn_images = Path(sklearn.datasets.__file__).parent / "images"
    photos += [Photo(f"sklearn_{Path(name).stem}", *where, sklearn_images / name)
               for name, where in _SKLEARN_PHOTOS.items()]
    for prefix, catalogue in DEBIAN_PHOTOS.values():
        for path, where in catalogue.items():
            if (source := _installed(DEBIAN_SHARE / path)) is not None:
                category, scene = where[:2]
                photos.append(Photo(photo_name(prefix, where), category, scene, source,
                                    find_faces=category == "people"))
    for index, face in enumerate(skimage.data.lfw_subset()[:_LFW_FACES]):
        image = Image.fromarray(np.round(face * 255).astype(np.uint8)).convert("RGB")
        photos.append(Photo(f"lfw_face_{index:03d}", "faces", f"lfw_{index:03d}", image))
    return photos


def folder_photos(folder: Path) -> list[Photo]:
    """Every readable image below ``folder`` (searched recursively); unreadable ones are reported and left out."""
    if not Path(folder).is_dir():
        raise ValueError(f"source folder not found: {folder}")
    photos = []
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    for path in tqdm(paths, desc=f"check {folder}", unit="img", leave=False, disable=len(paths) < 2000):
        try:
            verify_image(path)
        except BadImageError as error:
            print(f"skipping {path}: {error}")
            continue
        name = str(path.relative_to(folder))
        photos.append(Photo(name, "photos", name, path, find_faces=True))
    return photos
