"""Learning-rate schedules and the log-spaced recording steps."""

from __future__ import annotations

import math

import numpy as np


def lr_at(step: int, base: float, total: int, schedule: str, warmup: int) -> float:
    """Learning rate of update `step` (0-based) out of `total`."""
    warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    frac = step / max(total, 1)
    if schedule == "constant":
        decay = 1.0
    elif schedule == "cosine":
        decay = 0.5 * (1 + math.cos(math.pi * frac))
    elif schedule == "linear":
        decay = 1.0 - frac
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return base * warm * decay


def record_steps(total: int, n_records: int) -> list[int]:
    """0, then ~n_records log-spaced steps in [1, total], always ending with `total`."""
    steps = np.unique(np.round(np.logspace(0, np.log10(max(total, 1)), n_records)).astype(int))
    return sorted({0, total, *[int(s) for s in steps if s <= total]})
