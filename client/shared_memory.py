"""System shared-memory regions for request inputs, for a Triton server on the same host.

The request then carries only a region name and size instead of ~150 KB of pixels per image. A region
is a POSIX shared-memory object (``/dev/shm/<key>``) that the client creates and the server maps when
it is registered (``register_system_shared_memory``). Both sides keep their mappings, so the client
unlinks the name right after registration (:meth:`InputRegion.forget_name`): no ``/dev/shm`` entry can
outlive the client, even one that is killed. Unregistering (server side) and :meth:`InputRegion.close`
(client side) release the memory.

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
        try:
            fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        except OSError as error:
            raise DeepfakeClientError(f"cannot create shared-memory region {self._path}: {error}") from None
        try:
            os.ftruncate(fd, byte_size)
            self._map = mmap.mmap(fd, byte_size)
        except OSError as error:
            os.unlink(self._path)
            raise DeepfakeClientError(f"cannot create shared-memory region {self._path}: {error}") from None
        finally:
            os.close(fd)

    def write(self, batch: np.ndarray) -> None:
        """Copy ``batch`` to the start of the region (it must fit)."""
        if batch.nbytes > self.byte_size:
            raise ValueError(f"batch of {batch.nbytes} bytes does not fit region {self.name} ({self.byte_size} bytes)")
        view = np.frombuffer(self._map, dtype=np.uint8, count=batch.nbytes)
        view[:] = batch.reshape(-1).view(np.uint8)
        del view  # an exported buffer would make mmap.close() fail

    def forget_name(self) -> None:
        """Remove the ``/dev/shm`` name once the server has mapped the region (mappings stay valid)."""
        self._path.unlink(missing_ok=True)

    def close(self) -> None:
        """Unmap and unlink (idempotent). Unregister it from the server first."""
        if not self._map.closed:
            self._map.close()
        self._path.unlink(missing_ok=True)
