"""Which files ``deepfake-edge detect`` classifies: explicit paths as given, folders by image or video extension."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from deepfake_edge.serving_contract import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

_MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


@dataclass(frozen=True)
class MediaPath:
    """A file to classify and its name relative to the argument it came from (for output file names)."""

    path: Path
    relative: Path


def iter_media_paths(arguments: Iterable[str | os.PathLike], recursive: bool = False) -> Iterator[MediaPath]:
    """Explicit files are yielded whatever their extension (a non-image then gets a clear error, not
    silence); missing paths too (they fail as "file not found"). Folders yield their image and video files sorted
    by name, descending into subfolders only when ``recursive``; hidden entries are skipped."""
    for argument in arguments:
        root = Path(argument)
        if not root.is_dir():
            yield MediaPath(root, Path(root.name))
            continue
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if recursive else []
            for name in sorted(files):
                path = Path(folder, name)
                if not name.startswith(".") and path.suffix.lower() in _MEDIA_EXTENSIONS:
                    yield MediaPath(path, path.relative_to(root))


def subfolders_skipped(arguments: Iterable[str | os.PathLike]) -> list[Path]:
    """The visible subfolders of the folder ``arguments``: what a run without ``recursive`` leaves out."""
    return sorted(entry for argument in arguments if Path(argument).is_dir()
                  for entry in Path(argument).iterdir() if entry.is_dir() and not entry.name.startswith("."))
