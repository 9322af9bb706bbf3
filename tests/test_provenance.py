"""Provenance beside the verdict (deepfake_edge/provenance.py): Content Credentials (C2PA) signed offline
into real photos by tests/provenance_samples.py, EXIF/XMP basics, bad and hostile manifests, and the cost
of reading files without credentials. docs/provenance.md has the measured figures."""

from __future__ import annotations

import http.server
import io
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

import provenance_samples as samples
from deepfake_edge.provenance import (MAX_TEXT, PROVENANCE_RECORD_SCHEMA, STATUSES, TRUST_ANCHORS_ENV,
                                      VALIDATION_STATES, Provenance, provenance_for, read_provenance)

UNTRUSTED = "signature valid (untrusted signer)"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    return samples.make_all(tmp_path_factory.mktemp("provenance"))


@pytest.fixture(scope="module")
def chain_file(tmp_path_factory) -> Path:
    return samples.ingredient_chain_jpeg(tmp_path_factory.mktemp("chain"), depth=24)


def check_record(provenance: Provenance) -> dict:
    """The record has every key, the types PROVENANCE_RECORD_SCHEMA says, and round-trips through JSON."""
    record = provenance.provenance_record()
    assert list(record) == PROVENANCE_RECORD_SCHEMA["required"]
    assert list(record["metadata"]) == PROVENANCE_RECORD_SCHEMA["properties"]["metadata"]["required"]
    assert record["status"] in STATUSES
    assert record["validation"] in (*VALIDATION_STATES, None)
    try:
        from openapi_schema_validator import OAS30Validator
    except ImportError:  # pragma: no cover - openapi-core (dev extra) brings it
        pass
    else:  # the schema is OpenAPI 3.0's dialect, as webapp/openapi.py serves
        OAS30Validator(PROVENANCE_RECORD_SCHEMA).validate(record)
    assert json.loads(json.dumps(record)) == record
    return record


# -- signed files reported correctly ----------------------------------------------------------------------
def test_camera_photo_is_valid_from_an_untrusted_signer(files):
    result = read_provenance(files["camera"])
    assert (result.status, result.validation, result.trusted) == ("valid", "untrusted signer", False)
    assert result.claim_generator == f"{samples.CAMERA_APP} 2.1"
    assert result.signer == samples.SIGNER_ORG
    assert result.actions == ("c2pa.created",)
    assert result.digital_source_types == ("digitalCapture",)
    assert not result.ai_generated
    assert result.signed_at is None  # signed without a time-stamp authority (offline)
    assert result.format == "image/jpeg" and result.manifest_bytes > 1000
    assert result.validation_codes == ("signingCredential.untrusted",)
    assert result.summary() == f"Made with {samples.CAMERA_APP} 2.1, signed by {samples.SIGNER_ORG}, {UNTRUSTED}"
    check_record(result)


def test_a_trust_anchor_makes_the_signer_trusted(files, tmp_path, monkeypatch):
    root = samples.make_chain().root_pem
    result = read_provenance(files["camera"], trust_anchors=root)
    assert (result.status, result.validation, result.trusted) == ("valid", "valid", True)
    assert result.summary() == f"Made with {samples.CAMERA_APP} 2.1, signed by {samples.SIGNER_ORG}, signature valid"
    assert result.validation_codes == ()
    # the same from a PEM file named by the environment
    (tmp_path / "anchors.pem").write_bytes(root)
    monkeypatch.setenv(TRUST_ANCHORS_ENV, str(tmp_path / "anchors.pem"))
    assert read_provenance(files["camera"]).trusted
    # another root does not vouch for this signer
    other = samples.make_chain.__wrapped__().root_pem
    assert read_provenance(files["camera"], trust_anchors=other).validation == "untrusted signer"
    # a broken trust list is the operator's error, said as such
    bad_pem = "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n"
    broken = read_provenance(files["camera"], trust_anchors=bad_pem)
    assert broken.status == "error" and broken.error.startswith("trust anchors refused by c2pa")
    missing = read_provenance(files["camera"], trust_anchors=tmp_path / "missing.pem")
    assert missing.status == "error" and missing.error.startswith("trust anchors unreadable")


def test_ai_generated_png_is_flagged(files):
    result = read_provenance(files["ai"])
    assert (result.status, result.format) == ("valid", "image/png")
    assert result.ai_generated and result.digital_source_types == ("trainedAlgorithmicMedia",)
    assert result.claim_generator == f"{samples.AI_APP} 2.1"
    assert result.summary().startswith("AI-generated (per its Content Credentials): Made with Imaginator AI 2.1")
    assert check_record(result)["ai_generated"] is True


def test_edited_photo_lists_its_ingredient_and_history(files):
    result = read_provenance(files["edited"])
    assert (result.status, result.validation) == ("valid", "untrusted signer")
    assert result.claim_generator == f"{samples.EDITOR_APP} 2.1"
    assert result.actions == ("c2pa.opened", "c2pa.color_adjustments")
    assert (result.ingredients, result.ingredient_count, result.manifest_count) == (("camera.jpg",), 1, 2)
    assert result.digital_source_types == ("digitalCapture",)  # declared by the parent's manifest
    assert not result.ai_generated


def test_edited_after_signing_is_tampered(files):
    for anchors in (None, samples.make_chain().root_pem):
        result = read_provenance(files["tampered"], trust_anchors=anchors)
        assert (result.status, result.validation, result.trusted) == ("invalid", "tampered", False)
        assert "assertion.dataHash.mismatch" in result.validation_codes
        assert "signingCredential.untrusted" not in result.validation_codes
        assert result.summary() == "Content Credentials present but invalid (tampered)"
        assert result.claim_generator == f"{samples.CAMERA_APP} 2.1"  # the claim itself is still readable
        check_record(result)


def test_edit_of_a_tampered_file_says_its_ingredient_is_invalid(files, tmp_path):
    definition = samples.manifest(samples.EDITOR_APP, [
        {"action": "c2pa.opened", "parameters": {"ingredientIds": ["parent"]}}, {"action": "c2pa.edited"}])
    ingredient = {"title": "tampered.jpg", "relationship": "parentOf", "label": "parent"}
    signed = samples.sign(samples.encode(samples.photo("coffee")), "image/jpeg", definition,
                          [(ingredient, "image/jpeg", files["tampered"].read_bytes())])
    result = read_provenance(signed)
    assert (result.status, result.validation) == ("valid", "ingredient invalid")
    assert "ingredient.assertion.dataHash.mismatch" in result.validation_codes
    assert result.summary().endswith("; an ingredient's Content Credentials are invalid")


def test_stripped_manifest_reads_as_none(files):
    result = read_provenance(files["stripped"])
    assert (result.status, result.validation, result.manifest_bytes) == ("none", None, None)
    assert result.summary() == "no Content Credentials" and not result.has_credentials
    check_record(result)


def test_corrupt_manifest_is_a_clear_error(files):
    result = read_provenance(files["corrupt"])
    assert result.status == "error" and result.has_credentials
    assert "corrupt manifest store" in result.error
    assert result.summary().startswith("Content Credentials could not be checked: corrupt manifest store")
    check_record(result)


def test_unknown_assertion_and_action_are_read(files):
    result = read_provenance(files["unknown_assertion"])
    assert (result.status, result.validation) == ("valid", "untrusted signer")
    assert result.actions == ("c2pa.created", "com.example.teleported")


def test_hostile_manifest_text_is_cleaned(files):
    result = read_provenance(files["hostile"])
    assert result.status == "valid"
    record = check_record(result)
    texts = [record["claim_generator"], *record["actions"], record["summary"]]
    for text in texts:
        assert not any(ord(char) < 32 or 0x7F <= ord(char) < 0xA0 or char in "\u202e\u200f" for char in text)
    assert len(record["claim_generator"]) <= MAX_TEXT and record["claim_generator"].endswith("…")
    assert len(record["actions"][1]) <= 60


def test_video_credentials_are_read(tmp_path):
    result = read_provenance(samples.signed_mp4(tmp_path))
    assert (result.status, result.validation, result.format) == ("valid", "untrusted signer", "video/mp4")
    assert result.claim_generator == f"{samples.CAMERA_APP} 2.1"
    assert read_provenance(tmp_path / "plain.mp4").status == "none"


def test_remote_manifest_is_never_fetched(tmp_path):
    hits = []

    class Listener(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/manifest.c2pa"
        result = read_provenance(samples.remote_manifest_jpeg(tmp_path, url))
        time.sleep(0.2)
    finally:
        server.shutdown()
    assert hits == []
    assert (result.status, result.remote_manifest_url) == ("none", url)
    assert result.summary() == "Content Credentials stored online at 127.0.0.1 (not fetched)"


# -- EXIF / XMP ---------------------------------------------------------------------------------------------
def test_exif_and_xmp_basics(files):
    result = read_provenance(files["exif"])
    assert result.status == "none"
    assert (result.camera_make, result.camera_model) == ("Canon", "Canon EOS 5D Mark IV")
    assert result.software == "Adobe Lightroom 7.1"
    assert result.date_taken == "2023-05-17T14:32:09"
    assert result.creator_tool == "Adobe Photoshop 25.0 (Windows)"
    assert result.metadata_summary() == ("camera Canon EOS 5D Mark IV; software Adobe Lightroom 7.1; "
                                         "creator tool Adobe Photoshop 25.0 (Windows); taken 2023-05-17 14:32:09")
    metadata = check_record(result)["metadata"]
    assert metadata["camera_model"] == "Canon EOS 5D Mark IV" and metadata["ai_hints"] == []
    assert read_provenance(files["exif"], metadata=False).camera_make is None


def test_generator_tags_in_metadata(files):
    result = read_provenance(files["ai_metadata"])
    assert result.status == "none" and not result.ai_generated  # unsigned claims stay apart from C2PA's
    assert result.metadata_ai_hints == ("XMP DigitalSourceType: trainedAlgorithmicMedia",
                                        "PNG text 'parameters' (Stable Diffusion web UI)")


# -- beside a verdict ------------------------------------------------------------------------------------
def test_credentials_text_follows_a_label(files):
    """``credentials_text()``: the summary after a "Content Credentials:" label (deepfake-edge detect's line)."""
    texts = {name: read_provenance(files[name]).credentials_text() for name in
             ("camera", "ai", "tampered", "stripped", "corrupt")}
    assert texts == {
        "camera": f"Made with {samples.CAMERA_APP} 2.1, signed by {samples.SIGNER_ORG}, {UNTRUSTED}",
        "ai": f"AI-generated: Made with {samples.AI_APP} 2.1, signed by {samples.SIGNER_ORG}, {UNTRUSTED}",
        "tampered": "present but invalid (tampered)",
        "stripped": "none",
        "corrupt": "could not be checked: corrupt manifest store (the c2pa library finds no manifest in it)",
    }
    remote = Provenance(remote_manifest_url="https://cdn.example.com/m.c2pa")
    assert remote.credentials_text() == "stored online at cdn.example.com (not fetched)"
    assert remote.summary() == "Content Credentials stored online at cdn.example.com (not fetched)"


def test_provenance_for_never_raises(files, monkeypatch, caplog):
    """What a verdict's caller uses: None for a decoded image, and an error result instead of any exception."""
    import deepfake_edge.provenance as provenance

    assert provenance_for(Image.open(files["camera"])) is None
    assert provenance_for(files["ai"]).ai_generated
    wrong = provenance_for(12345)
    assert (wrong.status, wrong.error) == ("error", "provenance could not be read (TypeError)")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(provenance, "read_credentials", broken)
    result = provenance_for(files["camera"])
    assert result.status == "error" and "RuntimeError" in result.error and check_record(result)
    assert "provenance could not be read from a PosixPath source" in caplog.text


# -- sources and bad input ------------------------------------------------------------------------------
def test_every_kind_of_source(files):
    data = files["camera"].read_bytes()
    assert read_provenance(str(files["camera"])).status == "valid"
    assert read_provenance(bytearray(data)).status == "valid"
    assert read_provenance(memoryview(data)).status == "valid"
    stream = io.BytesIO(b"xx" + data)
    stream.seek(2)
    assert read_provenance(stream).status == "valid" and stream.tell() == 2  # put back where it was
    with open(files["camera"], "rb") as file:
        assert read_provenance(file).status == "valid" and file.tell() == 0
    decoded = read_provenance(Image.open(files["camera"]))
    assert decoded.status == "error" and "decoded image" in decoded.error
    with pytest.raises(TypeError):
        read_provenance(12345)


@pytest.mark.parametrize("name, data, status, message", [
    ("empty", b"", "none", None),
    ("text", b"hello, not an image at all", "none", None),
    ("random", random.Random(3).randbytes(50_000), "none", None),
    ("jpeg with JUMBF of another kind", samples.with_app11(samples.encode(samples.photo(size=(64, 48))), b"\xff\xeb"
     + (2 + 8 + 24).to_bytes(2, "big") + b"JP\x00\x01\x00\x00\x00\x01" + (24).to_bytes(4, "big") + b"jumb"
     + (16).to_bytes(4, "big") + b"jumd" + bytes(8)), "none", None),
    ("png with a garbage C2PA chunk", samples.encode(samples.photo(size=(64, 48)), "PNG")[:33]
     + (1000).to_bytes(4, "big") + b"caBX" + b"jumb" + bytes(996) + bytes(4)
     + samples.encode(samples.photo(size=(64, 48)), "PNG")[33:], "error", "unreadable manifest store"),
    ("mp4 with a garbage C2PA box", (20).to_bytes(4, "big") + b"ftypisom" + bytes(4) + b"isom"
     + (8 + 16 + 64).to_bytes(4, "big") + b"uuid"
     + bytes.fromhex("d8fec3d61b0e483c92975828877ec481") + b"jumb" * 16, "error", None),
])
def test_bad_input_never_raises(name, data, status, message):
    result = read_provenance(data)
    assert result.status == status, (name, result)
    if message:
        assert message in result.error
    check_record(result)


def test_truncated_signed_file(files):
    data = files["camera"].read_bytes()
    start = data.index(b"jumb")
    for cut in (start + 100, start + 30_000, len(data) - 1000):
        result = read_provenance(data[:cut])
        assert result.status in ("error", "invalid"), (cut, result)


def test_size_limits(files, tmp_path):
    big = read_provenance(files["camera"], max_bytes=1000)
    assert big.status == "error" and "larger than" in big.error

    class Counted(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            self.read_bytes += len(data)
            return data

    stream = Counted(files["camera"].read_bytes())
    stream.seek(5)
    refused = read_provenance(stream, max_bytes=1000)
    assert refused.status == "error" and "larger than" in refused.error
    assert (stream.read_bytes, stream.tell()) == (0, 5), "a stream too large is measured, not read"
    missing = read_provenance(tmp_path / "missing.jpg")
    assert missing.status == "error" and "cannot read the file" in missing.error
    oversized = samples.oversized_jpeg(tmp_path)  # a 5 MB manifest store
    result = read_provenance(oversized)
    assert result.status == "error" and result.has_credentials
    assert result.error == "manifest store of 5.0 MB is larger than the 2 MB checked"
    assert result.elapsed_ms < 200  # refused from the container's box sizes, never parsed
    assert read_provenance(oversized, max_manifest_bytes=8 << 20).status == "valid"


def test_fuzzed_manifests_never_raise(files):
    """Bytes flipped at random inside the manifest store: every read answers, quickly."""
    data = files["camera"].read_bytes()
    start = data.index(b"jumb")
    rng = random.Random(11)
    seen, slowest = set(), 0.0
    for _ in range(60):
        mutated = bytearray(data)
        for _ in range(rng.choice((1, 8, 64))):
            mutated[rng.randrange(start - 16, start + 60_000)] ^= rng.randrange(1, 256)
        result = read_provenance(bytes(mutated))
        assert result.status in ("valid", "invalid", "error")
        seen.add(result.status)
        slowest = max(slowest, result.elapsed_ms)
    print(f"fuzzed manifests: statuses {sorted(seen)}, slowest read {slowest:.1f} ms")
    assert "invalid" in seen and slowest < 2000


# -- the manifest bomb -------------------------------------------------------------------------------------
def test_deep_ingredient_chain_is_read_and_capped(chain_file):
    result = read_provenance(chain_file)
    assert (result.status, result.validation) == ("valid", "untrusted signer")
    assert (result.manifest_count, result.ingredients) == (25, ("chain-23.jpg",))
    assert result.claim_generator == f"{samples.EDITOR_APP} 2.1"
    print(f"24-deep ingredient chain ({chain_file.stat().st_size / 1024:.0f} KB): {result.elapsed_ms:.1f} ms")
    assert result.elapsed_ms < 2000
    capped = read_provenance(chain_file, max_manifest_bytes=64 << 10)
    assert capped.status == "error" and "larger than" in capped.error


def test_time_limit_abandons_a_slow_read(chain_file):
    started = time.perf_counter()
    result = read_provenance(chain_file, time_limit_s=0.001)
    assert time.perf_counter() - started < 0.5
    assert result.status == "error" and "took longer than" in result.error
    time.sleep(0.3)  # let the abandoned read finish, then reads work again
    assert read_provenance(chain_file).status == "valid"


def test_memory_of_reading_the_bomb_is_bounded(chain_file, files):
    """Peak RSS added by reading the 24-deep chain ten times, in a fresh interpreter (Linux: the peak is
    reset through /proc/self/clear_refs after warming up; ru_maxrss would carry pytest's over exec)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux's /proc/self/clear_refs")
    code = f"""
import json, re
from deepfake_edge.provenance import read_provenance, warm_up
def rss():
    status = open("/proc/self/status").read()
    return {{key: int(re.search(key + r":\\s+(\\d+)", status)[1]) / 1024 for key in ("VmRSS", "VmHWM")}}
warm_up()
read_provenance({str(files['camera'])!r})
open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
before = rss()
for _ in range(10):
    assert read_provenance({str(chain_file)!r}).status == "valid"
print(json.dumps({{"before_mb": before["VmRSS"], "peak_mb": rss()["VmHWM"]}}))
"""
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(output.stdout.strip().splitlines()[-1])
    added = figures["peak_mb"] - figures["before_mb"]
    print(f"bomb read x10: RSS {figures['before_mb']:.0f} MB, peak {figures['peak_mb']:.0f} MB (+{added:.1f} MB)")
    assert added < 64


def test_concurrent_reads(files):
    names = ["camera", "ai", "edited", "tampered", "stripped", "corrupt"] * 4
    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda name: read_provenance(files[name]).status, names))
    assert statuses == ["valid", "valid", "valid", "invalid", "none", "error"] * 4


# -- cost of files without credentials ------------------------------------------------------------------
def test_files_without_credentials_are_fast(tmp_path):
    """20 JPEGs of 1024x768 (half with EXIF), no manifest: the added time per image (target <= 5 ms p50)."""
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "cat",
             "camera", "moon", "coins"]
    images = []
    for number in range(20):
        image = samples.photo(names[number % 10], (1024, 768))
        if number >= 10:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        exif = Image.Exif()
        if number % 2 == 0:
            exif[0x010F], exif[0x0110] = "Canon", "Canon EOS R5"
        images.append(samples.encode(image, exif=exif))
    for data in images:  # warm: first imports
        read_provenance(data)
    times = []
    for _ in range(5):
        for data in images:
            started = time.perf_counter()
            result = read_provenance(data)
            times.append((time.perf_counter() - started) * 1e3)
            assert result.status == "none"
    times.sort()
    p50, p99 = statistics.median(times), times[int(len(times) * 0.99) - 1]
    print(f"no manifest, 1024x768 JPEG from bytes: p50 {p50:.3f} ms, p99 {p99:.3f} ms over {len(times)} reads")
    assert p50 < 5.0


def test_metadata_of_a_large_png_decodes_no_pixel():
    """Pillow's getexif() decodes a whole PNG to look for an eXIf chunk after the pixels (+140 MB for this
    one, outside the web app's decode budget): reading provenance must stay at the headers."""
    import subprocess
    import sys

    script = """
import io, numpy as np
from PIL import Image
from deepfake_edge.provenance import read_provenance
pixels = np.zeros((6000, 6000, 3), np.uint8)
pixels[..., 0] = np.arange(6000)[None, :] % 256
buffer = io.BytesIO()
Image.fromarray(pixels).save(buffer, "PNG", compress_level=1)
data = buffer.getvalue()
del pixels, buffer
read_provenance(b"warm")
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")
status = open("/proc/self/status").read()
before = int(status.split("VmRSS:")[1].split()[0])
result = read_provenance(data)
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(result.status, (peak - before) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    status, growth_mb = out.split()
    print(f"provenance of a 6000x6000 PNG: peak +{growth_mb} MB")
    assert status == "none" and int(growth_mb) < 30
