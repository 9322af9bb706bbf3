"""Video thresholds that grow with length (training/video_length.py), on made-up clips: pure, no server."""

from __future__ import annotations

import numpy as np
import pytest

from deepfake_edge.training.video_length import length_thresholds


def unedited_videos(count: int, frames: int, seed: int) -> np.ndarray:
    """Frame scores of unedited videos whose frames are independent: logits normal, mean 0, sd 1."""
    logits = np.random.default_rng(seed).normal(0.0, 1.0, size=(count, frames))
    return 1.0 / (1.0 + np.exp(-logits))


@pytest.mark.parametrize("seed", range(4))
def test_thresholds_rise_with_length_and_bound_the_false_alarms(seed: int):
    # 40 validation clips of 8 frames under "peak"; their own 5 % threshold lets 2 of them reach it.
    clips = unedited_videos(40, 8, seed=seed).max(axis=1)
    threshold = float(np.sort(clips)[-2])
    table = length_thresholds(clips, [8] * 40, threshold, max_false_alarm=0.05)
    assert [n for n, _ in table] == [8, 15, 30, 60, 120] and table[0] == (8, threshold)
    values = [t for _, t in table]
    assert values == sorted(values) and values[-1] > threshold
    # Fresh unedited videos of each length (4,000: the binomial's sd is 0.35 points at 5 %): at most 5 %
    # reach their length's threshold; the Gumbel tail errs high on normal frames (0.3-2.6 % measured).
    fresh = unedited_videos(4000, 120, seed=100 + seed)
    for frames, cut in table[1:]:
        assert np.mean(fresh[:, :frames].max(axis=1) >= cut) <= 0.05, (frames, cut)
    # Without the table, the short clips' threshold lets a fifth or more of the 120-frame videos through.
    assert np.mean(fresh.max(axis=1) >= threshold) > 0.2


def test_the_cards_own_threshold_stays_the_floor():
    clips = unedited_videos(30, 8, seed=2).max(axis=1)
    table = length_thresholds(clips, [6, 8, 10] * 10, 0.999, max_false_alarm=0.05)
    assert table[0] == (8, 0.999) and all(t == 0.999 for _, t in table)


def test_length_thresholds_refuse_what_they_cannot_fit():
    with pytest.raises(ValueError, match="two or more unedited clips"):
        length_thresholds([0.5], [8], 0.5, 0.05)
    with pytest.raises(ValueError, match="two or more unedited clips"):
        length_thresholds([0.5, 0.6], [8], 0.5, 0.05)
    with pytest.raises(ValueError, match="max_false_alarm"):
        length_thresholds([0.5, 0.6], [8, 8], 0.5, 0.0)
