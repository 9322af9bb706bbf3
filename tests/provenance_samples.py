"""Signed test files for the provenance tests, made offline: a throwaway certificate chain generated with
``cryptography`` (root CA -> intermediate CA -> signing certificate) and Content Credentials (C2PA) signed
into real photographs with ``c2pa-python``'s signing API. Nothing is downloaded.

The signing certificate meets the C2PA certificate profile the c2pa library checks when it signs and
validates: X.509 v3, an ECDSA P-256 key (ES256), ``basicConstraints`` CA:FALSE, ``keyUsage`` digitalSignature
(critical), an extended key usage C2PA accepts (id-kp-emailProtection and id-kp-documentSigning here, never
anyExtendedKeyUsage), subject and authority key identifiers, and an issuer that is not itself (c2pa refuses
self-signed signing certificates). The chain handed to the signer is the signing certificate then the
intermediate; the root stays out of the file, as the specification asks. No trust list holds the root, so
a reader reports these signatures as valid but from an *untrusted* signer unless it is given
:attr:`Chain.root_pem` as a trust anchor.

Every maker writes one file into ``folder`` and returns its path; :func:`make_all` makes them all (~1 s)
and returns {name: path}. :data:`EXPECTED` says what the reader must report for each.
"""

from __future__ import annotations

import datetime
import io
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
CAMERA_APP = "TestCam"  # claim generator names the makers use
AI_APP = "Imaginator AI"
EDITOR_APP = "PhotoFix Editor"
SIGNER_ORG = "Deepfake-Edge Test Signing"  # organisation named in the signing certificate
SIGNER_CN = "Deepfake-Edge Test Signer"


# -- certificates ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chain:
    root_pem: bytes  # the trust anchor; not embedded in signed files
    chain_pem: bytes  # signing certificate then intermediate, as the signer embeds them
    key_pem: bytes  # the signing certificate's private key (PKCS#8)


def _name(common_name: str, organisation: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject, key, issuer, issuer_key, *, ca: bool, path_length: int | None = None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    usage = dict(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                 data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                 encipher_only=False, decipher_only=False)
    builder = builder.add_extension(x509.KeyUsage(**usage), critical=True)
    if not ca:
        document_signing = ObjectIdentifier("1.3.6.1.5.5.7.3.36")
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, document_signing]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@lru_cache(maxsize=1)
def make_chain() -> Chain:
    """A fresh root CA -> intermediate CA -> ES256 signing certificate, once per process (~10 ms)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root_key, intermediate_key, signing_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root_name = _name("Deepfake-Edge Test Root CA", "Deepfake-Edge Test Root")
    intermediate_name = _name("Deepfake-Edge Test Intermediate CA", "Deepfake-Edge Test CA")
    root = _certificate(root_name, root_key, root_name, root_key, ca=True, path_length=1)
    intermediate = _certificate(intermediate_name, intermediate_key, root_name, root_key, ca=True, path_length=0)
    signing = _certificate(_name(SIGNER_CN, SIGNER_ORG), signing_key, intermediate_name,
                           intermediate_key, ca=False)
    pem = serialization.Encoding.PEM
    return Chain(root_pem=root.public_bytes(pem),
                 chain_pem=signing.public_bytes(pem) + intermediate.public_bytes(pem),
                 key_pem=signing_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))


def signer():
    """A c2pa Signer for :func:`make_chain`'s certificate (a Signer is consumed by one signing)."""
    import c2pa

    chain = make_chain()
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain.chain_pem, chain.key_pem, None))


# -- images ---------------------------------------------------------------------------------------------
def photo(name: str = "astronaut", size: tuple[int, int] | None = (1024, 768)) -> Image.Image:
    """A real photograph bundled with scikit-image, RGB, resized to ``size``."""
    import skimage.data

    image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return image.resize(size) if size else image


def encode(image: Image.Image, format: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **({"quality": 90} if format == "JPEG" else {}) | options)
    return buffer.getvalue()


def manifest(generator: str, actions: list[dict], title: str = "photo.jpg", assertions: list[dict] = ()) -> dict:
    """A manifest definition: claim generator, one actions assertion and any other ``assertions``."""
    return {"claim_generator_info": [{"name": generator, "version": "2.1"}], "title": title,
            "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}, *assertions]}


def _context(thumbnail: bool = True):
    import c2pa

    # The c2pa library adds its own "created"/"opened" actions unless told not to: the makers say what
    # happened themselves. Verify-after-sign checks the signature, not the trust list (none is configured).
    return c2pa.Context.from_dict({
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
        "builder": {"thumbnail": {"enabled": thumbnail},
                    "actions": {"auto_created_action": {"enabled": False},
                                "auto_opened_action": {"enabled": False},
                                "auto_placed_action": {"enabled": False}}},
    })


def sign(data: bytes, mime: str, definition: dict, ingredients: list[tuple[dict, str, bytes]] = (),
         thumbnail: bool = True, remote_url: str | None = None) -> bytes:
    """``data`` with ``definition`` signed into it; ``ingredients`` are (ingredient JSON, MIME, bytes)."""
    import c2pa

    with _context(thumbnail) as context, c2pa.Builder(definition, context) as builder:
        for ingredient, ingredient_mime, ingredient_data in ingredients:
            builder.add_ingredient(ingredient, ingredient_mime, io.BytesIO(ingredient_data))
        if remote_url:
            builder.set_no_embed()
            builder.set_remote_url(remote_url)
        output = io.BytesIO()
        builder.sign(signer(), mime, io.BytesIO(data), output)
        return output.getvalue()


def created(source_type: str) -> dict:
    return {"action": "c2pa.created", "digitalSourceType": IPTC + source_type}


# -- JPEG surgery ---------------------------------------------------------------------------------------
def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each marker segment of a JPEG up to its first scan (start of the marker)."""
    segments, offset = [], 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
        segments.append((marker, offset, offset + 2 + length))
        if marker == 0xDA:
            break
        offset += 2 + length
    return segments


def app11(data: bytes) -> bytes:
    """The APP11 (JUMBF) segments of a JPEG, joined: its embedded Content Credentials."""
    return b"".join(data[start:end] for marker, start, end in jpeg_segments(data) if marker == 0xEB)


def with_app11(jpeg: bytes, segments: bytes) -> bytes:
    """``jpeg`` with APP11 ``segments`` inserted right after its APP0 (or SOI)."""
    first = jpeg_segments(jpeg)[0]
    at = first[2] if first[0] == 0xE0 else 2
    return jpeg[:at] + segments + jpeg[at:]


# -- the makers ------------------------------------------------------------------------------------------
def camera_jpeg(folder: Path) -> Path:
    """A photo "taken" by a camera app: c2pa.created, digitalCapture."""
    path = folder / "camera.jpg"
    path.write_bytes(sign(encode(photo()), "image/jpeg",
                          manifest(CAMERA_APP, [created("digitalCapture")], "camera.jpg")))
    return path


def ai_png(folder: Path) -> Path:
    """A PNG "generated" by an AI app: c2pa.created, trainedAlgorithmicMedia."""
    path = folder / "ai.png"
    action = created("trainedAlgorithmicMedia") | {"softwareAgent": {"name": AI_APP, "version": "5"}}
    path.write_bytes(sign(encode(photo("chelsea", (512, 384)), "PNG"), "image/png",
                          manifest(AI_APP, [action], "ai.png")))
    return path


def edited_jpeg(folder: Path) -> Path:
    """The camera photo opened in an editor, its colours changed and signed again, the camera file as its
    parent ingredient (whose own Content Credentials travel with it)."""
    parent = _camera(folder)
    edited = Image.open(io.BytesIO(parent)).convert("RGB")
    edited = Image.fromarray((np.asarray(edited) * np.array([1.0, 0.9, 0.8])).astype(np.uint8))
    definition = manifest(EDITOR_APP, [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                                       {"action": "c2pa.color_adjustments"}], "edited.jpg")
    ingredient = {"title": "camera.jpg", "relationship": "parentOf", "label": "parent"}
    path = folder / "edited.jpg"
    path.write_bytes(sign(encode(edited), "image/jpeg", definition, [(ingredient, "image/jpeg", parent)]))
    return path


def _camera(folder: Path) -> bytes:
    return ((folder / "camera.jpg") if (folder / "camera.jpg").exists() else camera_jpeg(folder)).read_bytes()


def tampered_jpeg(folder: Path) -> Path:
    """The camera photo edited AFTER signing: a rectangle painted over the face by a tool that re-encodes
    the pixels and keeps the Content Credentials segments as they were."""
    signed = _camera(folder)
    image = Image.open(io.BytesIO(signed)).convert("RGB")
    ImageDraw.Draw(image).rectangle((380, 60, 560, 260), fill=(200, 30, 30))
    path = folder / "tampered.jpg"
    path.write_bytes(with_app11(encode(image), app11(signed)))
    return path


def stripped_jpeg(folder: Path) -> Path:
    """The camera photo re-encoded by Pillow, which drops the Content Credentials."""
    signed = _camera(folder)
    path = folder / "stripped.jpg"
    path.write_bytes(encode(Image.open(io.BytesIO(signed))))
    return path


def corrupt_jpeg(folder: Path) -> Path:
    """The camera photo with bytes flipped inside the JUMBF (the manifest store's description boxes), so
    the manifest store no longer parses."""
    signed = bytearray(_camera(folder))
    start = signed.index(b"jumb")
    for offset in range(start + 8, start + 40):  # the first description box: type UUID and label
        signed[offset] ^= 0xA5
    path = folder / "corrupt.jpg"
    path.write_bytes(bytes(signed))
    return path


def unknown_assertion_jpeg(folder: Path) -> Path:
    """A signed photo carrying an assertion type and an action no reader knows."""
    assertion = {"label": "com.example.unknown-thing.v7", "data": {"nested": {"a": [1, 2, {"b": "c"}]}, "x": "y" * 100}}
    definition = manifest(CAMERA_APP, [created("digitalCapture"), {"action": "com.example.teleported"}],
                          "unknown.jpg", [assertion])
    path = folder / "unknown_assertion.jpg"
    path.write_bytes(sign(encode(photo("coffee")), "image/jpeg", definition))
    return path


def ingredient_chain_jpeg(folder: Path, depth: int = 24, name: str = "chain.jpg") -> Path:
    """A manifest bomb's shape: a photo edited ``depth`` times, each edit signed with the previous file as
    its parent, so the file carries ``depth`` + 1 manifests nested ``depth`` ingredients deep (no thumbnails:
    ~6 KB a level). Making it costs ~depth² (each signing validates the whole chain): 24 levels ~2 s."""
    base = encode(photo(size=(256, 192)))
    first = manifest(CAMERA_APP, [created("digitalCapture")], "chain-0.jpg")
    current = sign(base, "image/jpeg", first, thumbnail=False)
    for level in range(1, depth + 1):
        definition = manifest(EDITOR_APP, [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}},
                                           {"action": "c2pa.edited"}], f"chain-{level}.jpg")
        ingredient = {"title": f"chain-{level - 1}.jpg", "relationship": "parentOf", "label": "parent"}
        current = sign(base, "image/jpeg", definition, [(ingredient, "image/jpeg", current)], thumbnail=False)
    path = folder / name
    path.write_bytes(current)
    return path


def oversized_jpeg(folder: Path, size: int = 5 << 20) -> Path:
    """A signed photo whose manifest store is larger than ``size`` bytes: its thumbnail resource is a JPEG
    padded with zeros (c2pa refuses manifest definitions over ~1 MB of JSON, not resources)."""
    import c2pa

    thumbnail = encode(photo(size=(256, 192))) + bytes(size)
    definition = manifest(CAMERA_APP, [created("digitalCapture")], "big.jpg") | {
        "thumbnail": {"format": "image/jpeg", "identifier": "big-thumbnail.jpg"}}
    with _context(thumbnail=False) as context, c2pa.Builder(definition, context) as builder:
        builder.add_resource("big-thumbnail.jpg", io.BytesIO(thumbnail))
        output = io.BytesIO()
        builder.sign(signer(), "image/jpeg", io.BytesIO(encode(photo(size=(256, 192)))), output)
    path = folder / "oversized.jpg"
    path.write_bytes(output.getvalue())
    return path


def hostile_jpeg(folder: Path) -> Path:
    """A signed photo whose claim generator, title, action and ingredient title carry markup, control and
    bidi characters and 2,000-character runs: what a reader must not pass on as it is."""
    hostile = "<script>alert(1)</script>\u202eevil\x07\x1b[31m" + "A" * 2000
    definition = manifest(hostile, [created("digitalCapture"), {"action": "com.example.\u0000" + "x" * 500}],
                          hostile)
    path = folder / "hostile.jpg"
    path.write_bytes(sign(encode(photo("rocket")), "image/jpeg", definition))
    return path


def remote_manifest_jpeg(folder: Path, url: str) -> Path:
    """A signed photo whose Content Credentials live at ``url`` (only an XMP reference is embedded)."""
    path = folder / "remote.jpg"
    path.write_bytes(sign(encode(photo(size=(256, 192))), "image/jpeg",
                          manifest(CAMERA_APP, [created("digitalCapture")], "remote.jpg"), remote_url=url))
    return path


def signed_mp4(folder: Path) -> Path:
    """A 1 s H.264 MP4 of a still photo, signed by the camera app."""
    import av

    plain = folder / "plain.mp4"
    array = np.asarray(photo(size=(320, 240)))
    with av.open(str(plain), "w") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for _ in range(10):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        output.mux(stream.encode(None))
    path = folder / "camera.mp4"
    definition = manifest(CAMERA_APP, [created("digitalCapture")], "camera.mp4")
    path.write_bytes(sign(plain.read_bytes(), "video/mp4", definition, thumbnail=False))
    return path


def exif_jpeg(folder: Path) -> Path:
    """A photo with EXIF camera make/model, software and date taken, and XMP CreatorTool (no C2PA)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS 5D Mark IV", "Adobe Lightroom 7.1"
    exif.get_ifd(0x8769)[0x9003] = "2023:05:17 14:32:09"
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
           b'xmp:CreatorTool="Adobe Photoshop 25.0 (Windows)"/></rdf:RDF></x:xmpmeta>')
    path = folder / "exif.jpg"
    photo().save(path, quality=90, exif=exif, xmp=xmp)
    return path


def ai_metadata_png(folder: Path) -> Path:
    """A PNG with the text chunk Stable Diffusion web UIs write, and IPTC's AI source type in XMP (no C2PA)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a photo of an astronaut\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1")
    info.add_itxt("XML:com.adobe.xmp",
                  '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
                  '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                  '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
                  f'Iptc4xmpExt:DigitalSourceType="{IPTC}trainedAlgorithmicMedia"/></rdf:RDF></x:xmpmeta>')
    path = folder / "ai_metadata.png"
    photo("chelsea", (256, 192)).save(path, pnginfo=info)
    return path


MAKERS = {"camera": camera_jpeg, "ai": ai_png, "edited": edited_jpeg, "tampered": tampered_jpeg,
          "stripped": stripped_jpeg, "corrupt": corrupt_jpeg, "unknown_assertion": unknown_assertion_jpeg,
          "hostile": hostile_jpeg, "exif": exif_jpeg, "ai_metadata": ai_metadata_png}


def make_all(folder: Path) -> dict[str, Path]:
    """Every file of :data:`MAKERS` (the slow ones, chain/oversized/mp4, are made by their own tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {name: maker(folder) for name, maker in MAKERS.items()}
