"""``deepfake-edge detect`` end to end against the real tritonserver (``triton_server``), bad inputs included."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client_samples import BAD_FILES, photo, write_bad_images, write_good_images
from deepfake_edge.checkpoint import read_card
from deepfake_edge.cli import main
from deepfake_edge.client.commands import EXIT_BAD_INPUT, EXIT_OK, EXIT_SERVER_ERROR, EXIT_UNREACHABLE
from deepfake_edge.export.commands import DEMO_CHECKPOINTS
from deepfake_edge.preprocessing import load_image
from deepfake_edge.server.triton import free_port

SERVED_B0_CARD = read_card(Path(__file__).resolve().parents[1] / DEMO_CHECKPOINTS[0])  # what conftest serves

pytestmark = pytest.mark.server

VERDICT = re.compile(r"^(?P<path>.+?)  (?P<label>Real|Fake) – (?P<percent>\d{1,2}\.\d)%"
                     r"  \[(?P<regions>\d+) regions, (?P<faces>\d+) face\(s\); highest: (?P<kind>face|tile|global) "
                     r"\d+,\d+,\d+,\d+ at \d{1,3}\.\d%\]")
JSON_KEYS = {"path", "kind", "label", "confidence", "fake_probability", "logit", "model", "model_version", "mode",
             "regions", "notes", "heatmap", "provenance", "error", "error_type"}
PROVENANCE_LINE = "  Content Credentials: "


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Good photographs (five modes) + the four bad files, one more photo in a subfolder, a README."""
    folder = tmp_path_factory.mktemp("mixed")
    write_good_images(folder)
    write_bad_images(folder)
    (folder / "sub").mkdir()
    photo("coffee").save(folder / "sub" / "coffee.webp")
    (folder / "README.txt").write_text("not an image extension: skipped when scanning the folder\n")
    return folder


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    write_good_images(folder)
    return folder


def detect(*args: str) -> int:
    return main(["detect", *map(str, args)])


# The CLI's own entry point, plus a report of its peak memory. VmHWM belongs to the process image after
# exec; rusage's maxrss would also count the pytest process the child was forked from.
_CLI_WITH_PEAK = ("""
import atexit, sys
from deepfake_edge.cli import main
atexit.register(lambda: print("peak_kb", open("/proc/self/status").read().split("VmHWM:")[1].split()[0], """
                  """file=sys.stderr))
sys.exit(main(sys.argv[1:]))
""")


def run_cli(*args: str, timeout_s: float = 120.0) -> tuple[int, str, str, float]:
    """Run ``deepfake-edge ARGS`` in a child process: (exit code, stdout, stderr, its peak RSS in MB)."""
    completed = subprocess.run([sys.executable, "-c", _CLI_WITH_PEAK, *map(str, args)],
                               capture_output=True, text=True, timeout=timeout_s)
    err, _, peak = completed.stderr.rpartition("peak_kb ")
    return completed.returncode, completed.stdout, err, int(peak) / 1024


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_good_image_is_classified_and_every_bad_one_named(triton_server, mixed_folder, protocol):
    url = triton_server.grpc_url if protocol == "grpc" else triton_server.http_url
    code, out, err, peak_mb = run_cli("detect", mixed_folder, "--url", url, "--protocol", protocol)
    lines = [line for line in out.splitlines() if not line.startswith("  ")]  # the provenance lines under each
    expected_files = sorted(p.name for p in mixed_folder.iterdir() if p.suffix != ".txt" and p.is_file())
    assert [Path(line.split("  ")[0]).name for line in lines] == expected_files, "one line per image, in order"
    # Under each verdict (not under an error), what the file says about its origin: these photos say nothing.
    assert out.count(f"\n{PROVENANCE_LINE}none\n") == len(expected_files) - len(BAD_FILES)
    for line in lines:
        name = Path(line.split("  ")[0]).name
        if name in BAD_FILES:
            assert re.search(BAD_FILES[name], line.split("  error: ")[1]), line
        elif name == "animated.gif":
            assert re.search(r"  (Real|Fake) – \d{1,2}\.\d%  \[video: 1 frames, peak 0\.0 s", line), line
        else:
            match = VERDICT.match(line)
            assert match, f"not a verdict line: {line!r}"
            assert 50.0 <= float(match["percent"]) <= 99.9, "a confidence never reads 100.0 %"
            assert int(match["regions"]) >= 1
    assert code == EXIT_BAD_INPUT
    assert f"5 of {len(expected_files)} classified" in err and "4 bad input" in err
    assert "1 subfolder(s) not searched" in err and "--recursive" in err, "skipped subfolders are named"
    assert "Traceback" not in out + err
    # Decoding the 900 M pixel bomb alone would take ~1 GB; the CLI itself needs far less than this.
    assert peak_mb < 400, f"the CLI peaked at {peak_mb:.0f} MB"


def test_json_lines_schema(triton_server, mixed_folder, capsys):
    code = detect(mixed_folder, "--recursive", "--json", "--url", triton_server.grpc_url)
    out, _ = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert code == EXIT_BAD_INPUT
    assert len(records) == len(BAD_FILES) + 5 + 1, "the subfolder's image is included with --recursive"
    assert Path(records[-1]["path"]) == mixed_folder / "sub" / "coffee.webp"
    for record in records:
        if record["kind"] == "video":  # the animated GIF: detect decides by content
            assert Path(record["path"]).name == "animated.gif" and len(record["timeline"]) == 1
            assert {"path", "label", "fake_probability", "peak", "timeline", "tracks", "heatmap", "error"} <= set(record)
            continue
        assert set(record) == JSON_KEYS
        if Path(record["path"]).name in BAD_FILES:
            assert record["label"] is None and record["fake_probability"] is None
            assert record["error_type"] == "BadImageError" and record["error"]
            assert record["provenance"] is None
        else:
            assert record["error"] is None and record["error_type"] is None
            assert record["provenance"]["status"] == "none" and not record["provenance"]["ai_generated"]
            assert record["label"] in ("Real", "Fake") and record["model"] == "deepfake_b0" and record["model_version"]
            assert 0.0 <= record["fake_probability"] <= 1.0 and 0.5 <= record["confidence"] <= 1.0
            whole_card = SERVED_B0_CARD.for_mode("whole")
            assert record["confidence"] == pytest.approx(whole_card.confidence_for(record["fake_probability"]))
            assert record["mode"] == "whole" and isinstance(record["notes"], list)
            assert {region["kind"] for region in record["regions"]} <= {"face", "tile", "global"}
            assert record["fake_probability"] == max(region["fake_probability"] for region in record["regions"])


def test_all_good_exits_zero_and_writes_heatmap_overlays(triton_server, good_folder, tmp_path, capsys):
    heatmaps = tmp_path / "heatmaps"
    code = detect(good_folder, "--heatmaps", heatmaps, "--json", "--protocol", "http", "--url", triton_server.http_url)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_OK and len(records) == 5
    for record in records:
        written = Path(record["heatmap"])
        assert written.parent == heatmaps and written.name == Path(record["path"]).stem + ".heatmap.png"
        with Image.open(written) as overlay:
            assert overlay.format == "PNG"
            original = load_image(record["path"])
            assert overlay.size == original.size, "the overlay covers the original image, at its size"
            assert np.abs(np.asarray(overlay.convert("RGB"), dtype=np.int16) - np.asarray(original)).mean() > 5


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_down_is_one_clear_message_and_exit_code(good_folder, protocol):
    url = f"127.0.0.1:{free_port()}"
    code, out, err, _ = run_cli("detect", good_folder, "--url", url, "--protocol", protocol)
    assert code == EXIT_UNREACHABLE
    assert out == ""
    assert url in err and "cannot reach" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize("protocol, port, words", [
    ("http", "grpc_port", "does not speak HTTP/1.1"),
    ("http", "metrics_port", "not Triton's HTTP API"),
    ("grpc", "http_port", "gRPC is 8001 by default"),
])
def test_a_port_of_the_wrong_protocol_is_one_clear_message_and_exit_code(triton_server, good_folder, protocol,
                                                                          port, words):
    url = f"127.0.0.1:{getattr(triton_server, port)}"
    code, out, err, _ = run_cli("detect", good_folder, "--url", url, "--protocol", protocol)
    assert code == EXIT_UNREACHABLE, err
    assert words in err and "Traceback" not in err and out == ""


def test_unknown_model_exit_code_says_the_model_is_not_ready(triton_server, good_folder, capsys):
    # Listing the served models is an admin API (the repository index): the message cannot name them.
    code = detect(good_folder, "--model", "nonexistent", "--url", triton_server.grpc_url)
    err = capsys.readouterr().err
    assert code == EXIT_SERVER_ERROR and "'nonexistent' is not ready" in err and triton_server.grpc_url in err


def test_folder_without_images(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no pictures here")
    assert detect(tmp_path, "--url", f"127.0.0.1:{free_port()}") == EXIT_BAD_INPUT
    assert "no image or video files found" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        detect("--help")
    out = capsys.readouterr().out
    for code in (EXIT_OK, EXIT_BAD_INPUT, EXIT_UNREACHABLE, EXIT_SERVER_ERROR):
        assert re.search(rf"^\s+{code}\s+\w", out, re.MULTILINE), f"exit code {code} is not documented"


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> Path:
    """A real clip, the same clip named .jpg, a photo named .mp4, a truncated clip, a file with no decodable
    frame, an audio-only file and a photo (the samples are made in a scratch folder and moved in)."""
    import video_samples

    folder, scratch = tmp_path_factory.mktemp("videos"), tmp_path_factory.mktemp("video-scratch")
    made = {"a_clip.mp4": video_samples.real_clip(scratch, seconds=2.0),
            "c_photo_named.mp4": video_samples.jpeg_named_mp4(scratch),
            "d_truncated.mp4": video_samples.truncated(scratch),
            "e_no_frames.mp4": video_samples.no_decodable_frames(scratch),
            "f_audio_only.m4v": video_samples.audio_only(scratch)}
    for name, path in made.items():
        path.rename(folder / name)
    video_samples.copy_as(folder / "a_clip.mp4", "b_clip_named.jpg")
    photo("coffee").save(folder / "g_photo.jpg")
    return folder


def test_videos_and_images_in_one_folder(triton_server, video_folder, tmp_path, capsys):
    heatmaps = tmp_path / "heatmaps"
    code = detect(video_folder, "--json", "--heatmaps", heatmaps, "--url", triton_server.grpc_url)
    out, err = capsys.readouterr()
    records = {Path(record["path"]).name: record for record in map(json.loads, out.splitlines())}
    assert list(records) == sorted(records), "one record per file, in input order"
    clip = records["a_clip.mp4"]
    assert clip["kind"] == "video" and clip["label"] in ("Real", "Fake") and clip["error"] is None
    times = [frame["time_s"] for frame in clip["timeline"]]
    assert times == sorted(times) and len(times) == 4, "2 s of footage at 2 frames per second"
    assert clip["peak"]["fake_probability"] == max(frame["fake_probability"] for frame in clip["timeline"])
    assert (heatmaps / "a_clip.heatmap.png").is_file(), "the peak frame's overlay"
    with Image.open(heatmaps / "a_clip.heatmap.png") as overlay:
        assert overlay.size == (clip["video"]["width"], clip["video"]["height"])
    named = records["b_clip_named.jpg"]
    assert named["kind"] == "video" and any("named .jpg" in note for note in named["notes"])
    assert [f["fake_probability"] for f in named["timeline"]] == [f["fake_probability"] for f in clip["timeline"]]
    photo_named = records["c_photo_named.mp4"]
    assert photo_named["kind"] == "image" and any("named .mp4" in note for note in photo_named["notes"])
    truncated = records["d_truncated.mp4"]
    assert truncated["label"] and truncated["timeline"] and truncated["notes"], "the decodable part is analysed"
    for bad in ("e_no_frames.mp4", "f_audio_only.m4v"):
        assert records[bad]["error_type"] == "BadVideoError" and records[bad]["error"], records[bad]
    assert records["g_photo.jpg"]["kind"] == "image" and records["g_photo.jpg"]["label"]
    assert code == EXIT_BAD_INPUT and "Traceback" not in out + err


# ---------------------------------------------------------------- provenance beside the verdict


@pytest.fixture(scope="module")
def signed_folder(tmp_path_factory) -> Path:
    """Files signed offline (tests/provenance_samples.py): a camera photo, an AI-generated PNG, the photo
    tampered with after signing, stripped of its credentials, with a corrupt manifest, a photo with EXIF/XMP
    only, and a signed MP4 video (made in a scratch folder and moved in)."""
    import provenance_samples as samples

    folder, scratch = tmp_path_factory.mktemp("signed"), tmp_path_factory.mktemp("signed-scratch")
    made = {"a_camera.jpg": samples.camera_jpeg(scratch), "b_ai.png": samples.ai_png(scratch),
            "c_tampered.jpg": samples.tampered_jpeg(scratch), "d_stripped.jpg": samples.stripped_jpeg(scratch),
            "e_corrupt.jpg": samples.corrupt_jpeg(scratch), "f_exif.jpg": samples.exif_jpeg(scratch),
            "g_camera.mp4": samples.signed_mp4(scratch)}
    for name, path in made.items():
        path.rename(folder / name)
    return folder


def test_content_credentials_are_shown_beside_each_verdict(triton_server, signed_folder, capsys):
    import provenance_samples as samples

    signed = f"Made with {samples.CAMERA_APP} 2.1, signed by {samples.SIGNER_ORG}, signature valid (untrusted signer)"
    code = detect(signed_folder, "--mode", "fast", "--url", triton_server.grpc_url)
    out = capsys.readouterr().out
    assert code == EXIT_OK, out
    blocks: dict[str, list[str]] = {}  # file name -> the lines under its verdict
    under: list[str] = []
    for line in out.splitlines():
        if line.startswith("  "):
            under.append(line)
        else:
            assert re.search(r"  (Real|Fake) – \d{1,2}\.\d%", line), line  # the verdict line is unchanged
            under = blocks[Path(line.split("  ")[0]).name] = []
    assert blocks == {
        "a_camera.jpg": [PROVENANCE_LINE + signed],
        "b_ai.png": [f"{PROVENANCE_LINE}AI-generated: Made with {samples.AI_APP} 2.1, signed by {samples.SIGNER_ORG}, "
                     "signature valid (untrusted signer)"],
        "c_tampered.jpg": [PROVENANCE_LINE + "present but invalid (tampered)"],
        "d_stripped.jpg": [PROVENANCE_LINE + "none"],
        "e_corrupt.jpg": [PROVENANCE_LINE + "could not be checked: corrupt manifest store (the c2pa library finds no "
                          "manifest in it)"],
        "f_exif.jpg": [PROVENANCE_LINE + "none", "  metadata: camera Canon EOS 5D Mark IV; software Adobe Lightroom "
                       "7.1; creator tool Adobe Photoshop 25.0 (Windows); taken 2023-05-17 14:32:09"],
        "g_camera.mp4": [PROVENANCE_LINE + signed],
    }

    code = detect(signed_folder, "--mode", "fast", "--json", "--url", triton_server.grpc_url)
    records = {Path(record["path"]).name: record for record in map(json.loads, capsys.readouterr().out.splitlines())}
    assert code == EXIT_OK
    for name, record in records.items():
        assert record["label"] in ("Real", "Fake"), "the verdict stands, whatever the credentials say"
        if record["kind"] == "image":
            assert set(record) == JSON_KEYS
    found = {name: record["provenance"] for name, record in records.items()}
    status = {name: (record["status"], record["validation"], record["ai_generated"]) for name, record in found.items()}
    assert status == {"a_camera.jpg": ("valid", "untrusted signer", False),
                      "b_ai.png": ("valid", "untrusted signer", True),
                      "c_tampered.jpg": ("invalid", "tampered", False), "d_stripped.jpg": ("none", None, False),
                      "e_corrupt.jpg": ("error", None, False), "f_exif.jpg": ("none", None, False),
                      "g_camera.mp4": ("valid", "untrusted signer", False)}
    assert records["b_ai.png"]["provenance"]["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert records["b_ai.png"]["provenance"]["claim_generator"] == f"{samples.AI_APP} 2.1"
    assert "assertion.dataHash.mismatch" in records["c_tampered.jpg"]["provenance"]["validation_codes"]
    assert records["e_corrupt.jpg"]["provenance"]["error"].startswith("corrupt manifest store")
    assert records["f_exif.jpg"]["provenance"]["metadata"]["camera_model"] == "Canon EOS 5D Mark IV"
    assert records["g_camera.mp4"]["kind"] == "video" and records["g_camera.mp4"]["provenance"]["format"] == "video/mp4"

    code = detect(signed_folder, "--mode", "fast", "--json", "--no-provenance", "--url", triton_server.grpc_url)
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == EXIT_OK and [record["provenance"] for record in records] == [None] * 7
    code = detect(signed_folder / "a_camera.jpg", "--no-provenance", "--url", triton_server.grpc_url)
    assert code == EXIT_OK and "Content Credentials" not in capsys.readouterr().out


def test_a_copy_move_is_reported_unless_the_check_is_left_out(triton_server, tmp_path, capsys):
    from client_samples import copied_astronaut

    path = tmp_path / "copied.png"
    Image.fromarray(copied_astronaut()).save(path)
    kinds = []
    for options in ((), ("--no-copy-move",)):
        code = detect(path, "--json", *options, "--url", triton_server.grpc_url)
        record = json.loads(capsys.readouterr().out)
        assert code == EXIT_OK, record
        kinds.append(sorted(region["kind"] for region in record["regions"] if region["kind"] == "copy_move"))
    assert kinds == [["copy_move", "copy_move"], []]


def test_building_the_command_line_loads_neither_torch_nor_onnxruntime():
    """Every verb registers its options at start-up, so a verb module that imports torch at the top would make
    every `deepfake-edge` call (detect included) pay ~1.6 s and ~100 MB for it."""
    script = ("import sys\nfrom deepfake_edge.cli import build_parser\nbuild_parser()\n"
              "print(sorted(m for m in ('torch', 'onnxruntime', 'timm') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert loaded.stdout.strip() == "[]"
