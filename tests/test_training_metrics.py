"""Metrics against values worked out by hand on tiny arrays."""

from __future__ import annotations

import math

import pytest

from deepfake_edge.training.metrics import calibrate_threshold, compute_metrics, equal_error_rate

# Two real (0.1, 0.6) and two fake (0.4, 0.9) scores: one real scores above one fake.
LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.6, 0.4, 0.9]


def test_metrics_at_threshold_match_hand_computed_values():
    m = compute_metrics(LABELS, SCORES, threshold=0.5)
    # At 0.5: 0.1 -> Real (TN), 0.6 -> Fake (FP), 0.4 -> Real (FN), 0.9 -> Fake (TP).
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)
    assert m["fpr"] == pytest.approx(0.5)
    # 3 of the 4 (fake, real) pairs are ordered correctly.
    assert m["roc_auc"] == pytest.approx(0.75)
    # Ranked: 0.9 fake (precision 1 at recall 1/2), 0.6 real, 0.4 fake (precision 2/3 at recall 1).
    assert m["average_precision"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)


def test_threshold_rule_is_inclusive():
    m = compute_metrics([0, 1], [0.3, 0.7], threshold=0.7)  # score == threshold counts as Fake
    assert m["confusion_matrix"] == [[1, 0], [0, 1]]


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        (LABELS, SCORES, 0.5),  # ROC passes through FPR = FNR = 1/2 at threshold 0.6
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.0),  # separable
        ([0, 1], [0.9, 0.1], 1.0),  # perfectly inverted
        # FNR stays 1/2 while FPR goes 0 -> 1 (threshold 0.8 -> 0.7): they cross at 1/2, between ROC points.
        ([0, 1, 1], [0.7, 0.6, 0.8], 0.5),
        # FPR stays 1/3 while FNR drops 1/2 -> 0 (threshold 0.7 -> 0.6): they cross at 1/3.
        ([0, 0, 0, 1, 1], [0.1, 0.5, 0.7, 0.6, 0.9], 1 / 3),
    ],
)
def test_equal_error_rate(labels, scores, expected):
    assert equal_error_rate(labels, scores) == pytest.approx(expected)


def test_threshold_is_calibrated_in_the_gap_between_classes():
    assert calibrate_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.5)
    # Youden's J ties at 1/2 for cuts 0.9 (TPR 1/2, FPR 0) and 0.4 (TPR 1, FPR 1/2): the first (stricter) wins,
    # and the threshold sits halfway to the next score, 0.6.
    threshold = calibrate_threshold(LABELS, SCORES)
    assert threshold == pytest.approx(0.75)
    assert compute_metrics(LABELS, SCORES, threshold)["fpr"] == 0.0


def test_single_class_gives_nan_for_ranking_metrics_and_a_neutral_threshold():
    m = compute_metrics([1, 1, 1], [0.2, 0.6, 0.9], threshold=0.5)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["eer"]) and math.isnan(m["fpr"])
    assert m["recall"] == pytest.approx(2 / 3)
    assert calibrate_threshold([1, 1], [0.2, 0.9]) == 0.5


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="labels but"):
        compute_metrics([0, 1], [0.5], 0.5)
    with pytest.raises(ValueError, match="0 \\(Real\\) or 1"):
        compute_metrics([0, 2], [0.5, 0.5], 0.5)
