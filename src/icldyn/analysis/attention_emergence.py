"""Post-hoc analysis of attention-emergence runs (spec `grokking-spectral.md`, Part B, "Sudden ICL
emergence"), from the stored metrics and theory rows only.

Per seed, on the held-out cross-entropy `loss/test` against the step:
    baseline   the context-free predictor's loss: the in-context unigram (`baseline/unigram`)
    gain       (baseline − final loss) / baseline; emergence when gain ≥ `GAIN` (0.2)
    plateau    the loss the emergence drop leaves: the (smoothed) start value of the last drop
               `analysis.phases.detect_drops` finds on the loss against t = step (the drop from the
               unigram-level plateau, not the first fall from ln S at initialisation)
    window     from the last record within `NEAR` (5%) of the plateau's loss before the window's
               end, to the first record within 5% of the final loss (NaN, NaN without emergence)
    dip        of a curve m (the marginalised effective rank, k = 1, of a layer's QK): the window's
               minimum over min(m at the window's start, m at the end of training); < 1 is a dip
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis.phases import detect_drops
from icldyn.analysis.runs import metric_curve, theory_constant

GAIN, NEAR, SETTLED = 0.2, 0.05, 0.1
LOSS = "loss/test"
QK_RANK = "probe/merank1/blocks.{i}.attn.qk.0"
DIST = "probe/subspace_dist/left/k2/blocks.{i}.attn.{kind}.0"


def by_layers(run) -> dict[int, object]:
    """{number of layers: run} of a sweep directory (its variants) or of a single run."""
    subs = run.variants.values() if run.variants else [run]
    return {int(r.config.model.n_layers): r for r in subs}


def curve(run, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric and seed, in step order."""
    return metric_curve(run, name, seed, axis="step")


def baseline(run) -> float:
    return theory_constant(run, "baseline/unigram")


def gain(run, seed: int) -> float:
    """(baseline − final held-out loss) / baseline."""
    _, loss = curve(run, LOSS, seed)
    b = baseline(run)
    return float((b - loss[-1]) / b) if len(loss) else float("nan")


def plateau_loss(steps: np.ndarray, loss: np.ndarray) -> float:
    """The loss the emergence drop leaves: the smoothed start value of the last drop
    `phases.detect_drops` finds (t = step > 0, default thresholds); NaN without a drop.
    steps (T,), loss (T,) in step order."""
    pos = steps > 0
    drops = detect_drops(steps[pos], loss[pos])
    return drops[-1].y_start if drops else float("nan")


def window(steps: np.ndarray, loss: np.ndarray, emerged: bool = True) -> tuple[float, float]:
    """(start, end) steps of the emergence window (module doc); (NaN, NaN) when not `emerged` or
    without a drop. steps (T,), loss (T,) in step order."""
    plat = plateau_loss(steps, loss) if emerged and len(loss) >= 3 else float("nan")
    if not np.isfinite(plat):
        return float("nan"), float("nan")
    final = float(loss[-1])
    end_i = int(np.argmax(np.abs(loss - final) <= NEAR * final))
    near = np.flatnonzero((np.abs(loss[:end_i + 1] - plat) <= NEAR * plat) & (steps[:end_i + 1] > 0))
    start_i = int(near[-1]) if len(near) else 0
    return float(steps[start_i]), float(steps[end_i])


def seed_window(run, seed: int) -> tuple[float, float]:
    steps, loss = curve(run, LOSS, seed)
    return window(steps, loss, gain(run, seed) >= GAIN)


def dip_ratio(steps: np.ndarray, m: np.ndarray, start: float, end: float) -> float:
    """min of m over [start, end] / min(m(start), m(last record)); 1 (no dip) without a window."""
    if not (np.isfinite(start) and np.isfinite(end)):
        return 1.0
    inside = (steps >= start) & (steps <= end)
    ref = min(float(m[steps == start][0]), float(m[-1]))
    return float(m[inside].min() / ref) if ref > 0 else float("nan")


def qk_dips(run, seed: int) -> list[float]:
    """dip_ratio of every layer's QK marginalised effective rank (k = 1) in the seed's window."""
    start, end = seed_window(run, seed)
    return [dip_ratio(*curve(run, QK_RANK.format(i=i), seed), start, end)
            for i in range(int(run.config.model.n_layers))]


def distance_at_window_end(run, seed: int) -> float:
    """The largest top-2 subspace distance to the final matrix, over every layer's QK and OV
    product (left singular vectors), at the window's end; 1 (unsettled) without a window."""
    _, end = seed_window(run, seed)
    if not np.isfinite(end):
        return 1.0
    vals = []
    for i in range(int(run.config.model.n_layers)):
        for kind in ("qk", "ov"):
            s, d = curve(run, DIST.format(i=i, kind=kind), seed)
            vals.append(float(d[s == end][0]) if (s == end).any() else float("nan"))
    return float(max(vals)) if vals else float("nan")
