"""System shared-memory regions for request inputs, for a Triton server on the same host.

The request then carries only a region name and size instead of ~150 KB of pixels per image. A region
is a POSIX shared-memory object (``/dev/shm/<key>``) that the client creates, the server maps after
``register_system_shared_memory``, and the client unregisters and unlinks in :meth:`InputRegion.close`.

tritonclient's own ``tritonclient.utils.shared_memory`` imports ``pkg_resources``, which setuptools
>= 81 no longer ships, so regions are created here with the standard library (same kernel object,
same server API).
"""

from __future__ import annotations

import itertools
import mmap
import os
from pathlib import Path

import numpy as np

from deepfake_edge.client.errors import DeepfakeClientError

_SHM_DIR = Path("/dev/shm")
_counter = itertools.count()


class InputRegion:
    """One writable region of ``byte_size`` bytes, named ``deepfake_edge_<pid>_<n>`` on both sides."""

    def __init__(self, byte_size: int):
        if not _SHM_DIR.is_dir():
            raise DeepfakeClientError("system shared memory needs /dev/shm (Linux)")
        self.name = f"deepfake_edge_{os.getpid()}_{next(_counter)}"
        self.key = f"/{self.name}"
        self.byte_size = byte_size
        self._path = _SHM_DIR / self.name
        fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, byte_size)
            self._map = mmap.mmap(fd, byte_size)
        except BaseException:
            os.unlink(self._path)
            raise
        finally:
            os.close(fd)

    def write(self, batch: np.ndarray) -> None:
        """Copy ``batch`` to the start of the region (it must fit)."""
        if batch.nbytes > self.byte_size:
            raise ValueError(f"batch of {batch.nbytes} bytes does not fit region {self.name} ({self.byte_size} bytes)")
        view = np.frombuffer(self._map, dtype=np.uint8, count=batch.nbytes)
        view[:] = batch.reshape(-1).view(np.uint8)
        del view  # an exported buffer would make mmap.close() fail

    def close(self) -> None:
        """Unmap and unlink (idempotent). Unregister it from the server first."""
        if not self._map.closed:
            self._map.close()
        self._path.unlink(missing_ok=True)
