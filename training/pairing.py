"""Real/fake pairs: batch a fake with the real image it was made from, under the same augmentation.

Self-blended data (``deepfake-edge data synth``) stores a fake and its real twin under the same file name
(``split/Real/000123.jpg`` and ``split/Fake/000123.jpg``). Training on both in one batch with identical
crops, flips, jitter, blur and JPEG (as the SBI authors do) leaves the blend as the only difference the
loss can use, which is what makes the detector learn blending artefacts instead of photo content.
Datasets without such pairs simply get a seeded shuffle.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator, Sequence

import torch


def pair_groups(samples: Sequence) -> list[list[int]]:
    """Indices grouped into real/fake pairs (same folder above the class folder, same file name); others alone."""
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for index, sample in enumerate(samples):
        by_key[(sample.path.parent.parent, sample.path.name)].append(index)
    groups: list[list[int]] = []
    for indices in by_key.values():
        if sorted(samples[i].label for i in indices) == [0, 1]:
            groups.append(sorted(indices, key=lambda i: samples[i].label))
        else:
            groups.extend([i] for i in indices)
    return sorted(groups)


def group_keys(groups: list[list[int]], size: int) -> list[int]:
    """For every sample index, the id of its group (members share an augmentation seed)."""
    keys = [0] * size
    for group_id, group in enumerate(groups):
        for index in group:
            keys[index] = group_id
    return keys


class GroupBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Shuffle whole groups, lay them end to end and cut into batches (an even batch size never splits a pair)."""

    def __init__(self, groups: list[list[int]], batch_size: int, generator: torch.Generator, drop_last: bool) -> None:
        self.groups = groups
        self.batch_size = batch_size
        self.generator = generator
        self.drop_last = drop_last
        self.size = sum(len(group) for group in groups)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.groups), generator=self.generator).tolist()
        items = [index for g in order for index in self.groups[g]]
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield items[start:start + self.batch_size]

    def __len__(self) -> int:
        return self.size // self.batch_size if self.drop_last else math.ceil(self.size / self.batch_size)
