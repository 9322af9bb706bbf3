"""EXIF/XMP basics with Pillow (headers only, no pixel decoded): camera make and model, software, date
taken, XMP CreatorTool, and generator tags (an IPTC DigitalSourceType of generative AI in XMP, the PNG text
chunks Stable Diffusion UIs and other generators write). Unsigned claims, whatever the Content Credentials
say; GPS is never read."""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Optional

from deepfake_edge.content_credentials import AI_SOURCE_TYPES
from deepfake_edge.provenance_input import SourceBytes, clean_text

if TYPE_CHECKING:
    from PIL import Image

_XMP_CREATOR_TOOL = re.compile(rb'xmp:CreatorTool(?:="([^"]*)"|>([^<]*)<)')
_XMP_SOURCE_TYPE = re.compile(rb'DigitalSourceType(?:="([^"]*)"|>([^<]*)<|\s+rdf:resource="([^"]*)")')
# PNG text chunks generators write: Stable Diffusion web UIs ("parameters"), ComfyUI ("prompt",
# "workflow"), InvokeAI ("invokeai_metadata", "sd-metadata"), NovelAI ("Comment" with "Software: NovelAI").
_GENERATOR_TEXT_KEYS = {"parameters": "Stable Diffusion web UI", "prompt": "ComfyUI", "workflow": "ComfyUI",
                        "invokeai_metadata": "InvokeAI", "sd-metadata": "InvokeAI", "dream": "InvokeAI"}
_MAX_XMP_BYTES = 1 << 20


def _exif_date(value) -> Optional[str]:
    text = clean_text(value, 40)
    match = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text or "")
    return f"{match[1]}-{match[2]}-{match[3]}T{match[4]}:{match[5]}:{match[6]}" if match else text


def _exif(image) -> "Image.Exif":
    """The EXIF tags Pillow has from the header. ``getexif()`` would decode every pixel of a PNG to look for
    an eXIf chunk after the image data (a 6000x6000 PNG: +140 MB, outside the web app's decode budget), so
    only EXIF read at open (JPEG/WebP APP1, a PNG's eXIf before IDAT) or a TIFF's own header tags count."""
    from PIL import Image

    exif = Image.Exif()
    if raw := image.info.get("exif"):
        exif.load(raw)
    elif image.format == "TIFF":
        exif = image.getexif()
    return exif


def read_metadata(source: SourceBytes, mime: Optional[str]) -> dict:
    """Camera make/model, software, date taken, XMP CreatorTool and generator tags; {} when unreadable."""
    if not mime or not mime.startswith("image/") or mime == "image/svg+xml":
        return {}
    from PIL import Image

    try:
        # Image.open reads headers only, and _exif keeps it so: no pixel is decoded here
        stream = io.BytesIO(source.buffer) if source.path is None else open(source.path, "rb")
        with stream, Image.open(stream) as image:
            exif = _exif(image)
            sub = exif.get_ifd(0x8769) if 0x8769 in exif else {}
            xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or b""
            if isinstance(xmp, str):
                xmp = xmp.encode("utf-8", "replace")
            xmp = xmp[:_MAX_XMP_BYTES]
            texts = {key: value for key, value in image.info.items() if isinstance(value, str)}
            found = {
                "camera_make": clean_text(exif.get(0x010F)),
                "camera_model": clean_text(exif.get(0x0110)),
                "software": clean_text(exif.get(0x0131)),
                "date_taken": _exif_date(sub.get(0x9003) or sub.get(0x9004) or exif.get(0x0132)),
            }
    except Exception:  # noqa: BLE001 - metadata is best effort: an unreadable header leaves it empty
        return {}
    match = _XMP_CREATOR_TOOL.search(xmp)
    found["creator_tool"] = clean_text(next((group for group in match.groups() if group), None)) if match else None
    hints = []
    for match in _XMP_SOURCE_TYPE.finditer(xmp):
        value = (next((group for group in match.groups() if group), b"") or b"").decode("utf-8", "replace")
        name = value.rsplit("/", 1)[-1].strip()
        if name in AI_SOURCE_TYPES:
            hints.append(f"XMP DigitalSourceType: {name}")
    for key, generator in _GENERATOR_TEXT_KEYS.items():
        if key in texts:
            hints.append(f"PNG text '{key}' ({generator})")
    if "NovelAI" in texts.get("Software", "") or "NovelAI" in texts.get("Comment", ""):
        hints.append("PNG text 'Software' (NovelAI)")
    found["metadata_ai_hints"] = tuple(dict.fromkeys(hints))
    return found

