"""Provenance evidence beside the model's verdict: a file's Content Credentials (C2PA) and its metadata.

:func:`read_provenance` reads, from a path, bytes or binary file object of an image (or an MP4/MOV video,
or any other format the c2pa library reads):

* the **Content Credentials** (a C2PA manifest store) with the Content Authenticity Initiative's
  ``c2pa-python`` (deepfake_edge/content_credentials.py): the active manifest's claim generator (the tool
  that made or edited the file), the signer (the organisation named in the signing certificate), the
  signing time when the signature was time-stamped, the actions (``c2pa.created``, ``c2pa.edited``, ...),
  whether any manifest declares an IPTC digital source type of generative AI, the ingredients, and the
  validation result mapped to a few states (:data:`VALIDATION_STATES`);
* **EXIF/XMP basics** with Pillow (deepfake_edge/photo_metadata.py): camera make and model, software, date
  taken, XMP CreatorTool, and generator tags (IPTC DigitalSourceType in XMP, the text chunks Stable
  Diffusion UIs write into PNGs).

It never raises for bad input (only for programming errors such as a wrong argument type): a file whose
credentials cannot be read gives ``status="error"`` with a message for a person. :func:`provenance_for` is
what a caller reporting it beside a verdict uses: None for a decoded image, and never any exception. It
never touches the network (remote manifests and OCSP are not fetched). Time and memory are bounded,
measured in docs/provenance.md:

* a cheap pre-scan (deepfake_edge/provenance_input.py) walks the container's top-level structure for an
  embedded manifest store (JUMBF) and its size: files without one never reach the c2pa library (~0.02 ms)
  and a store larger than ``max_manifest_bytes`` is refused before it is parsed;
* inputs larger than ``max_bytes`` are not checked;
* the c2pa read runs in a worker thread and is abandoned after ``time_limit_s`` (at most
  :data:`MAX_CONCURRENT_READS` run at once, so abandoned reads cannot pile up);
* what is reported is capped: actions, ingredients, failure codes and the manifests walked for AI
  source types, and every string taken from a manifest or metadata is stripped of control characters
  and shortened (they are attacker-controlled: show them as text, never as HTML).

Trust: no trust list ships with the project, so by default every signature, however valid, comes from
an "untrusted signer" (c2pa's ``signingCredential.untrusted``): ``status`` is still ``"valid"`` (the file
is unchanged since signing and the signature checks out) and ``validation`` says ``"untrusted signer"``.
Give trust anchors (PEM root certificates, e.g. the C2PA trust list) with ``trust_anchors=`` or the
environment variable :data:`TRUST_ANCHORS_ENV` (a PEM file) to have trusted signers reported as
``validation="valid"``, ``trusted=True``.

``c2pa`` is imported only when a file carries a manifest store, so importing this module, and reading
files without credentials, stays fast; :func:`warm_up` imports it ahead of the first request.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Optional
from urllib.parse import urlsplit

from deepfake_edge.content_credentials import (AI_SOURCE_TYPES, MAX_ACTIONS, MAX_CODES, MAX_CONCURRENT_READS,
                                               MAX_INGREDIENTS, MAX_JSON_CHARS, MAX_MANIFESTS_WALKED,
                                               MAX_NODES_WALKED, TRUST_ANCHORS_ENV, VALIDATION_STATES,
                                               read_credentials, warm_up)
from deepfake_edge.photo_metadata import read_metadata
from deepfake_edge.provenance_input import (MAX_TEXT, NotChecked, ProvenanceSource, SourceBytes, open_source,
                                            prescan)

__all__ = ["AI_SOURCE_TYPES", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_MANIFEST_BYTES", "DEFAULT_TIME_LIMIT_S",
           "MAX_ACTIONS", "MAX_CODES", "MAX_CONCURRENT_READS", "MAX_INGREDIENTS", "MAX_JSON_CHARS",
           "MAX_MANIFESTS_WALKED", "MAX_NODES_WALKED", "MAX_TEXT", "PROVENANCE_RECORD_SCHEMA", "STATUSES",
           "TRUST_ANCHORS_ENV", "VALIDATION_STATES", "Provenance", "ProvenanceSource", "provenance_for",
           "read_provenance", "warm_up"]

log = logging.getLogger(__name__)

STATUSES = ("none", "valid", "invalid", "error")

DEFAULT_MAX_BYTES = 256 << 20  # inputs larger than this are not checked (a video's c2pa read hashes it all)
# An embedded manifest store larger than this is refused unparsed. c2pa's validation time grows with the
# square of a store's size in the worst shape measured (wide ingredient fan-outs, docs/provenance.md):
# ~1 s at 1.2 MB, ~4 s at 2.8 MB on a 2-core VM; real credentials are 10 KB to ~1 MB.
DEFAULT_MAX_MANIFEST_BYTES = 2 << 20
DEFAULT_TIME_LIMIT_S = 2.0  # a c2pa read still running after this is abandoned (it finishes in the background)


# -- the result ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provenance:
    """What a file says about where it came from. Never blended into the model's score.

    ``status``: "none" (no embedded Content Credentials), "valid" (present; the file is unchanged since it
    was signed and the signature checks out, whoever signed it), "invalid" (present but they fail
    validation: ``validation`` says why) or "error" (present but unreadable, too large or too slow to
    check, or the file could not be checked at all: ``error`` says why).

    The C2PA fields describe the active manifest (the latest signer's); ``ai_generated`` is true when any
    manifest of the store, ingredients' included, declares an IPTC digital source type of generative AI
    (:data:`AI_SOURCE_TYPES`). The metadata fields come from EXIF/XMP and are unsigned claims, whatever
    the credentials say.
    """

    status: str = "none"
    validation: Optional[str] = None  # one of VALIDATION_STATES when credentials were read
    trusted: bool = False  # the signer chains to a configured trust anchor
    claim_generator: Optional[str] = None  # the tool that signed, "Adobe Photoshop 25.0"
    signer: Optional[str] = None  # the organisation named in the signing certificate (else its common name)
    signed_at: Optional[str] = None  # RFC 3339, only when the signature carries a trusted time-stamp
    actions: tuple[str, ...] = ()  # distinct action names of the active manifest, in order
    digital_source_types: tuple[str, ...] = ()  # IPTC source types declared anywhere in the store (short names)
    ai_generated: bool = False
    ingredients: tuple[str, ...] = ()  # titles of the active manifest's ingredients, the first MAX_INGREDIENTS
    ingredient_count: int = 0
    manifest_count: int = 0  # manifests in the store (the active one and its ingredients' history)
    validation_codes: tuple[str, ...] = ()  # c2pa failure codes behind ``validation``, the first MAX_CODES
    remote_manifest_url: Optional[str] = None  # credentials referenced online (never fetched)
    manifest_bytes: Optional[int] = None  # size of the embedded manifest store found by the pre-scan
    format: Optional[str] = None  # MIME type recognised from the first bytes
    error: Optional[str] = None
    # EXIF/XMP (unsigned)
    camera_make: Optional[str] = None
    camera_model: Optional[str] = None
    software: Optional[str] = None
    date_taken: Optional[str] = None  # EXIF DateTimeOriginal (else DateTime), "2023-05-17T14:32:09"
    creator_tool: Optional[str] = None  # XMP CreatorTool
    metadata_ai_hints: tuple[str, ...] = ()  # generator tags in the metadata, e.g. "XMP DigitalSourceType: ..."
    elapsed_ms: float = field(default=0.0, compare=False)

    @property
    def has_credentials(self) -> bool:
        """Content Credentials were found embedded (readable or not)."""
        return self.status in ("valid", "invalid") or (self.status == "error" and self.manifest_bytes is not None)

    def summary(self) -> str:
        """One line about the Content Credentials for a person: "Made with <tool>, signed by <issuer>,
        signature valid", "no Content Credentials", "Content Credentials present but invalid (tampered)"..."""
        if self.status == "valid":
            line = self._signed_line()
            return f"AI-generated (per its Content Credentials): {line}" if self.ai_generated else line
        if self.status == "none" and not self.remote_manifest_url:
            return "no Content Credentials"
        return f"Content Credentials {self.credentials_text()}"

    def credentials_text(self) -> str:
        """The same, to follow a "Content Credentials:" label (``deepfake-edge detect``'s line): "none",
        "present but invalid (tampered)", "AI-generated: Made with ...", "could not be checked: ..."."""
        if self.status == "none":
            if self.remote_manifest_url:
                host = urlsplit(self.remote_manifest_url).hostname or "a remote address"
                return f"stored online at {host} (not fetched)"
            return "none"
        if self.status == "error":
            return f"could not be checked: {self.error}"
        if self.status == "invalid":
            line = f"present but invalid ({self.validation or 'failed validation'})"
            return line + ("; they say AI-generated" if self.ai_generated else "")
        return f"AI-generated: {self._signed_line()}" if self.ai_generated else self._signed_line()

    def _signed_line(self) -> str:
        made = f"Made with {self.claim_generator or 'an unnamed tool'}"
        signed = f"signed by {self.signer or 'an unnamed signer'}"
        verdict = "signature valid" if self.trusted else "signature valid (untrusted signer)"
        line = f"{made}, {signed}, {verdict}"
        if self.validation == "ingredient invalid":  # the signer's own claim checks out, an ingredient's did not
            line += "; an ingredient's Content Credentials are invalid"
        elif self.validation not in ("valid", "untrusted signer", None):
            line += f"; {self.validation}"
        return line

    def metadata_summary(self) -> str:
        """One line about the EXIF/XMP metadata, "" when there is none of it."""
        camera = " ".join(dict.fromkeys(part for part in (self.camera_make, self.camera_model) if part))
        if self.camera_make and self.camera_model and self.camera_model.startswith(self.camera_make):
            camera = self.camera_model
        parts = [f"camera {camera}" if camera else "",
                 f"software {self.software}" if self.software else "",
                 f"creator tool {self.creator_tool}" if self.creator_tool not in (None, self.software) else "",
                 f"taken {self.date_taken.replace('T', ' ')}" if self.date_taken else "",
                 *(f"AI tag: {hint}" for hint in self.metadata_ai_hints)]
        return "; ".join(part for part in parts if part)

    def provenance_record(self) -> dict:
        """The JSON record (every key always present): see :data:`PROVENANCE_RECORD_SCHEMA`."""
        return {
            "status": self.status,
            "summary": self.summary(),
            "validation": self.validation,
            "trusted": self.trusted,
            "claim_generator": self.claim_generator,
            "signer": self.signer,
            "signed_at": self.signed_at,
            "actions": list(self.actions),
            "digital_source_types": list(self.digital_source_types),
            "ai_generated": self.ai_generated,
            "ingredients": list(self.ingredients),
            "ingredient_count": self.ingredient_count,
            "manifest_count": self.manifest_count,
            "validation_codes": list(self.validation_codes),
            "remote_manifest_url": self.remote_manifest_url,
            "manifest_bytes": self.manifest_bytes,
            "format": self.format,
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "metadata": {
                "summary": self.metadata_summary(),
                "camera_make": self.camera_make,
                "camera_model": self.camera_model,
                "software": self.software,
                "date_taken": self.date_taken,
                "creator_tool": self.creator_tool,
                "ai_hints": list(self.metadata_ai_hints),
            },
        }


def _nullable(kind: str) -> dict:
    return {"type": kind, "nullable": True}


_STRINGS = {"type": "array", "items": {"type": "string"}}
# OpenAPI 3.0 schema of provenance_record() (nullable, not JSON Schema's type arrays), for the web API's
# description (webapp/openapi.py is OpenAPI 3.0.3).
PROVENANCE_RECORD_SCHEMA: dict = {
    "type": "object",
    "description": "Content Credentials (C2PA) and EXIF/XMP metadata of the file, beside the verdict and never "
                   "part of the score; docs/provenance.md. Strings from the file are plain text: never render "
                   "them as HTML.",
    "additionalProperties": False,
    "required": ["status", "summary", "validation", "trusted", "claim_generator", "signer", "signed_at",
                 "actions", "digital_source_types", "ai_generated", "ingredients", "ingredient_count",
                 "manifest_count", "validation_codes", "remote_manifest_url", "manifest_bytes", "format",
                 "error", "elapsed_ms", "metadata"],
    "properties": {
        "status": {"type": "string", "enum": list(STATUSES)},
        "summary": {"type": "string", "example": "Made with TestCam 2.1, signed by Example Inc., signature valid"},
        "validation": {"type": "string", "nullable": True, "enum": [*VALIDATION_STATES, None]},
        "trusted": {"type": "boolean"},
        "claim_generator": _nullable("string"),
        "signer": _nullable("string"),
        "signed_at": _nullable("string"),
        "actions": _STRINGS,
        "digital_source_types": _STRINGS,
        "ai_generated": {"type": "boolean"},
        "ingredients": _STRINGS,
        "ingredient_count": {"type": "integer", "minimum": 0},
        "manifest_count": {"type": "integer", "minimum": 0},
        "validation_codes": _STRINGS,
        "remote_manifest_url": _nullable("string"),
        "manifest_bytes": {"type": "integer", "minimum": 0, "nullable": True},
        "format": _nullable("string"),
        "error": _nullable("string"),
        "elapsed_ms": {"type": "number", "minimum": 0},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["summary", "camera_make", "camera_model", "software", "date_taken", "creator_tool",
                         "ai_hints"],
            "properties": {
                "summary": {"type": "string"},
                "camera_make": _nullable("string"),
                "camera_model": _nullable("string"),
                "software": _nullable("string"),
                "date_taken": _nullable("string"),
                "creator_tool": _nullable("string"),
                "ai_hints": _STRINGS,
            },
        },
    },
}


def read_provenance(source: ProvenanceSource, max_bytes: int = DEFAULT_MAX_BYTES,
                    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
                    time_limit_s: Optional[float] = DEFAULT_TIME_LIMIT_S, trust_anchors=None,
                    metadata: bool = True) -> Provenance:
    """Read the Content Credentials and EXIF/XMP basics of ``source`` (a path, bytes or binary file object,
    read from its current position and put back there). Never raises for bad input.

    ``max_bytes`` caps the input checked, ``max_manifest_bytes`` the embedded manifest store parsed,
    ``time_limit_s`` the c2pa read (None: no limit, run in the caller's thread). ``trust_anchors``: PEM
    root certificates (text, bytes or a path) trusted as C2PA signers; default: the PEM file named by
    ``$DEEPFAKE_EDGE_C2PA_TRUST_ANCHORS``, else none. ``metadata=False`` skips EXIF/XMP.
    """
    started = time.perf_counter()
    try:
        source_bytes = open_source(source, max_bytes)
    except NotChecked as reason:
        return Provenance(status="error", error=str(reason), elapsed_ms=(time.perf_counter() - started) * 1e3)
    try:
        return replace(_read(source_bytes, max_manifest_bytes, time_limit_s, trust_anchors, metadata),
                       elapsed_ms=(time.perf_counter() - started) * 1e3)
    finally:
        source_bytes.close()


def _read(source: SourceBytes, max_manifest_bytes: int, time_limit_s: Optional[float], trust_anchors,
          metadata: bool) -> Provenance:
    scan = prescan(source.buffer)
    found = read_metadata(source, scan.mime) if metadata else {}
    base = Provenance(format=scan.mime, manifest_bytes=scan.store_bytes if scan.store else None, **found)
    if not (scan.store or scan.maybe or scan.remote):
        return base  # no embedded store, no remote reference: the common case, c2pa is never loaded
    return replace(base, **read_credentials(source, scan, max_manifest_bytes, time_limit_s, trust_anchors))


def provenance_for(source, **options) -> Optional[Provenance]:
    """The provenance to report beside a verdict on ``source``: :func:`read_provenance` (``options`` are its
    keyword arguments), None for a decoded PIL image (it has no file bytes), and never an exception: an
    unexpected one (a bug, a wrong source type) becomes ``status="error"`` and is logged. The verdict
    must never fail because its provenance could not be read."""
    if type(source).__module__.startswith("PIL.") and hasattr(source, "getexif"):
        return None
    started = time.perf_counter()
    try:
        return read_provenance(source, **options)
    except Exception as error:  # noqa: BLE001 - reported in the result, never raised into the detection
        log.warning("provenance could not be read from a %s source", type(source).__name__, exc_info=True)
        return Provenance(status="error", error=f"provenance could not be read ({type(error).__name__})",
                          elapsed_ms=(time.perf_counter() - started) * 1e3)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m deepfake_edge.provenance FILE...``: each file's provenance as JSON lines."""
    import sys

    for name in (argv if argv is not None else sys.argv[1:]):
        print(json.dumps({"file": name, **read_provenance(name).provenance_record()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
