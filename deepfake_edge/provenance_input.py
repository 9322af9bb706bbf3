"""What :func:`deepfake_edge.provenance.read_provenance` reads, before any library parses it.

* :func:`open_source`: the source's bytes (an mmap for a path, never copied), within a size limit;
* :func:`sniff`: its format (MIME type) from the first bytes;
* :func:`prescan`: a cheap walk over the container's top-level structure (JPEG segments up to the first
  scan, PNG chunks, ISO-BMFF boxes, RIFF chunks; a byte search for other formats) for an embedded C2PA
  manifest store (JUMBF) and its size, so that files without one never reach the c2pa library (~0.02 ms)
  and a store too large to check is refused before it is parsed;
* :func:`clean_text`: every string taken from a file (manifest or metadata) as one short line of printable
  text. It is still attacker-controlled: show it as text, never as HTML.
"""

from __future__ import annotations

import io
import mmap
import os
import unicodedata
from dataclasses import dataclass
from typing import Any, BinaryIO, Optional, Union

ProvenanceSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

MAX_TEXT = 120  # characters kept of any string from the file
_MAX_STRUCTURE_ITEMS = 100_000  # segments/chunks/boxes walked by the pre-scan before it falls back to a byte search

_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_BMFF_C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
_BMFF_XMP_UUID = bytes.fromhex("be7acfcb97a942e89c71999491e3afac")


# -- text from the file ----------------------------------------------------------------------------------
def clean_text(value: Any, limit: int = MAX_TEXT) -> Optional[str]:
    """``value`` as one line of printable text, at most ``limit`` characters; None when empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(" " if unicodedata.category(char)[0] in "CZ" else char for char in str(value)[: limit * 4])
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or None


# -- input -----------------------------------------------------------------------------------------------
class SourceBytes:
    """The bytes of the source (an mmap for a path), and how the c2pa worker reopens them."""

    def __init__(self, buffer, path: Optional[str] = None):
        self.buffer = buffer  # bytes or mmap: slicing, find, len
        self.path = path
        self._mapped = buffer if isinstance(buffer, mmap.mmap) else None

    def c2pa_stream(self) -> BinaryIO:
        return open(self.path, "rb") if self.path is not None else io.BytesIO(self.buffer)

    def close(self) -> None:
        if self._mapped is not None:
            try:
                self._mapped.close()
            except BufferError:  # still exported by a slice in flight: the GC closes it
                pass


class NotChecked(Exception):
    """The source is not checked (too large, unreadable, a decoded image): the message says why."""


def open_source(source: ProvenanceSource, max_bytes: int) -> SourceBytes:
    """The bytes of ``source`` (a file object is read from its current position and put back there).
    Raises :class:`NotChecked` (too large, unreadable, a decoded image) and TypeError (not a source)."""
    too_large = "file larger than {} MB".format(max_bytes >> 20 or f"{max_bytes / (1 << 20):.2f}")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source) if not isinstance(source, bytes) else source
        if len(data) > max_bytes:
            raise NotChecked(too_large)
        return SourceBytes(data)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size > max_bytes:
                    raise NotChecked(too_large)
                if size == 0:
                    return SourceBytes(b"", path)
                return SourceBytes(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ), path)
        except OSError as error:
            raise NotChecked(f"cannot read the file: {error.strerror or error}") from None
    if type(source).__module__.startswith("PIL.") and hasattr(source, "getexif"):  # a decoded PIL image
        raise NotChecked("a decoded image has no file bytes to read them from")
    if hasattr(source, "read"):
        try:
            start = source.tell() if source.seekable() else None
            if start is not None:  # its size first: a stream too large to check is not read at all
                end = source.seek(0, os.SEEK_END)
                source.seek(start)
                if end - start > max_bytes:
                    raise NotChecked(too_large)
            data = source.read(max_bytes + 1)
            if start is not None:
                source.seek(start)
        except (OSError, ValueError) as error:
            raise NotChecked(f"cannot read the file: {error}") from None
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("read_provenance needs a binary file object")
        if len(data) > max_bytes:
            raise NotChecked(too_large)
        return SourceBytes(bytes(data))
    raise TypeError(f"read_provenance takes a path, bytes or a binary file object, not {type(source).__name__}")


# -- the pre-scan ----------------------------------------------------------------------------------------
@dataclass
class Scan:
    """What the pre-scan found."""

    mime: Optional[str] = None
    store: bool = False  # an embedded manifest store (JUMBF holding c2pa boxes) was seen
    store_bytes: Optional[int] = None  # its size when the container says it
    remote: bool = False  # XMP says dcterms:provenance (credentials stored elsewhere)
    maybe: bool = False  # a hint only (a JUMBF box not labelled c2pa, the text "c2pa"): c2pa decides


def sniff(head: bytes) -> Optional[str]:
    """The MIME type the first bytes say, None when unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and len(head) >= 12:
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/avi"}.get(head[8:12])
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
            return "image/heic"
        if brand in (b"avif", b"avis"):
            return "image/avif"
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if head[:4] == b"%PDF":
        return "application/pdf"
    if head[:3] == b"ID3" or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head.lstrip()[:5] in (b"<?xml", b"<svg ", b"<svg\n"):
        return "image/svg+xml"
    return None


def prescan(buffer) -> Scan:
    """Whether ``buffer`` embeds a manifest store (and its size), hints of one, or a remote reference."""
    head = buffer[:64]
    mime = sniff(head)
    walker = {"image/jpeg": _scan_jpeg, "image/png": _scan_png, "image/webp": _scan_riff,
              "audio/wav": _scan_riff, "video/avi": _scan_riff}.get(mime)
    if walker is None and head[4:8] == b"ftyp":
        walker = _scan_bmff
    scan = walker(buffer) if walker else None
    if scan is None:  # not walked (another format, or a structure too odd to walk): search the bytes
        jumbf = buffer.find(b"jumb") >= 0  # every embedded JUMBF box has its type in clear
        scan = Scan(store=jumbf, maybe=not jumbf and buffer.find(b"c2pa") >= 0,  # SVG: base64 in a c2pa tag
                     remote=buffer.find(b"dcterms:provenance") >= 0)
    scan.mime = mime
    return scan


def _scan_jpeg(buffer) -> Optional[Scan]:
    """APP11 segments holding JUMBF ("JP" common identifier) before the first scan; XMP's provenance."""
    scan, offset, size = Scan(), 2, len(buffer)
    for _ in range(_MAX_STRUCTURE_ITEMS):
        if offset + 4 > size or buffer[offset] != 0xFF:
            return scan  # end of the headers (or of a truncated file)
        marker = buffer[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            offset += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan, end of image: no more metadata segments
            return scan
        length = int.from_bytes(buffer[offset + 2:offset + 4], "big")
        start, end = offset + 4, offset + 2 + length
        if marker == 0xEB and buffer[start:start + 2] == b"JP":
            scan.store_bytes = (scan.store_bytes or 0) + length + 2
            if not scan.store:
                segment = buffer[start:end]
                scan.store = b"c2pa" in segment  # the store's and its boxes' labels
                scan.maybe = not scan.store and b"jumb" in segment  # JUMBF of another kind (or damaged)
        elif marker == 0xE1 and buffer[start:start + len(_JPEG_XMP)] == _JPEG_XMP:
            scan.remote = scan.remote or b"provenance" in buffer[start:end]
        offset = end
    return None


def _scan_png(buffer) -> Optional[Scan]:
    """caBX chunks (C2PA's), XMP in iTXt."""
    scan, offset, size = Scan(), 8, len(buffer)
    for _ in range(_MAX_STRUCTURE_ITEMS):
        if offset + 8 > size:
            return scan
        length = int.from_bytes(buffer[offset:offset + 4], "big")
        kind = buffer[offset + 4:offset + 8]
        start, end = offset + 8, offset + 8 + length
        if kind == b"caBX":
            scan.store, scan.store_bytes = True, (scan.store_bytes or 0) + length
        elif kind == b"iTXt" and buffer[start:start + 17] == b"XML:com.adobe.xmp":
            scan.remote = scan.remote or b"provenance" in buffer[start:end]
        elif kind == b"IEND":
            return scan
        offset = end + 4  # CRC
    return None


def _scan_riff(buffer) -> Optional[Scan]:
    """Top-level RIFF chunks (WebP, WAV, AVI): "C2PA", and "XMP "'s provenance."""
    scan, offset, size = Scan(), 12, len(buffer)
    for _ in range(_MAX_STRUCTURE_ITEMS):
        if offset + 8 > size:
            return scan
        kind = buffer[offset:offset + 4]
        length = int.from_bytes(buffer[offset + 4:offset + 8], "little")
        start, end = offset + 8, offset + 8 + length
        if kind == b"C2PA":
            scan.store, scan.store_bytes = True, (scan.store_bytes or 0) + length
        elif kind == b"XMP ":
            scan.remote = scan.remote or b"provenance" in buffer[start:end]
        offset = end + (length & 1)
    return None


def _scan_bmff(buffer) -> Optional[Scan]:
    """Top-level ISO-BMFF boxes (MP4, MOV, HEIF, AVIF): the C2PA uuid box, and the XMP uuid box's provenance."""
    scan, offset, size = Scan(), 0, len(buffer)
    for _ in range(_MAX_STRUCTURE_ITEMS):
        if offset + 8 > size:
            return scan
        length = int.from_bytes(buffer[offset:offset + 4], "big")
        kind = buffer[offset + 4:offset + 8]
        header = 8
        if length == 1:
            length, header = int.from_bytes(buffer[offset + 8:offset + 16], "big"), 16
        elif length == 0:
            length = size - offset
        if length < header:
            return None  # malformed: let the byte search decide
        if kind == b"uuid":
            uuid = buffer[offset + header:offset + header + 16]
            if uuid == _BMFF_C2PA_UUID:
                scan.store, scan.store_bytes = True, (scan.store_bytes or 0) + length
            elif uuid == _BMFF_XMP_UUID:
                scan.remote = scan.remote or b"provenance" in buffer[offset:offset + length]
        offset += length
    return None
