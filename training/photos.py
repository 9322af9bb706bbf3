"""Where ``data synth`` finds real photographs: a user's folder, or the photos that ship inside packages.

Nothing is downloaded at run time. The packaged catalogue is the scikit-image, matplotlib and
scikit-learn photos (always installed with this project) plus photos from Debian packages when they are
installed (``make demo-model`` installs them): opencv-doc's examples and four wallpaper packages whose
pictures are photographs (the drawn and rendered wallpapers are left out). Photo diversity, not crop
count, is what lets a detector trained on self-blended crops generalise to the unseen photos of the
test split (docs/data.md has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from deepfake_edge.preprocessing import BadImageError, load_image
from deepfake_edge.training.datasets import IMAGE_SUFFIXES, verify_image

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

# Debian package -> {path below /usr/share: (category, scene)}; each package's photos are used when present.
_WALLPAPERS = "wallpapers/{}/contents/images/2560x1440.jpg"  # plasma-workspace-wallpapers' layout
DEBIAN_PHOTOS: dict[str, dict[str, tuple[str, str]]] = {
    "opencv-doc": {
        **{f"doc/opencv-doc/examples/data/{name}": where for name, where in {
            "fruits.jpg": ("objects", "fruits"), "baboon.jpg": ("animals", "baboon"),
            "HappyFish.jpg": ("animals", "fish"), "home.jpg": ("scenes", "home"),
            "squirrel_cls.jpg": ("animals", "squirrel"), "starry_night.jpg": ("documents", "starry_night"),
            "orange.jpg": ("objects", "orange"), "messi5.jpg": ("people", "messi"),
            "apple.jpg": ("objects", "apple"), "butterfly.jpg": ("animals", "butterfly"),
            "building.jpg": ("scenes", "building"), "aero1.jpg": ("scenes", "aero1"),
            "aero3.jpg": ("scenes", "aero3"), "basketball1.png": ("people", "basketball"),
            "box_in_scene.png": ("objects", "box_in_scene"), "graf1.png": ("scenes", "graffiti"),
            "smarties.png": ("objects", "smarties"), "chicky_512.png": ("animals", "chicky"),
            "rubberwhale1.png": ("objects", "rubberwhale"), "cards.png": ("objects", "cards"),
        }.items()},
        "doc/opencv-doc/examples/alphamat/input_images/plant.jpg": ("objects", "plant"),
        **{f"doc/opencv-doc/examples/text/scenetext0{i}.jpg": ("scenes", f"scenetext{i}") for i in range(1, 7)},
    },
    "lomiri-wallpapers-16.04": {f"backgrounds/{name}": where for name, where in {
        "Bridge_by_Sander_Klootwijk.jpg": ("scenes", "bridge"), "Dragonfly_by_Bolly.jpg": ("nature", "tree"),
        "Picture_0B_by_freespace.jpg": ("objects", "fig"), "Picture_1A_by_freespace.jpg": ("objects", "brushes"),
        "Wine_by_Jakkub_Mede.jpg": ("objects", "wine"), "aitzgorri_by_Aitzol_Berasategi.jpg": ("scenes", "aitzgorri"),
        "analogpattern_by_Peter_Nerlich.jpg": ("texture", "analogpattern"),
        "free_by_Peter_Nerlich.jpg": ("objects", "lamp"), "friends_by_Aitzol_Berasategi.jpg": ("animals", "dogs"),
        "greentock_by_Peter_Nerlich.jpg": ("objects", "clock"), "life_by_Aitzol_Berasategi.jpg": ("nature", "stream"),
        "picosdeeuropa_by_Aitzol_Berasategi.jpg": ("scenes", "picosdeeuropa"),
        "seeding_by_Clements_Engelhardt.jpg": ("nature", "dandelions"),
        "sunset_by_Aitzol_Berasategi.jpg": ("scenes", "sunset"),
    }.items()},
    "lomiri-wallpapers-20.04": {
        "backgrounds/Infinite-Sea_by_Aury88.jpg": ("scenes", "night_sky"),
        "backgrounds/Kleiber_by_Lukas_Baubkus.jpg": ("animals", "kleiber"),
    },
    "mate-backgrounds": {f"backgrounds/mate/nature/{name}.jpg": where for name, where in {
        "Aqua": ("objects", "drop"), "Blinds": ("nature", "blinds"), "Dune": ("nature", "dune"),
        "FreshFlower": ("nature", "freshflower"), "Garden": ("nature", "garden"),
        "GreenMeadow": ("nature", "meadow"), "LadyBird": ("animals", "ladybird"),
        "RainDrops": ("nature", "raindrops"), "Storm": ("scenes", "storm"), "TwoWings": ("animals", "twowings"),
        "Wood": ("texture", "wood"), "YellowFlower": ("nature", "yellowflower"),
    }.items()},
    "plasma-workspace-wallpapers": {_WALLPAPERS.format(name): where for name, where in {
        "BytheWater": ("scenes", "bythewater"), "ColdRipple": ("scenes", "pier"),
        "DarkestHour": ("scenes", "darkesthour"), "EveningGlow": ("scenes", "boats"),
        "FallenLeaf": ("nature", "fallenleaf"), "Grey": ("texture", "facade"), "Kite": ("scenes", "kite"),
        "OneStandsOut": ("nature", "onestandsout"), "Path": ("nature", "forest_path"),
        "summer_1am": ("scenes", "summer_1am"),
    }.items()},
}
DEBIAN_SHARE = Path("/usr/share")


@dataclass(frozen=True)
class Photo:
    """A source photograph, loaded on demand. ``category`` spreads photos over the splits, photos of
    one ``scene`` stay in one split, ``find_faces`` turns on face-centred crops."""

    name: str
    category: str
    scene: str
    source: Path | Image.Image
    find_faces: bool = False

    @property
    def size(self) -> tuple[int, int]:
        if isinstance(self.source, Image.Image):
            return self.source.size
        with Image.open(self.source) as image:
            return image.size

    def load(self) -> Image.Image:
        return self.source if isinstance(self.source, Image.Image) else load_image(self.source)


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
    for package, catalogue in DEBIAN_PHOTOS.items():
        prefix = "opencv" if package == "opencv-doc" else "wallpaper"
        photos += [Photo(f"{prefix}_{where[1]}", *where, DEBIAN_SHARE / path, find_faces=where[0] == "people")
                   for path, where in catalogue.items() if (DEBIAN_SHARE / path).is_file()]
    for index, face in enumerate(skimage.data.lfw_subset()[:_LFW_FACES]):
        image = Image.fromarray(np.round(face * 255).astype(np.uint8)).convert("RGB")
        photos.append(Photo(f"lfw_face_{index:03d}", "faces", f"lfw_{index:03d}", image))
    return photos


def folder_photos(folder: Path) -> list[Photo]:
    """Every readable image below ``folder`` (searched recursively); unreadable ones are reported and left out."""
    if not Path(folder).is_dir():
        raise ValueError(f"source folder not found: {folder}")
    photos = []
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for path in tqdm(paths, desc=f"check {folder}", unit="img", leave=False, disable=len(paths) < 2000):
        try:
            verify_image(path)
        except BadImageError as error:
            print(f"skipping {path}: {error}")
            continue
        name = str(path.relative_to(folder))
        photos.append(Photo(name, "photos", name, path, find_faces=True))
    return photos
