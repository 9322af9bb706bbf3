"""Video thresholds that grow with a video's length.

The video threshold is set on the 3-5 s validation clips of ``data videos`` (6-10 sampled frames). An unedited
video of 120 sampled frames gives a frame 12-20 times as many chances to score high, so under a rule led by
its highest frames its false alarms grow with its length. A threshold for it cannot be read off the
validation clips directly: at 5 % false alarms over 15 clips' worth of frames, each clip may reach it with
probability 1 - 0.95^(1/15) = 0.34 %, far in the tail of 24 clips. So the tail is modelled, as extreme-value
theory models the highest of many draws:

* the unedited clips' video scores, as logits, follow a Gumbel distribution (location ``mu`` and scale
  ``beta`` fitted by their mean and standard deviation);
* a video of ``n`` sampled frames is ``k = n / m`` independent clips of the clips' median length ``m``,
  called Fake when any of them is. The highest of ``k`` Gumbel draws is Gumbel again, at ``mu + beta ln k``,
  so the threshold that all ``k`` stay below with probability ``1 - a`` is
  ``mu + beta (ln k - ln(-ln(1 - a)))``, in logits: it grows with the log of the length.

Frames of one long scene are more alike than separate clips, and where frame logits have tails like a
normal's, the highest of a few of them has a lighter tail than a Gumbel, so both assumptions err high (fewer false alarms than asked for, fewer edits
caught): on independent normal frame logits, clips of 8 frames and the fit on 40 of them, 0.3-2.6 % of
fresh unedited videos of 15-120 frames reach their thresholds, against 22-48 % under the short clips'
threshold (tests/test_video_length.py). The client applies the thresholds by
``ModelCard.video_threshold_for`` (deepfake_edge/model_card.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from deepfake_edge.training.metrics import logit

# Sampled frames: 7.5 to 60 s at the default 2 frames a second; 120 is VideoReader's cap on frames per video.
LENGTHS = (15, 30, 60, 120)


def length_thresholds(scores: Sequence[float], frames: Sequence[int], threshold: float, max_false_alarm: float,
                      lengths: Sequence[int] = LENGTHS) -> tuple[tuple[int, float], ...]:
    """The card's ``video_length_thresholds`` from the unedited validation clips' video ``scores`` (under the
    card's rule), their sampled ``frames`` and the card's ``threshold`` set on them.

    The first entry is (the clips' median frame count ``m``, ``threshold``); then, for each of ``lengths``
    above ``m``, the Gumbel threshold of the module docstring for ``k = n / m`` clips, never below the entry
    before it: a longer video never gets a lower threshold.
    """
    if len(scores) < 2 or len(scores) != len(frames):
        raise ValueError(f"length thresholds need two or more unedited clips with their frame counts, "
                         f"got {len(scores)} scores and {len(frames)} counts")
    if not 0.0 < max_false_alarm < 1.0:
        raise ValueError(f"max_false_alarm must be in (0, 1), got {max_false_alarm}")
    logits = logit(scores)
    beta = float(logits.std(ddof=1)) * math.sqrt(6.0) / math.pi  # a Gumbel's sd is beta * pi / sqrt(6)
    mu = float(logits.mean()) - np.euler_gamma * beta  # and its mean mu + gamma * beta
    median = int(np.median(frames))
    table = [(median, float(threshold))]
    for n in sorted(n for n in lengths if n > median):
        cut = mu + beta * (math.log(n / median) - math.log(-math.log(1.0 - max_false_alarm)))
        table.append((n, max(table[-1][1], 1.0 / (1.0 + math.exp(-cut)))))
    return tuple(table)
