"""The ``--heatmaps DIR`` output folder: files are created below it and never through a symbolic link.

A folder someone else can write to may hold links planted to make a run overwrite a file elsewhere
(``DIR/photo.jpg.png -> ~/.bashrc``) or write into another folder (``DIR/sub -> /etc``). Every step below
``DIR`` is therefore opened relative to the folder above it with ``O_NOFOLLOW``, so a link anywhere in
the way is refused, and nothing can swap a folder for a link between the check and the write. ``DIR``
itself is the user's choice and may be a link.
"""

from __future__ import annotations

import errno
import os
import stat
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import BinaryIO, Iterator


class HeatmapWriteError(OSError):
    """The heatmap folder or one of its files cannot be written; the message says why, for a person."""


class HeatmapDirectory:
    """An open handle on ``path`` (created if missing). Raises :class:`HeatmapWriteError` when ``path`` is
    not a folder that can be written to. Use it as a context manager, or call ``close()``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except FileExistsError:
            raise HeatmapWriteError(f"--heatmaps {self.path} exists and is not a folder") from None
        except OSError as error:
            raise HeatmapWriteError(f"--heatmaps {self.path} cannot be used: {error.strerror or error}") from None
        if not os.access(self.path, os.W_OK | os.X_OK):  # root passes this; each write still checks
            os.close(self._fd)
            raise HeatmapWriteError(f"--heatmaps {self.path} is not writable")

    def __enter__(self) -> "HeatmapDirectory":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @contextmanager
    def open_for_writing(self, relative: PurePath) -> Iterator[BinaryIO]:
        """A new or truncated regular file at ``relative`` below the folder, its subfolders created."""
        if relative.is_absolute() or ".." in relative.parts:
            raise HeatmapWriteError(f"{relative} is not a path below {self.path}")
        folder = os.dup(self._fd)
        try:
            for part in relative.parent.parts:
                try:
                    os.mkdir(part, 0o777, dir_fd=folder)
                except FileExistsError:
                    pass
                below = self._open_step(part, folder, relative, os.O_RDONLY | os.O_DIRECTORY)
                os.close(folder)
                folder = below
            descriptor = self._open_step(relative.name, folder, relative,
                                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o666)
        finally:
            os.close(folder)
        with os.fdopen(descriptor, "wb") as handle:
            yield handle

    def _open_step(self, name: str, folder: int, relative: PurePath, flags: int, mode: int = 0o777) -> int:
        try:
            return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=folder)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(name, folder):
                raise HeatmapWriteError(f"refused to write {self.path / relative}: {name!r} on the way is a "
                                        f"symbolic link (heatmaps are never written through links)") from None
            raise


def _is_link(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False
