"""What one training epoch recorded, put together: loss sums, correct predictions, the first step at
which each loss became NaN/inf; and the exception that stops an epoch there. Shared by the
sequential loop (alviz.train) and the component threads (alviz.concurrent); nothing here trains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NAN_CHECK_EVERY = 50  # steps between the on_nan checks (and between stacks of the recorded losses)


@dataclass
class EpochStats:
    """What one epoch of `train_epoch` recorded: sample-weighted loss sums, correct predictions,
    samples seen, and for every loss that became NaN/inf the first (0-based) step where it did."""

    keys: list[str]
    sums: list[float]
    correct: int
    n: int
    first_bad: dict[str, int]


class NonFiniteLoss(Exception):
    """Raised by `train_epoch` (with `on_nan='stop'`) at the first check that sees a NaN/inf loss."""

    def __init__(self, stats: EpochStats):
        super().__init__(f"non-finite loss(es): {stats.first_bad}")
        self.stats = stats


def epoch_stats(keys, blocks, batch_sizes, correct) -> EpochStats:
    """Sums and first non-finite steps from the recorded (steps, K) blocks, on the host, in the order
    of a per-step running float64 sum (`sum += float64(loss) * batch_size`)."""
    sums = [0.0] * len(keys)
    first_bad: dict[str, int] = {}
    rows = torch.cat(blocks).double().tolist() if blocks else []
    for step, (row, nb) in enumerate(zip(rows, batch_sizes)):
        for j, v in enumerate(row):
            sums[j] += v * nb
            if not math.isfinite(v) and keys[j] not in first_bad:
                first_bad[keys[j]] = step
    return EpochStats(list(keys), sums, correct, sum(batch_sizes[:len(rows)]), first_bad)


__all__ = ["EpochStats", "NonFiniteLoss", "epoch_stats", "NAN_CHECK_EVERY"]
