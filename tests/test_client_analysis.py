"""The protocol-independent part of the clients (client/analysis.py): how rows become requests."""

from __future__ import annotations

import pytest

from deepfake_edge.client.analysis import MIN_ROWS_TO_SPLIT, request_slices
from deepfake_edge.client.triton_io import ModelInfo
from deepfake_edge.model_card import ModelCard


def info(instances: int, max_batch_size: int = 32) -> ModelInfo:
    return ModelInfo("m", ModelCard(arch="efficientnet_b0"), max_batch_size, (3, 224, 224), instances)


@pytest.mark.parametrize("rows, instances, max_batch, sizes", [
    (1, 2, 32, [1]),                       # a fast-mode image: one request
    (MIN_ROWS_TO_SPLIT - 1, 2, 32, [7]),   # too few rows to be worth two requests
    (26, 1, 32, [26]),                     # one instance (a GPU): one request of batch 26
    (26, 2, 32, [13, 13]),                 # two single-threaded CPU instances: both cores at once
    (25, 2, 32, [13, 12]),
    (70, 1, 32, [32, 32, 6]),              # beyond the batch limit: parts the batcher can merge
    (70, 2, 32, [32, 32, 6]),
    (40, 8, 32, [10, 10, 10, 10]),         # at most four parts
])
def test_rows_are_split_over_instances_within_the_batch_limit(rows, instances, max_batch, sizes):
    slices = request_slices(rows, info(instances, max_batch))
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == rows
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:])), "contiguous, in order"
