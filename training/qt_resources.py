"""Read one file out of a compiled Qt resource archive (``.rcc``) without Qt.

GCompris ships its photographs inside such archives. Layout (Qt's rcc format, versions 1-3, big-endian):
a ``qres`` header with the offsets of three tables; the tree table holds one entry per node (name
offset, flags, then either child count + first child index for a directory, or locale + data offset for
a file, plus a modification time from version 2 on); the names table holds UTF-16 names; the data table
holds a 4-byte size before every payload. A zlib-compressed payload (flag 1) starts with its 4-byte
uncompressed size, as ``qCompress`` writes it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

_COMPRESSED_ZLIB, _DIRECTORY, _COMPRESSED_ZSTD = 0x1, 0x2, 0x4


class QtResourceError(ValueError):
    """The archive is not a readable rcc file, or it has no such member."""


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` (a ``/``-separated path inside the archive) in the rcc file ``archive``."""
    data = Path(archive).read_bytes()
    if data[:4] != b"qres":
        raise QtResourceError(f"{archive}: not a Qt resource archive (no 'qres' magic)")
    version, tree, payloads, names = struct.unpack_from(">IIII", data, 4)
    if not 1 <= version <= 3:
        raise QtResourceError(f"{archive}: unsupported rcc version {version}")
    entry_size = 14 if version == 1 else 22

    def name_of(node: int) -> str:
        offset = names + struct.unpack_from(">I", data, tree + node * entry_size)[0]
        length = struct.unpack_from(">H", data, offset)[0]
        return data[offset + 6: offset + 6 + 2 * length].decode("utf-16-be")  # 6 = length + hash

    node = 0  # the root directory
    for part in [p for p in member.split("/") if p]:
        flags, count, first = struct.unpack_from(">HII", data, tree + node * entry_size + 4)
        if not flags & _DIRECTORY:
            raise QtResourceError(f"{archive}: no member {member!r}")
        node = next((child for child in range(first, first + count) if name_of(child) == part), -1)
        if node < 0:
            raise QtResourceError(f"{archive}: no member {member!r}")
    flags = struct.unpack_from(">H", data, tree + node * entry_size + 4)[0]
    if flags & _DIRECTORY:
        raise QtResourceError(f"{archive}: {member!r} is a directory")
    offset = payloads + struct.unpack_from(">I", data, tree + node * entry_size + 10)[0]
    size = struct.unpack_from(">I", data, offset)[0]
    payload = data[offset + 4: offset + 4 + size]
    if flags & _COMPRESSED_ZSTD:
        raise QtResourceError(f"{archive}: {member!r} is zstd-compressed, which this reader does not support")
    return zlib.decompress(payload[4:]) if flags & _COMPRESSED_ZLIB else payload


@dataclass(frozen=True)
class ResourceMember:
    """One file inside an rcc archive, read on demand."""

    archive: Path
    member: str

    def read_bytes(self) -> bytes:
        return read_member(self.archive, self.member)
