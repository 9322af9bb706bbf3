"""The copy-move check (deepfake_edge/copy_move.py) and how a finding joins the whole-image verdict."""

from __future__ import annotations

import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont

from client_samples import COPIED_FROM, COPIED_TO, copied_astronaut

from deepfake_edge import copy_move
from deepfake_edge.client.analysis import Prepared, to_detections
from deepfake_edge.client.triton_io import ModelInfo, Outputs
from deepfake_edge.copy_move import MIN_SUPPORT, CopyMove, copy_move_score, find_copy_move, fit_calibration
from deepfake_edge.model_card import ModelCard
from deepfake_edge.preprocessing import Preprocessor
from deepfake_edge.regions import analyse
from deepfake_edge.training.edit_graphics import font_files
from deepfake_edge.training.whole_image import PhotoScore

def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Share of ``a`` inside ``b``."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return width * height / ((a[2] - a[0]) * (a[3] - a[1]))


@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (20.0, 0.9), (-35.0, 1.2)])
def test_a_moved_rotated_or_rescaled_copy_is_found_with_both_areas(angle, scale):
    found = find_copy_move(Image.fromarray(copied_astronaut(angle, scale)))
    assert found is not None and found.inliers >= 8
    side = COPIED_FROM[2] - COPIED_FROM[0]
    target = (COPIED_TO[0], COPIED_TO[1], COPIED_TO[0] + side, COPIED_TO[1] + side)
    areas = sorted(found.areas)  # the copy cannot be told from its source: either order
    assert _overlap(areas[0], target) > 0.8 and _overlap(areas[1], COPIED_FROM) > 0.8, found
    # The move is reported in one direction or the other.
    assert min(abs(found.scale - scale), abs(found.scale - 1 / scale)) < 0.05
    assert min(abs(abs(found.angle) - abs(angle)), 180 - abs(found.angle)) < 2.0


def test_unedited_photos_with_repeated_texture_have_no_finding():
    for name in ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "coins"):
        picture = getattr(skimage.data, name)()
        picture = np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture
        assert find_copy_move(Image.fromarray(picture)) is None, name


@pytest.mark.parametrize("times", [3, 6])  # 6x: 3072 px, larger than any photo of the demo set
def test_areas_are_in_original_pixels_when_the_photo_is_analysed_shrunk(times):
    side = 512 * times
    big = cv2.resize(copied_astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)  # analysed at MAX_SIDE
    found = find_copy_move(Image.fromarray(big))
    assert found is not None
    scaled = tuple(times * v for v in COPIED_FROM)
    assert max(_overlap(area, scaled) for area in found.areas) > 0.8  # type: ignore[arg-type]


def test_no_more_checks_run_at_once_than_there_are_cores(monkeypatch):
    """A burst of uploads to one process (the web app's threads) waits for a core instead of building one SIFT
    scale space per upload at once; every caller still gets its answer."""
    real_sift, lock, running, most = cv2.SIFT_create, threading.Lock(), [0], [0]

    class CountingSift:
        def __init__(self, **options):
            self.sift = real_sift(**options)

        def detectAndCompute(self, *args):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)  # long enough for the other threads to pile up
            try:
                return self.sift.detectAndCompute(*args)
            finally:
                with lock:
                    running[0] -= 1

    monkeypatch.setattr(copy_move.cv2, "SIFT_create", CountingSift)
    photo = Image.fromarray(copied_astronaut())
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(find_copy_move, [photo] * 8))
    assert all(f is not None and f.inliers >= 8 for f in found)
    assert most[0] == min(8, os.cpu_count() or 1), most


def test_tiny_flat_and_grey_images_give_no_finding():
    assert find_copy_move(Image.new("RGB", (8, 8))) is None
    assert find_copy_move(Image.new("RGB", (640, 480), (90, 120, 200))) is None
    assert find_copy_move(Image.fromarray(skimage.data.camera()).convert("RGB")) is None


def test_the_calibration_rises_with_the_inliers_and_gives_the_logit_it_names():
    inliers = [0] * 40 + [4, 5] + [0] * 15 + [6, 9, 12, 20, 40, 80] * 4
    labels = [0] * 42 + [1] * 39
    a, b = fit_calibration(inliers, labels)
    assert b > 0
    probabilities = [copy_move_score(n, (a, b))[0] for n in (0, MIN_SUPPORT, 10, 100)]
    assert probabilities == sorted(probabilities) and probabilities[0] < 0.5 < probabilities[-1]
    probability, logit = copy_move_score(12, (a, b))
    assert logit == pytest.approx(a + b * math.log(13)) and probability == pytest.approx(1 / (1 + math.exp(-logit)))
    # Perfectly separated counts still give finite weights; one label alone cannot be fitted.
    assert all(math.isfinite(w) for w in fit_calibration([0, 0, 30, 40], [0, 0, 1, 1]))
    with pytest.raises(ValueError):
        fit_calibration([0, 5], [1, 1])


def test_a_card_keeps_its_copy_move_calibration():
    card = ModelCard(arch="a", image_threshold=0.9, copy_move_calibration=(-1.5, 2.0))
    assert ModelCard.from_json(card.to_json()) == card
    assert ModelCard.from_json(ModelCard(arch="a").to_json()).copy_move_calibration is None


def _detection(card: ModelCard, found: CopyMove | None, region_probability: float = 0.2):
    image = Image.fromarray(skimage.data.astronaut())
    preprocessor = Preprocessor.from_card(card)
    plan, rows = analyse(image, preprocessor)
    probabilities = np.full(len(rows), 0.01, np.float32)
    probabilities[0] = region_probability
    logits = np.log(probabilities / (1 - probabilities))
    info = ModelInfo("m", card, 32, (3, card.input_size, card.input_size), 1)
    check: Future = Future()  # the check analyse_whole starts, finished with ``found``
    check.set_result(found)
    prepared = Prepared("astronaut", rows, plan, (0, 0, *image.size), None, check)
    return to_detections([prepared], Outputs(probabilities, logits, None, "1"), info)[0]


def test_a_copy_move_joins_the_verdict_as_two_regions_and_decides_when_it_is_the_strongest():
    card = ModelCard(arch="efficientnet_b0", threshold=0.5, image_threshold=0.9, copy_move_calibration=(-1.0, 1.5))
    found = CopyMove(30, ((40, 330, 160, 450), (300, 250, 420, 370)), 1.0, 0.0)
    detection = _detection(card, found)
    probability, logit = copy_move_score(30, card.copy_move_calibration)
    copies = [r for r in detection.regions if r.kind == "copy_move"]
    assert [r.box for r in copies] == list(found.areas) and all(r.fake_probability == probability for r in copies)
    assert detection.fake_probability == probability and detection.logit == pytest.approx(logit)
    assert probability > 0.9 and detection.label == "Fake"
    # A stronger region still decides; without a finding, or a card without the calibration, nothing changes.
    assert _detection(card, found, region_probability=0.999).fake_probability == pytest.approx(0.999)
    for other_card, other_found in ((card, None), (card.replace(copy_move_calibration=None), found)):
        plain = _detection(other_card, other_found)
        assert plain.fake_probability == pytest.approx(0.2) and plain.label == "Real"
        assert not [r for r in plain.regions if r.kind == "copy_move"]


def test_whole_mode_leaves_the_check_running_while_the_rows_go_out_and_waits_for_it_after(monkeypatch):
    """analyse_whole returns the rows at once, the check still running on the check threads; the plan waits
    for it once Triton has answered (wait_for_copy_moves), and its finding then joins the verdict."""
    from deepfake_edge.client import analysis

    release, found = threading.Event(), CopyMove(30, ((40, 330, 160, 450), (300, 250, 420, 370)), 1.0, 0.0)

    def held_check(*working_copy) -> CopyMove:
        assert release.wait(10), "the test never let the check finish"
        return found

    monkeypatch.setattr(copy_move, "_check", held_check)
    card = ModelCard(arch="efficientnet_b0", threshold=0.5, image_threshold=0.9, copy_move_calibration=(-1.0, 1.5))
    info = ModelInfo("m", card, 32, (3, card.input_size, card.input_size), 1)
    prepared = analysis.analyse_whole("astronaut", Image.fromarray(skimage.data.astronaut()), info)
    assert len(prepared.rows) == len(prepared.plan.regions) and not prepared.copy_move.done()
    release.set()
    analysis.wait_for_copy_moves([prepared])
    assert prepared.copy_move.done()
    probabilities = np.full(len(prepared.rows), 0.01, np.float32)
    detection = to_detections([prepared], Outputs(probabilities, np.log(probabilities / 0.99), None, "1"), info)[0]
    assert [r.box for r in detection.regions if r.kind == "copy_move"] == list(found.areas)
    assert detection.fake_probability == copy_move_score(30, card.copy_move_calibration)[0]


def test_whole_image_evaluation_scores_a_photo_as_the_client_does():
    photo = PhotoScore("000001", 1, "copy_move", 0.2, None, 0.2, 30)
    calibration = (-1.0, 1.5)
    card = ModelCard(arch="efficientnet_b0", threshold=0.5, image_threshold=0.9, copy_move_calibration=calibration)
    served = _detection(card, CopyMove(30, ((0, 0, 10, 10), (20, 20, 30, 30)), 1.0, 0.0))
    assert photo.calibrated(calibration).score == pytest.approx(served.fake_probability)
    assert photo.calibrated(None).score == 0.2
    assert PhotoScore("000002", 0, None, 0.3, None, 0.3, 0).calibrated(calibration).score == 0.3


def test_a_patch_cloned_twice_is_found_but_repeated_text_is_not():
    photo = copied_astronaut()
    x0, y0, x1, y1 = COPIED_FROM
    photo[40:40 + y1 - y0, 40:40 + x1 - x0] = photo[y0:y1, x0:x1]  # a second clone, top left
    found = find_copy_move(Image.fromarray(photo))
    assert found is not None and found.support >= MIN_SUPPORT
    # A sign with its words printed again and again under different moves: every move has a rival. The photo
    # is cut to the check's working size, so that the text is matched as printed, not shrunk.
    sign = Image.fromarray(np.ascontiguousarray(skimage.data.coffee()[:, :copy_move.MAX_SIDE]))
    draw = ImageDraw.Draw(sign)
    font = ImageFont.truetype(font_files()[0], 26) if font_files() else ImageFont.load_default()
    for row in range(6):
        draw.text((20 + 37 * (row % 3), 20 + 62 * row), "OPEN DAILY - FRESH COFFEE", fill=(250, 250, 250), font=font)
    repeated = find_copy_move(sign)
    assert repeated is None or repeated.support < repeated.inliers // 2, repeated


def _write_full_split(folder, photos: dict[str, tuple[str, np.ndarray, np.ndarray]]) -> None:
    """A 'data edits' full/ split: for each stem, its family, unedited twin and edited photo."""
    import json

    for name in ("Real", "Fake", "masks"):
        (folder / name).mkdir(parents=True)
    for stem, (_, real, fake) in photos.items():
        Image.fromarray(real).save(folder / "Real" / f"{stem}.jpg", quality=95)
        Image.fromarray(fake).save(folder / "Fake" / f"{stem}.jpg", quality=95)
        Image.fromarray(((fake != real).any(axis=2) * 255).astype(np.uint8)).save(folder / "masks" / f"{stem}.png")
    (folder / "edits.json").write_text(json.dumps({stem: {"family": family, "source": stem}
                                                   for stem, (family, _, _) in photos.items()}))


def test_calibrate_fits_the_copy_move_curve_on_training_pairs_and_sets_the_threshold_on_validation(tmp_path):
    import torch

    from deepfake_edge.checkpoint import read_card, save_checkpoint
    from deepfake_edge.models import build_model
    from deepfake_edge.training.whole_image import calibrate, copy_move_pairs

    astronaut, coffee = skimage.data.astronaut(), skimage.data.coffee()
    moved_rim = coffee.copy()
    moved_rim[260:380, 380:530] = coffee[50:170, 100:250]  # the top of the cup's rim moved down right
    splices = {}
    for stem, picture in (("000002", skimage.data.rocket()), ("000003", skimage.data.chelsea())):
        spliced = picture.copy()
        spliced[40:120, 40:160] = astronaut[200:280, 200:320]
        splices[stem] = ("splice", picture, spliced)
    copy_moves = {"000000": ("copy_move", astronaut, copied_astronaut()), "000001": ("copy_move", coffee, moved_rim)}
    # Training adds a copy-move the check cannot see (a flat patch of the camera's sky moved): a curve fitted on
    # validation's two found pairs would differ from one fitted here.
    camera = np.repeat(skimage.data.camera()[..., None], 3, axis=2)
    flat_move = camera.copy()
    flat_move[20:60, 300:360] = camera[20:60, 100:160]
    _write_full_split(tmp_path / "set" / "train" / "full",
                      {**copy_moves, "000002": ("copy_move", camera, flat_move)})
    _write_full_split(tmp_path / "set" / "validation" / "full", {**copy_moves, **splices})
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "cnn.safetensors", build_model("small_cnn"),
                                 ModelCard(arch="small_cnn", input_size=64, resize_size=72))

    regions_alone = calibrate(checkpoint, tmp_path / "set", max_false_alarm=0.0, progress=False)
    assert read_card(checkpoint).copy_move_calibration is None  # the check stays off unless asked for,
    assert "copy_move_found_unedited" not in regions_alone  # and does not even run
    validation = calibrate(checkpoint, tmp_path / "set", max_false_alarm=0.0, progress=False, copy_move=True)
    card = read_card(checkpoint)
    supports, labels = copy_move_pairs(tmp_path / "set", "train", progress=False)
    assert labels == [0, 1] * 3 and supports[1] >= MIN_SUPPORT and supports[5] == 0
    assert card.copy_move_calibration == pytest.approx(fit_calibration(supports, labels))
    assert card.copy_move_calibration != pytest.approx(fit_calibration(supports[:4], labels[:4]))
    assert card.copy_move_calibration[1] > 0 and validation["copy_move"]["copy_move_found"] == 1.0
    assert validation["copy_move_found_unedited"] == 0.0 and validation["splice"]["copy_move_found"] == 0.0
    # No unedited photo may be called Fake (max_false_alarm 0), and both copy-moves outscore them all.
    assert validation["false_alarm_rate"] == 0.0 and card.image_threshold == validation["threshold"]
    assert validation["copy_move"]["roc_auc"] == 1.0
    with pytest.raises(ValueError, match="copy-move pairs"):
        copy_move_pairs(tmp_path / "set", "test")
