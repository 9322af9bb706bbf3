"""Video analysis: face tracks and video rules (deepfake_edge/tracks.py, pure) and ``detect_video``
(client/video.py) end to end against the real tritonserver (``triton_server``)."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from deepfake_edge.tracks import (
    VIDEO_RULES,
    FaceTracker,
    Track,
    associate,
    iou,
    peak_index,
    top_k_mean,
    video_score,
)

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
MODEL = "deepfake_b0"


# -- IoU -----------------------------------------------------------------------------------------------------
def test_iou_of_known_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no area
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # empty box


# -- association ---------------------------------------------------------------------------------------------
def shifted(box, dx=0, dy=0):
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


A = (0, 0, 100, 100)
B = (300, 0, 400, 100)


def test_two_moving_faces_make_two_tracks_in_any_box_order():
    frames = []
    for i in range(6):
        boxes = [shifted(A, 10 * i), shifted(B, dy=5 * i)]
        scores = [0.1 * i, 0.9]
        if i % 2:  # the detector lists faces in any order
            boxes, scores = boxes[::-1], scores[::-1]
        frames.append((i, boxes, scores))
    tracks = associate(frames)
    assert [t.track_id for t in tracks] == [0, 1]
    a, b = tracks
    assert a.frame_indices == b.frame_indices == list(range(6))
    assert a.boxes == [shifted(A, 10 * i) for i in range(6)]
    assert b.boxes == [shifted(B, dy=5 * i) for i in range(6)]
    assert a.scores == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert a.median == pytest.approx(0.25) and b.median == pytest.approx(0.9)


def test_a_track_survives_two_missing_frames_but_not_three():
    survives = associate([(0, [A], [0.5]), (3, [A], [0.5])])  # frames 1 and 2 missing: a gap of 2
    assert len(survives) == 1 and survives[0].frame_indices == [0, 3]
    broken = associate([(0, [A], [0.5]), (4, [A], [0.5])])  # frames 1, 2, 3 missing
    assert [t.frame_indices for t in broken] == [[0], [4]]
    # frames with no face count as gaps the same way as frames that were never analysed
    assert len(associate([(0, [A], [0.5]), (1, [], []), (2, [], []), (3, [A], [0.5])])) == 1
    assert len(associate([(0, [A], [0.5]), (1, [], []), (2, [], []), (3, [], []), (4, [A], [0.5])])) == 2
    assert len(associate([(0, [A], [0.5]), (4, [A], [0.5])], max_gap=3)) == 1


def test_iou_threshold_decides_the_link():
    # (0,0,100,100) vs (dx,0,100+dx,100): IoU = (100-dx)/(100+dx); 0.3 at dx = 53.8
    assert iou(A, shifted(A, 53)) > 0.3 > iou(A, shifted(A, 54))
    assert len(associate([(0, [A], [0.1]), (1, [shifted(A, 53)], [0.1])])) == 1
    assert len(associate([(0, [A], [0.1]), (1, [shifted(A, 54)], [0.1])])) == 2


def test_best_overlap_wins_and_each_face_joins_one_track():
    near, far = shifted(A, 10), shifted(A, 40)  # both overlap A enough, `near` more
    tracks = associate([(0, [A], [0.2]), (1, [far, near], [0.7, 0.3])])
    assert len(tracks) == 2
    assert tracks[0].boxes == [A, near] and tracks[0].scores == [0.2, 0.3]
    assert tracks[1].boxes == [far] and tracks[1].frame_indices == [1]
    # two tracks wanting one face: the better-overlapping track gets it, the other is not extended
    tracks = associate([(0, [A, shifted(A, 45)], [0.1, 0.2]), (1, [shifted(A, 5)], [0.3])])
    assert [t.frame_indices for t in tracks] == [[0, 1], [0]]


def test_greedy_is_global_best_first_not_track_order():
    # Track 0's best face is fa (IoU 0.48), but track 1 overlaps fa far better (0.90). Best-first gives fa
    # to track 1 and track 0 takes its second choice fb (0.38); track by track, track 0 would take fa and
    # leave track 1 (which barely touches fb) to end.
    t0, t1 = (0, 0, 100, 100), (40, 0, 140, 100)
    fa, fb = (35, 0, 135, 100), (-45, 0, 55, 100)
    assert iou(t1, fa) > iou(t0, fa) > iou(t0, fb) >= 0.3 > iou(t1, fb)
    tracks = associate([(0, [t0, t1], [0.5, 0.5]), (1, [fb, fa], [0.6, 0.7])])
    assert [(t.frame_indices, t.boxes, t.scores) for t in tracks] == [
        ([0, 1], [t0, fb], [0.5, 0.6]), ([0, 1], [t1, fa], [0.5, 0.7])]


def test_tracker_checks_its_input():
    tracker = FaceTracker()
    tracker.add(2, [A], [0.5])
    with pytest.raises(ValueError, match="time order"):
        tracker.add(2, [A], [0.5])
    with pytest.raises(ValueError, match="one score per box"):
        tracker.add(3, [A, B], [0.5])
    with pytest.raises(ValueError):
        FaceTracker(min_iou=0.0)


# -- video rules ---------------------------------------------------------------------------------------------
FRAMES = [0.10, 0.95, 0.20, 0.40, 0.30]


def test_peak_and_top3_mean():
    assert set(VIDEO_RULES) == {"peak", "top3_mean", "track_median"}
    assert video_score("peak", FRAMES) == pytest.approx(0.95)
    assert video_score("top3_mean", FRAMES) == pytest.approx((0.95 + 0.40 + 0.30) / 3)
    assert video_score("top3_mean", [0.2, 0.8]) == pytest.approx(0.5)  # fewer than 3 frames: all of them
    assert video_score("top3_mean", [0.7]) == pytest.approx(0.7)
    assert top_k_mean([0.1, 0.9, 0.5, 0.7], k=2) == pytest.approx(0.8)
    assert peak_index(FRAMES) == 1 and peak_index([0.3, 0.5, 0.5]) == 1


def test_one_spurious_frame_cannot_decide_top3_mean_alone():
    calm = [0.05] * 10
    spiked = calm[:4] + [0.99] + calm[5:]
    assert video_score("peak", spiked) > 0.9
    assert video_score("top3_mean", spiked) < 0.4


def track(frames, scores, track_id=0):
    return Track(track_id, list(frames), [A] * len(frames), list(scores))


def test_track_median():
    background = [0.20, 0.30, 0.10, 0.25, 0.05]
    steady_fake = track([0, 1, 2, 3], [0.9, 0.1, 0.8, 0.85])  # one bad frame does not sink it: median 0.825
    assert video_score("track_median", FRAMES, [steady_fake], background) == pytest.approx(0.825)
    # a face seen in fewer than 3 frames does not count, however high its score
    glimpse = track([1, 2], [0.99, 0.99], track_id=1)
    expected_background = (0.30 + 0.25 + 0.20) / 3
    assert video_score("track_median", FRAMES, [glimpse], background) == pytest.approx(expected_background)
    # the background wins when it is higher than every face
    real_face = track([0, 1, 2], [0.1, 0.1, 0.1])
    assert video_score("track_median", FRAMES, [real_face], [0.9, 0.9, 0.9, 0.1, 0.1]) == pytest.approx(0.9)
    # the best track counts
    assert video_score("track_median", FRAMES, [real_face, steady_fake], background) == pytest.approx(0.825)


def test_track_median_without_faces_is_top3_mean():
    for scores in (FRAMES, [0.3], [0.1, 0.6]):
        assert video_score("track_median", scores) == pytest.approx(video_score("top3_mean", scores))
        assert video_score("track_median", scores, [], scores) == pytest.approx(video_score("top3_mean", scores))
    # frames with only faces (no background): the background part falls back to the frame scores
    assert video_score("track_median", [0.2, 0.4], [], [None, None]) == pytest.approx(0.3)


def test_track_median_on_a_short_video_counts_a_track_through_every_frame():
    assert video_score("track_median", [0.9, 0.9], [track([0, 1], [0.8, 0.9])], [0.1, 0.1]) == pytest.approx(0.85)


def test_rules_refuse_nonsense():
    with pytest.raises(ValueError, match="unknown video rule"):
        video_score("mean", FRAMES)
    with pytest.raises(ValueError):
        video_score("peak", [])


# -- model card ----------------------------------------------------------------------------------------------
def test_card_carries_the_video_fields_through_json():
    from deepfake_edge.model_card import ModelCard

    card = ModelCard(arch="a", threshold=0.4, image_threshold=0.7)
    assert card.video_rule is None and card.video_threshold is None
    calibrated = card.replace(video_rule="track_median", video_threshold=0.62)
    again = ModelCard.from_json(calibrated.to_json())
    assert again == calibrated and again.video_rule == "track_median" and again.video_threshold == 0.62
    old = {k: v for k, v in card.to_dict().items() if not k.startswith("video_")}  # a card written before
    assert ModelCard.from_dict(old) == card


def test_video_card_picks_rule_and_threshold():
    from deepfake_edge.client.video import video_card
    from deepfake_edge.model_card import ModelCard

    card = ModelCard(arch="a", threshold=0.4, image_threshold=0.7)
    assert video_card(card, "whole")[:2] == ("top3_mean", card.replace(threshold=0.7))
    assert video_card(card, "fast")[:2] == ("top3_mean", card)
    calibrated = card.replace(video_rule="peak", video_threshold=0.8)
    rule, whole, note = video_card(calibrated, "whole")
    assert (rule, whole.threshold, note) == ("peak", 0.8, None)
    assert video_card(calibrated, "fast")[1].threshold == 0.4
    rule, whole, note = video_card(card.replace(video_rule="future_rule", video_threshold=0.9), "whole")
    assert (rule, whole.threshold) == ("top3_mean", 0.7) and "future_rule" in note


def test_a_longer_video_gets_the_threshold_for_its_length():
    from deepfake_edge.client.video import video_card
    from deepfake_edge.model_card import ModelCard, length_threshold

    table = ((8, 0.90), (30, 0.93), (120, 0.96))
    assert length_threshold(0.90, table, None) == length_threshold(0.90, table, 8) == 0.90
    assert length_threshold(0.90, table, 3) == 0.90  # shorter than the clips: never lowered
    assert length_threshold(0.90, table, 30) == pytest.approx(0.93)
    assert length_threshold(0.90, table, 60) == pytest.approx(0.945)  # halfway on log frames
    assert length_threshold(0.90, table, 500) == pytest.approx(0.96)  # past the last entry: the last
    assert length_threshold(0.95, table, 30) == 0.95  # never below the card's own threshold
    assert length_threshold(0.90, None, 120) == length_threshold(0.90, (), 120) == 0.90

    card = ModelCard(arch="a", threshold=0.4, image_threshold=0.7, video_rule="peak", video_threshold=0.90,
                     video_length_thresholds=table)
    again = ModelCard.from_json(card.to_json())  # JSON turns the pairs into lists; the card turns them back
    assert again == card and again.video_threshold_for(60) == pytest.approx(0.945)
    rule, whole, note = video_card(card, "whole", 120)
    assert (rule, whole.threshold) == ("peak", 0.96)
    assert note.startswith("threshold 0.9600 for 120 sampled frames (0.9000 for short clips)")
    assert video_card(card, "whole", 6)[1:] == (card.replace(threshold=0.90), None)
    assert video_card(card, "fast", 120)[1:] == (card, None)  # calibrated on whole-mode scores only


# -- end to end ----------------------------------------------------------------------------------------------
def write_clip(path: Path, frames, fps: int = 10, codec: str = "mpeg4") -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        first = frames[0]
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Three 2 s clips at 10 fps: the first 20 frames of OpenCV's vtest.avi (pedestrians, 768x576), a
    640x480 frame with scikit-image's astronaut photo sliding right 4 px per frame (one face to follow), and
    a copy-moved astronaut sliding the same way (video_samples.copy_moved_clip)."""
    import av
    from video_samples import copy_moved_clip

    from client_samples import photo

    folder = tmp_path_factory.mktemp("video_clips")
    if not VTEST.exists():
        pytest.skip(f"{VTEST} is not installed (opencv-doc)")
    with av.open(str(VTEST)) as container:
        street = [frame.to_ndarray(format="rgb24") for frame, _ in zip(container.decode(video=0), range(20))]
    astronaut = np.asarray(photo("astronaut").resize((360, 360)))
    sliding = []
    for i in range(20):
        canvas = np.full((480, 640, 3), 90, dtype=np.uint8)
        canvas[60:420, 40 + 4 * i:400 + 4 * i] = astronaut
        sliding.append(canvas)
    return {"street": write_clip(folder / "street.mp4", street), "face": write_clip(folder / "face.mp4", sliding),
            "copied": copy_moved_clip(folder)}


def sampled_times(path: Path, limits) -> list[tuple[int, float]]:
    from deepfake_edge.video import VideoReader

    with VideoReader(path, limits) as reader:
        return [(frame.index, frame.time_s) for frame in reader.frames()]


class ScriptedClient:
    """Stands in for DeepfakeClient's public API. Sampled frame k gets ``script[k]``: a probability (a global
    region scoring half of it and a face at (10, 20, 50, 60) of the decoded frame scoring it) or an
    exception (that frame's Failure)."""

    def __init__(self, script, card):
        from types import SimpleNamespace

        self.script, self.info = script, SimpleNamespace(name="scripted", card=card)
        self.sent, self.heatmap_requests = [], []

    def model_info(self):
        return self.info

    def iter_detect(self, sources, concurrency=4, heatmap=False, batch_size=None, mode="whole", copy_move=True):
        from deepfake_edge.client import Detection, Failure, RegionScore

        # Frames run the copy-move check, as photos do: the video rule is calibrated with it.
        assert heatmap is False and copy_move is True
        for k, image in enumerate(sources):  # one at a time: nothing decoded ahead of the answers
            self.sent.append(image)
            outcome = self.script[k]
            if isinstance(outcome, Exception):
                yield Failure(image, outcome)
                continue
            regions = (RegionScore("global", (0, 0, *image.size), outcome / 2),
                       RegionScore("face", (10, 20, 50, 60), outcome))
            yield Detection(image, "?", 0.5, outcome, math.log(outcome / (1 - outcome)), "scripted", "7", mode,
                            regions)

    def detect(self, source, heatmap=False, mode="whole"):
        from deepfake_edge.client import Detection

        self.heatmap_requests.append(source)
        return Detection(source, "?", 0.5, 0.5, 0.0, "scripted", "7", mode,
                         heatmap=np.zeros((4, 4), np.float32), heatmap_box=(0, 0, *source.size))


def test_detect_video_skips_failed_frames_and_scales_boxes(clips):
    from deepfake_edge.client import ServerError
    from deepfake_edge.client.video import detect_video
    from deepfake_edge.model_card import ModelCard
    from deepfake_edge.video import VideoLimits

    card = ModelCard(arch="a", threshold=0.3, image_threshold=0.45)
    client = ScriptedClient([0.2, ServerError("inference failed"), 0.9, 0.4], card)
    limits = VideoLimits(sample_fps=2.0, max_side=384)  # 768x576 decoded at 384x288: boxes scale by 2
    video = detect_video(client, clips["street"], limits, heatmap=True)
    assert [image.size for image in client.sent] == [(384, 288)] * 4
    assert [f.index for f in video.frames] == [0, 2, 3]
    assert any("frame 1 at 0.50 s was not analysed: inference failed" in note for note in video.notes)
    for frame in video.frames:
        assert [(r.kind, r.box) for r in frame.regions] == [("global", (0, 0, 768, 576)), ("face", (20, 40, 100, 120))]
    assert video.peak_index == 2 and video.peak_time_s == video.frames[1].time_s
    assert client.heatmap_requests == [client.sent[2]]  # the peak frame itself went back for its heatmap
    assert video.peak_image is client.sent[2] and video.heatmap_box == (0, 0, 768, 576)
    assert video.fake_probability == pytest.approx((0.2 + 0.9 + 0.4) / 3) and video.rule == "top3_mean"
    assert video.threshold == 0.45 and video.label == "Fake"
    assert len(video.tracks) == 1 and video.tracks[0].frame_indices == (0, 2, 3)
    assert video.tracks[0].fake_probability == pytest.approx(0.4)

    calibrated = card.replace(video_rule="peak", video_threshold=0.95)
    video = detect_video(ScriptedClient([0.2, 0.9, 0.4, 0.3], calibrated), clips["street"], limits)
    assert (video.rule, video.threshold, video.label) == ("peak", 0.95, "Real")
    longer = calibrated.replace(video_threshold=0.85, video_length_thresholds=((2, 0.85), (4, 0.92)))
    video = detect_video(ScriptedClient([0.2, 0.9, 0.4, 0.3], longer), clips["street"], limits)
    assert (video.threshold, video.label) == (0.92, "Real")  # 0.9 would be Fake for 2 frames, not for 4
    assert any(note.startswith("threshold 0.9200 for 4 sampled frames") for note in video.notes)
    assert video.fake_probability == pytest.approx(0.9) and video.logit == pytest.approx(math.log(9))
    assert video.peak_image is None and video.heatmap is None

    median = detect_video(ScriptedClient([0.2, 0.9, 0.4, 0.3], card.replace(video_rule="track_median")),
                          clips["street"], limits)
    assert median.fake_probability == pytest.approx(0.35)  # the face's median beats the global views' top 3


def test_detect_video_raises_when_no_frame_is_answered(clips):
    from deepfake_edge.client import ServerError, ServerUnreachableError
    from deepfake_edge.client.video import detect_video
    from deepfake_edge.model_card import ModelCard
    from deepfake_edge.video import VideoLimits

    card = ModelCard(arch="a")
    with pytest.raises(ServerError, match="first"):
        detect_video(ScriptedClient([ServerError("first"), ServerError("second")] * 2, card), clips["street"])
    # an unreachable server ends the analysis at once: nothing more is decoded or sent
    client = ScriptedClient([0.5, ServerUnreachableError("127.0.0.1:1"), 0.5, 0.5], card)
    with pytest.raises(ServerUnreachableError):
        detect_video(client, clips["street"], VideoLimits(sample_fps=2.0))
    assert len(client.sent) == 2


def _rule_score(rule: str, detection) -> float:
    """The served rule written out by hand from a video's frames and face tracks."""
    def top3_mean(values: list[float]) -> float:
        top3 = sorted(values, reverse=True)[:3]
        return sum(top3) / len(top3)

    scores = [f.fake_probability for f in detection.frames]
    if rule == "peak":
        return max(scores)
    if rule == "top3_mean":
        return top3_mean(scores)
    background = [max([r.fake_probability for r in f.regions if r.kind != "face"] or [f.fake_probability])
                  for f in detection.frames]  # fast mode's frames have no regions
    long_tracks = [t.fake_probability for t in detection.tracks if len(t.frame_indices) >= min(3, len(scores))]
    return max([top3_mean(background), *long_tracks])


@pytest.mark.server
def test_detect_video_end_to_end(triton_server, clips):
    from deepfake_edge.client import DeepfakeClient
    from deepfake_edge.client.video import detect_video, video_card, video_record
    from deepfake_edge.video import VideoLimits

    limits = VideoLimits(sample_fps=2.0)
    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        served = client.model_info().card
        rule = video_card(served, "whole")[0]  # the served card's calibrated rule
        video = detect_video(client, clips["street"], limits, heatmap=True, mode="whole", concurrency=2)
        face = detect_video(client, str(clips["face"]), limits, mode="whole")
        single = client.detect(video.peak_image, mode="whole")

    # the timeline is the reader's sampling: 2 fps over 2 s, times on the 0.5 s grid (one frame period)
    expected = sampled_times(clips["street"], limits)
    assert [(f.index, f.time_s) for f in video.frames] == expected
    assert len(video.frames) == 4 and [f.index for f in video.frames] == [0, 1, 2, 3]
    for k, frame in enumerate(video.frames):
        assert abs(frame.time_s - 0.5 * k) < 0.1 + 1e-6
    assert (video.video.width, video.video.height) == (768, 576) and video.video.rotation == 0
    assert video.video.duration_s == pytest.approx(2.0, abs=0.2)

    for detection in (video, face):
        width, height = detection.video.width, detection.video.height
        for frame in detection.frames:
            assert frame.regions and 0.0 <= frame.fake_probability <= 1.0
            assert {r.kind for r in frame.regions} >= {"tile", "global"}
            assert frame.fake_probability == max(r.fake_probability for r in frame.regions)
            for region in frame.regions:
                x0, y0, x1, y1 = region.box
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        # the peak is the highest frame; the verdict the rule's score under the card's threshold for its length
        card = video_card(served, "whole", len(detection.frames))[1]
        scores = [f.fake_probability for f in detection.frames]
        assert detection.peak.fake_probability == max(scores)
        assert detection.peak_time_s == detection.peak.time_s
        assert detection.rule == rule and detection.threshold == card.threshold
        assert detection.fake_probability == pytest.approx(_rule_score(rule, detection))
        assert detection.label == card.label_for(detection.fake_probability)
        assert detection.confidence == pytest.approx(card.confidence_for(detection.fake_probability))
        assert 1 / (1 + math.exp(-detection.logit)) == pytest.approx(detection.fake_probability, abs=1e-6)
        assert set(detection.timings_s) >= {"open", "decode", "inference_wait", "total"}
        assert all(seconds >= 0 for seconds in detection.timings_s.values())

    # a frame is analysed exactly like the same picture sent as a photo
    assert single.fake_probability == pytest.approx(video.peak.fake_probability, abs=1e-5)
    # heatmap of the peak frame, over the whole frame in whole mode (video pixels)
    assert video.heatmap is not None and video.heatmap.ndim == 2 and video.heatmap.dtype == np.float32
    assert video.heatmap_box == (0, 0, 768, 576) and video.peak_image.size == (768, 576)
    assert video.peak_overlay().size == video.peak_image.size
    assert face.heatmap is None and face.peak_image is None

    # the astronaut's face is found in every sampled frame and followed as one track moving right
    assert len(face.frames) == 4
    assert len(face.tracks) >= 1
    main = max(face.tracks, key=lambda t: len(t.frame_indices))
    assert main.frame_indices == (0, 1, 2, 3)
    lefts = [box[0] for box in main.boxes]
    assert lefts == sorted(lefts) and 10 <= lefts[-1] - lefts[0] <= 80  # 3 samples x 5 frames x 4 px = 60
    by_index = {frame.index: frame for frame in face.frames}
    face_scores = [next(r.fake_probability for r in by_index[i].regions if r.kind == "face" and r.box == box)
                   for i, box in zip(main.frame_indices, main.boxes)]
    assert main.fake_probability == pytest.approx(float(np.median(face_scores)))

    record = json.loads(json.dumps(video_record(video)))
    assert record["kind"] == "video" and record["label"] == video.label and record["rule"] == rule
    assert record["peak"] == {"index": video.peak_index, "time_s": round(video.peak_time_s, 3),
                              "fake_probability": round(video.peak.fake_probability, 6)}
    assert [row["time_s"] for row in record["timeline"]] == [round(f.time_s, 3) for f in video.frames]
    assert record["timeline"][0]["regions"][0].keys() == {"kind", "box", "fake_probability"}
    assert record["video"].keys() == {"width", "height", "duration_s", "fps", "rotation", "codec"}
    assert record["video"]["width"] == 768 and isinstance(record["notes"], list)
    assert json.loads(json.dumps(video_record(face)))["tracks"][0].keys() == {
        "track_id", "frame_indices", "boxes", "fake_probability"}


@pytest.mark.server
def test_a_copy_move_in_a_video_is_found_in_its_frames_as_in_a_photo(triton_server, clips):
    """Every sampled frame of a clip whose copied patch moves with the scene is matched with itself: its two
    areas come back as copy_move regions, boxed in video pixels where the patch and its copy are, and they
    count in the frame's score, which equals the score of the same frame sent as a photo and the score
    video calibration (training/video_eval.py) gives the frame."""
    from video_samples import COPY_CLIP_MARGIN, COPY_CLIP_STEP

    from client_samples import COPIED_FROM, COPIED_TO

    from deepfake_edge.client import DeepfakeClient
    from deepfake_edge.client.video import detect_video
    from deepfake_edge.export.commands import DEMO_CHECKPOINTS
    from deepfake_edge.training.video_eval import _score_frames
    from deepfake_edge.training.whole_image import served_session
    from deepfake_edge.video import VideoLimits, VideoReader

    limits = VideoLimits(sample_fps=2.0)
    with DeepfakeClient(triton_server.grpc_url, model=MODEL) as client:
        calibration = client.model_info().card.copy_move_calibration
        assert calibration is not None
        video = detect_video(client, clips["copied"], limits, mode="whole")
        with VideoReader(clips["copied"], limits) as reader:
            first = next(reader.frames()).image
        single = client.detect(first, mode="whole")
    side = COPIED_FROM[2] - COPIED_FROM[0]
    assert len(video.frames) == 4
    for frame in video.frames:
        copies = [r for r in frame.regions if r.kind == "copy_move"]
        assert len(copies) == 2, frame
        assert frame.fake_probability == max(r.fake_probability for r in frame.regions)
        assert frame.fake_probability >= copies[0].fake_probability == copies[1].fake_probability
        left, top = COPY_CLIP_MARGIN + COPY_CLIP_STEP * round(frame.time_s * 10), COPY_CLIP_MARGIN  # the photo's
        patches = [(COPIED_FROM[0] + left, COPIED_FROM[1] + top), (COPIED_TO[0] + left, COPIED_TO[1] + top)]
        for x, y in patches:  # each patch's centre lies in one of the two areas
            centre = (x + side / 2, y + side / 2)
            assert any(b[0] <= centre[0] <= b[2] and b[1] <= centre[1] <= b[3] for b in (r.box for r in copies))
    assert single.fake_probability == pytest.approx(video.frames[0].fake_probability, abs=1e-5)
    with served_session(Path(__file__).resolve().parent.parent / DEMO_CHECKPOINTS[0]) as (session, preprocessor):
        calibrated, _ = _score_frames(session, preprocessor, clips["copied"], limits, calibration)
    assert [f.score for f in calibrated] == pytest.approx([f.fake_probability for f in video.frames], abs=1e-4)
    assert [f.background for f in calibrated] == pytest.approx(
        [f.background_probability for f in video.frames], abs=1e-4)


@pytest.mark.server
def test_detect_video_fast_mode_and_a_bad_video(triton_server, clips, tmp_path):
    from deepfake_edge.client import BadImageError, DeepfakeClient
    from deepfake_edge.client.video import detect_video, video_card
    from deepfake_edge.video import BadVideoError, VideoLimits

    notes = tmp_path / "notes.mp4"
    notes.write_text("meeting notes, not a video\n")
    with DeepfakeClient(triton_server.http_url, protocol="http", model=MODEL) as client:
        rule, card, _ = video_card(client.model_info().card, "fast")
        fast = detect_video(client, clips["street"].read_bytes(), VideoLimits(sample_fps=4.0, max_frames=3),
                            mode="fast", concurrency=1)
        with pytest.raises(BadVideoError) as caught:
            detect_video(client, notes)
    assert isinstance(caught.value, BadImageError)
    # max_frames caps the frames analysed; fast mode scores one view per frame, no regions, no faces
    assert len(fast.frames) == 3 and fast.tracks == () and fast.notes  # the note says the rate was lowered
    assert all(frame.regions == () for frame in fast.frames)
    assert fast.threshold == card.threshold and fast.label == card.label_for(fast.fake_probability)
    assert fast.rule == rule and fast.fake_probability == pytest.approx(_rule_score(rule, fast))
