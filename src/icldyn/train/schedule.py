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


def step_lr(train_config, step: int) -> float:
    """The learning rate of update `step` (0-based) under `train_config`: its schedule, warm-up and
    stages (each stage runs the schedule over its own steps with its own lr). The one rule the
    Trainer applies and every clock below is built from."""
    tc = train_config
    start = 0
    for st in tc.stages or []:
        if step < start + st.steps:
            return lr_at(step - start, st.lr or tc.lr, st.steps, tc.schedule, tc.warmup_steps)
        start += st.steps
    return lr_at(step, tc.lr, tc.steps, tc.schedule, tc.warmup_steps)


def learning_rates(train_config) -> np.ndarray:
    """The learning rate of every update (steps,), as the Trainer applies it."""
    return np.array([step_lr(train_config, k) for k in range(train_config.steps)], dtype=float)


def clock(train_config) -> np.ndarray:
    """The gradient-flow time before each update and at the end (steps + 1,): time[k] = Σ_{j<k} lr_j,
    the `time` column of metrics.parquet (for a `train.lrs` ensemble, member i's time is this × lrs[i]/lr)."""
    return np.concatenate([[0.0], np.cumsum(learning_rates(train_config))])


def time_at(train_config, steps) -> np.ndarray:
    """`time` at the given steps (after that many updates)."""
    return clock(train_config)[np.asarray(steps, dtype=int)]


def record_steps_in_time(train_config, n_records: int, t_min: float | None = None) -> list[int]:
    """Like `record_steps`, but log-spaced on the gradient-flow clock (time = Σ lr) from t_min
    (default: the first update's lr) to the end: for schedules whose lr changes by large factors
    (piecewise-constant stages), where log-spaced steps would leave gaps of whole decades of time."""
    times = clock(train_config)  # time before update k
    total = len(times) - 1
    if total == 0:
        return record_steps(total, n_records)
    start = t_min if t_min is not None else times[1]
    if not 0 < start < times[-1]:
        return record_steps(total, n_records)
    grid = np.geomspace(start, times[-1], n_records)
    steps = np.searchsorted(times, grid).clip(1, total)
    return sorted({0, total, *[int(s) for s in steps]})
