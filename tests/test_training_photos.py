"""The packaged photo catalogue: Debian photos found on disk and inside Qt resource archives (.rcc)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_edge.training import demo
from deepfake_edge.training import photos as photos_module
from deepfake_edge.training.debian_photos import DEBIAN_PHOTOS, photo_name
from deepfake_edge.training.qt_resources import QtResourceError, read_member
from deepfake_edge.training.synth import assign_splits

Tree = dict[str, "Tree | tuple[bytes, bool]"]  # name -> subtree, or (payload, zlib-compressed?)


def write_rcc(path: Path, tree: Tree, version: int = 2) -> None:
    """Write ``tree`` as a Qt rcc archive the way Qt's rcc tool lays it out: directories breadth first,
    each directory's children in consecutive entries, 4-byte sizes before names and payloads."""
    entries: list[tuple[str, object]] = [("", tree)]
    children: dict[int, tuple[int, int]] = {}
    index = 0
    while index < len(entries):  # breadth first: append each directory's children as one block
        name, node = entries[index]
        if isinstance(node, dict):
            children[index] = (len(node), len(entries))
            entries.extend(sorted(node.items()))
        index += 1
    names, payloads, table = bytearray(), bytearray(), bytearray()
    for position, (name, node) in enumerate(entries):
        name_offset = len(names)
        names += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        if isinstance(node, dict):
            table += struct.pack(">IHII", name_offset, 0x2, *children[position])
        else:
            payload, compressed = node
            stored = struct.pack(">I", len(payload)) + zlib.compress(payload) if compressed else payload
            table += struct.pack(">IHHHI", name_offset, 0x1 if compressed else 0, 0, 0, len(payloads))
            payloads += struct.pack(">I", len(stored)) + stored
        if version >= 2:
            table += struct.pack(">Q", 0)  # modification time
    header = 20 + (4 if version >= 3 else 0)
    tree_offset, data_offset = header, header + len(table)
    names_offset = data_offset + len(payloads)
    head = b"qres" + struct.pack(">IIII", version, tree_offset, data_offset, names_offset)
    path.write_bytes(head + (struct.pack(">I", 0) if version >= 3 else b"") + table + payloads + names)


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("version", [1, 2, 3])
def test_rcc_members_are_read_plain_and_zlib_compressed(tmp_path: Path, version: int) -> None:
    archive = tmp_path / "photos.rcc"
    write_rcc(archive, {"a": {"b": {"plain.jpg": (b"plain bytes", False), "packed.txt": (b"x" * 500, True)}},
                        "top.bin": (b"\x00\x01", False)}, version)
    assert read_member(archive, "/a/b/plain.jpg") == b"plain bytes"
    assert read_member(archive, "a/b/packed.txt") == b"x" * 500
    assert read_member(archive, "top.bin") == b"\x00\x01"
    for missing in ("a/b/none.jpg", "a/c/plain.jpg", "top.bin/deeper"):
        with pytest.raises(QtResourceError, match="no member"):
            read_member(archive, missing)
    with pytest.raises(QtResourceError, match="is a directory"):
        read_member(archive, "a/b")


def test_a_file_that_is_not_an_rcc_archive_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "fake.rcc").write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(QtResourceError, match="not a Qt resource archive"):
        read_member(tmp_path / "fake.rcc", "x")


def test_debian_photos_are_found_in_folders_and_archives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "lake.jpg").write_bytes(_jpeg(0))
    write_rcc(tmp_path / "game.rcc", {"res": {"fox.jpg": (_jpeg(1), False), "owl.jpg": (_jpeg(2), True)}})
    monkeypatch.setattr(photos_module, "DEBIAN_SHARE", tmp_path)
    monkeypatch.setattr(photos_module, "DEBIAN_PHOTOS", {"pkg": ("deb", {
        "pics/lake.jpg": ("scenes", "lake"), "pics/gone.jpg": ("scenes", "gone"),  # not installed: left out
        "game.rcc/res/fox.jpg": ("animals", "fox"), "game.rcc/res/owl.jpg": ("animals", "owl", "owl_2"),
        "game.rcc/res/bat.jpg": ("animals", "bat"), "other.rcc/res/cat.jpg": ("animals", "cat"),
    })})
    found = {p.name: p for p in photos_module.packaged_photo_records() if p.name.startswith("deb_")}
    assert sorted(found) == ["deb_fox", "deb_lake", "deb_owl_2"]
    assert found["deb_owl_2"].scene == "owl" and found["deb_owl_2"].category == "animals"
    for photo, seed in ((found["deb_lake"], 0), (found["deb_fox"], 1), (found["deb_owl_2"], 2)):
        expected = Image.open(io.BytesIO(_jpeg(seed))).convert("RGB")
        assert photo.size == (64, 48)
        np.testing.assert_array_equal(np.asarray(photo.load()), np.asarray(expected))


def test_the_debian_catalogue_names_each_photo_once() -> None:
    names = [photo_name(prefix, where) for prefix, catalogue in DEBIAN_PHOTOS.values() for where in catalogue.values()]
    assert len(names) == len(set(names)) > 300
    categories = {where[0] for _, catalogue in DEBIAN_PHOTOS.values() for where in catalogue.values()}
    assert categories <= {"people", "animals", "objects", "scenes", "nature", "texture", "science", "documents"}


def test_the_demo_rebuilds_its_set_when_the_installed_photos_change(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    installed = [photos_module.Photo(name, "scenes", name, Image.new("RGB", (8, 8))) for name in ("a", "b", "c")]
    monkeypatch.setattr(demo, "packaged_photo_records", lambda: installed)
    manifest = tmp_path / "synth.json"
    assert not demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 224)
    made = {"count": demo.SYNTH_COUNT, "image_size": 224,
            "photos": {"train": ["a", "b"], "validation": ["c"], "test": []}}
    manifest.write_text(json.dumps(made))
    assert demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 224)
    assert not demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 160)  # the CPU recipe's set is made at another size
    manifest.write_text(json.dumps({**made, "count": demo.SYNTH_COUNT // 2}))
    assert not demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 224)
    manifest.write_text(json.dumps({**made, "seed": 1}))  # seed 1 dealt the photos itself: other splits
    assert not demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 224, seed=1)
    manifest.write_text(json.dumps({**made, "seed": 1, "split_seed": 0}))  # a fresh draw is not the first set
    assert not demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 224)
    assert demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 224, seed=1)
    installed.append(photos_module.Photo("d", "scenes", "d", Image.new("RGB", (8, 8))))  # a package was installed
    manifest.write_text(json.dumps(made))
    assert not demo.is_current_demo_set(manifest, demo.SYNTH_COUNT, 224)


def test_each_demo_recipe_trains_at_the_size_its_set_is_made() -> None:
    for arch, recipes in demo.RECIPES.items():
        for device, recipe in recipes.items():
            command = demo.train_command(arch, recipe)
            assert command[1] == str(recipe.data) and command[command.index("--device") + 1] == device
            assert int(command[command.index("--input-size") + 1]) <= recipe.image_size
            if arch in demo.SELF_BLEND_RECIPES:  # stage 2 starts from stage 1's checkpoint
                assert command[command.index("--init-weights") + 1] == str(demo.stage1_checkpoint(arch))
            for continuation in recipe.continuations:  # the same model on the same device at the same size
                continued = continuation.train_args
                for option in ("--arch", "--device", "--input-size"):
                    assert continued[continued.index(option) + 1] == command[command.index(option) + 1]
    assert demo.recipe_for("small_cnn", "cuda") is demo.RECIPES["small_cnn"]["cpu"]


def test_the_cpu_b0_publishes_its_last_continued_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """build() trains stage 2, continues each run from the previous run's best (the last two on fresh draws
    of the set, the last after mining that draw's hard negatives with the previous best), and publishes,
    refits the last run's head on the first set and publishes, calibrates and evaluates that checkpoint there
    (each ``train`` and ``refit-head`` here writes its --out instead of training)."""
    for name in ("RUNS", "DEMO_DIR", "REPORT_DIR"):
        monkeypatch.setattr(demo, name, tmp_path / name)
    demo.DEMO_DIR.mkdir()
    commands: list[list[str]] = []

    def run(arguments: list[str]) -> int:
        commands.append(arguments)
        if arguments[0] == "train":
            out = Path(arguments[arguments.index("--out") + 1])
            out.mkdir(parents=True)
            for file in ("best.safetensors", "history.json", "summary.json"):
                (out / file).write_text(out.name)
        if arguments[0] == "refit-head":
            out = Path(arguments[arguments.index("--out") + 1])
            out.parent.mkdir(parents=True)
            out.write_text(out.parent.name)
        return 0

    monkeypatch.setattr(demo, "_run", run)
    recipe = demo.RECIPES["efficientnet_b0"]["cpu"]
    assert demo.build("efficientnet_b0", recipe) == 0
    trains = [c for c in commands if c[0] == "train"]
    assert len(trains) == 1 + len(recipe.continuations) >= 3
    outs = [Path(c[c.index("--out") + 1]) for c in trains]
    for previous, continued in zip(outs, trains[1:]):
        assert continued[continued.index("--init-weights") + 1] == str(previous / "best.safetensors")
    assert [c[1] for c in trains] == [str(recipe.data)] * (len(trains) - 2) + [f"{recipe.data}_s1", f"{recipe.data}_s2"]
    # The last draw's hard negatives are mined by the run before, right before the last run trains on them.
    mining = [c for c in commands if c[:2] == ["data", "negatives"]]
    assert mining == [["data", "negatives", f"{recipe.data}_s2", str(outs[-2] / "best.safetensors")]]
    assert commands.index(mining[0]) == commands.index(trains[-1]) - 1
    refits = [c for c in commands if c[0] == "refit-head"]
    assert refits == [["refit-head", str(outs[-1] / "best.safetensors"), str(recipe.data), "--out",
                       str(demo.RUNS / "efficientnet_b0_refit" / "best.safetensors")]]
    assert commands.index(refits[0]) == commands.index(trains[-1]) + 1
    published = demo.DEMO_DIR / "efficientnet_b0.safetensors"
    assert published.read_text() == "efficientnet_b0_refit" and len(set(outs)) == len(outs)
    assert (demo.REPORT_DIR / "efficientnet_b0" / "history.json").read_text() == outs[-1].name
    after = commands[len(trains) + len(mining) + len(refits):]
    photos, videos = after[:3], after[3:]
    assert [c[0] for c in photos] == ["calibrate", "evaluate", "evaluate"]
    assert all(c[1:3] == [str(published), str(recipe.data)] for c in photos)
    # B0's video verdict (the card's rule and threshold) is calibrated and reported on the video set.
    assert [c[:4] for c in videos] == [["calibrate", str(published), str(demo.VIDEO_SET), "--videos"],
                                       ["evaluate", str(published), str(demo.VIDEO_SET), "--videos"]]


def test_the_demo_makes_its_video_set_unless_one_of_its_size_split_and_photos_is_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "VIDEO_SET", tmp_path / "videos")
    commands: list[list[str]] = []
    monkeypatch.setattr(demo, "_run", lambda arguments: commands.append(arguments) or 0)
    assert demo._make_video_set() == 0 and commands[-1][:2] == ["data", "videos"]  # none there
    demo.VIDEO_SET.mkdir()
    manifest = demo.VIDEO_SET / "video_set.json"
    installed = photos_module.packaged_photo_records()
    dealt = assign_splits(installed, 0.15, 0.15, demo.DEMO_SPLIT_SEED)
    photos = {split: sorted(p.name for p in dealt[split]) for split in ("validation", "test")}
    # A catalogue with one photo fewer deals the splits differently: that set was made from other photos.
    fewer = assign_splits(installed[1:], 0.15, 0.15, demo.DEMO_SPLIT_SEED)
    stale = {split: sorted(p.name for p in fewer[split]) for split in ("validation", "test")}
    assert stale != photos
    for made, remade in (({"pairs_per_split": demo.VIDEO_PAIRS, "split_seed": 1, "photos": photos}, True),
                         ({"pairs_per_split": demo.VIDEO_PAIRS // 2, "split_seed": 0, "photos": photos}, True),
                         ({"pairs_per_split": demo.VIDEO_PAIRS, "split_seed": 0, "photos": stale}, True),
                         ({"pairs_per_split": demo.VIDEO_PAIRS, "split_seed": 0}, True),
                         ({"pairs_per_split": demo.VIDEO_PAIRS, "split_seed": 0, "photos": photos}, False)):
        manifest.write_text(json.dumps(made))
        commands.clear()
        demo._make_video_set()
        assert bool(commands) is remade, made
