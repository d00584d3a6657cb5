"""Phases of a recorded curve: plateaus, sharp drops (and rises), and threshold crossings.

Curves are recorded at log-spaced steps, so everything is done against x = ln t: a plateau at
t ~ 10 and a drop at t ~ 10⁵ look alike. Values are read as f = ln(y − floor) when `log_y`
(default: whenever y − floor > 0 throughout, e.g. a loss), else as f = (y − floor)/max|y − floor|
(so thresholds are fractions of the curve's scale).

The local slope s_i = df/dx is the slope of a least-squares line through the `window` samples
centred on i (shrunk at the ends); that one fit both smooths the noise and differentiates,
and it copes with uneven spacing. s' is the same over 2·window + 1 samples: less noisy, used
where a longer stretch is judged (the fading tails of a drop, flatness).
Thresholds, in units of f per e-fold of t:
- a drop is a contiguous run where −s > `slope_threshold` (default 0.3: in log-log units the
  curve falls faster than t^−0.3 locally), widened on both sides while −s' > threshold/3 so that
  start and end sit where the drop has begun / finished rather than where it is already
  steep, merged with a neighbouring run less than `window` samples away, and kept when its
  depth — the fraction of the (smoothed) start value lost by the end, 1 − y_end/y_start — is at
  least `min_depth` (default 0.05). The tails beyond the widening threshold are not counted, so
  for a logistic step in ln t the depth falls short of the full step by a few % (≲ 0.06 with
  2% noise; tests/test_phases.py). A rise is the same with the signs flipped; its depth is the
  fraction of the end value gained, 1 − y_start/y_end.
- a plateau is a run where |s'| ≤ `slope_threshold` (default 0.1) lasting ≥ `min_decades` of t
  (default 0.5). Noise splits such runs; two neighbouring runs are merged when the smoothed
  curve changes across the gap by no more than the threshold slope allows (flat on average),
  or when the gap is ≤ `window` samples and holds no drop or rise.
Samples with t ≤ 0 (a step-0 row) or non-finite values are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Drop:
    """A sharp fall (or rise): t at its start and end, the fraction lost (gained), and the t where
    the smoothed curve passes halfway between its start and end values (in ln t)."""

    start: float
    end: float
    depth: float
    midpoint: float
    y_start: float
    y_end: float


@dataclass(frozen=True)
class Plateau:
    start: float
    end: float
    value: float  # median of the raw values on the plateau

    @property
    def decades(self) -> float:
        return float(np.log10(self.end / self.start))


# -- shared preparation ---------------------------------------------------------------------------
def _as_curve(t, y) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if t.shape != y.shape:
        raise ValueError(f"t and y must have the same length, got {t.size} and {y.size}")
    keep = (t > 0) & np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if np.any(np.diff(t) <= 0):
        raise ValueError("t must be strictly increasing")
    return t, y


def _local_fit(x: np.ndarray, f: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred moving least-squares line: (fitted value at x_i, slope) (T,), via cumulative sums."""
    T, h = x.size, max(int(window), 1) // 2
    i = np.arange(T)
    lo, hi = np.clip(i - h, 0, T), np.clip(i + h + 1, 0, T)
    x0 = x - x.mean()  # centred for a well-conditioned normal equation

    def wsum(a):
        c = np.concatenate([[0.0], np.cumsum(a)])
        return c[hi] - c[lo]

    n, sx, sf, sxx, sxf = wsum(np.ones(T)), wsum(x0), wsum(f), wsum(x0 * x0), wsum(x0 * f)
    den = n * sxx - sx * sx
    slope = np.where(den > 0, (n * sxf - sx * sf) / np.where(den > 0, den, 1), 0.0)
    fit = sf / n + slope * (x0 - sx / n)
    return fit, slope


class _Prepared:
    def __init__(self, t, y, log_y, floor, window):
        self.t, self.y = _as_curve(t, y)
        if self.t.size < 3:
            raise ValueError("a phase detection needs at least 3 samples with t > 0")
        z = self.y - floor
        self.log = bool(np.all(z > 0)) if log_y == "auto" else bool(log_y)
        if self.log and np.any(z <= 0):
            raise ValueError("log_y=True needs y − floor > 0 at every sample")
        self.x = np.log(self.t)
        scale = np.abs(z).max() or 1.0
        f = np.log(z) if self.log else z / scale
        self.fit, self.slope = _local_fit(self.x, f, window)  # smoothed f and its slope
        # a wider fit for the questions that look at longer stretches (where a drop fades out,
        # whether a stretch is flat), where noise matters more than resolution
        self.slope_wide = _local_fit(self.x, f, 2 * window + 1)[1]
        self.smooth = (np.exp(self.fit) if self.log else self.fit * scale) + floor  # in y's units


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive (first, last) index of each run of True."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(m))
    return [(a, b - 1) for a, b in zip(edges[::2], edges[1::2])]


def _crossing_in(x, f, level, a, b) -> float:
    """ln t where f (monotone-ish on [a, b]) first passes `level`, linearly interpolated."""
    seg = f[a:b + 1] - level
    k = np.flatnonzero(np.sign(seg[:-1]) != np.sign(seg[1:]))
    if k.size == 0:
        return float(x[a] + x[b]) / 2
    k = a + k[0]
    w = (level - f[k]) / (f[k + 1] - f[k]) if f[k + 1] != f[k] else 0.5
    return float(x[k] + w * (x[k + 1] - x[k]))


def _transitions(p: _Prepared, sign: int, slope_threshold: float, min_depth: float,
                 window: int) -> list[Drop]:
    s = sign * p.slope  # > 0 in the direction asked for
    core, loose = s > slope_threshold, sign * p.slope_wide > slope_threshold / 3
    spans = []
    for a, b in _runs(core):
        while a > 0 and loose[a - 1]:
            a -= 1
        while b < s.size - 1 and loose[b + 1]:
            b += 1
        if spans and a - spans[-1][1] <= window:  # a short dip in the slope: same drop
            spans[-1] = (spans[-1][0], max(b, spans[-1][1]))
        else:
            spans.append((a, b))
    out = []
    for a, b in spans:
        y0, y1 = p.smooth[a], p.smooth[b]
        if sign < 0:
            depth = 1 - y1 / y0 if y0 != 0 else 0.0
        else:
            depth = 1 - y0 / y1 if y1 != 0 else 0.0
        if depth < min_depth:
            continue
        mid = _crossing_in(p.x, p.smooth, (y0 + y1) / 2, a, b)
        out.append(Drop(float(p.t[a]), float(p.t[b]), float(depth), float(np.exp(mid)), float(y0), float(y1)))
    return out


# -- public API -----------------------------------------------------------------------------------
def detect_drops(t, y, *, slope_threshold: float = 0.3, min_depth: float = 0.05, window: int = 5,
                 log_y="auto", floor: float = 0.0) -> list[Drop]:
    """Sharp falls of y(t) (T,), in time order. See the module doc for the thresholds."""
    return _transitions(_Prepared(t, y, log_y, floor, window), -1, slope_threshold, min_depth, window)


def detect_rises(t, y, *, slope_threshold: float = 0.3, min_depth: float = 0.05, window: int = 5,
                 log_y=False, floor: float = 0.0) -> list[Drop]:
    """Sharp rises of y(t) (e.g. a mode's progress 0 → 1); depth = fraction of the end value
    gained. Linear values by default, since a rise often starts near 0."""
    return _transitions(_Prepared(t, y, log_y, floor, window), +1, slope_threshold, min_depth, window)


def detect_plateaus(t, y, *, slope_threshold: float = 0.1, min_decades: float = 0.5, window: int = 5,
                    log_y="auto", floor: float = 0.0, drop_threshold: float = 0.3,
                    min_depth: float = 0.05) -> list[Plateau]:
    """Flat stretches of y(t) lasting ≥ `min_decades` decades of t, in time order.

    Flat runs are merged across gaps that are flat on average, or short (≤ `window` samples)
    and free of any drop or rise (found with `drop_threshold` and `min_depth`), so noise does
    not chop a plateau.
    """
    p = _Prepared(t, y, log_y, floor, window)
    jumps = _transitions(p, -1, drop_threshold, min_depth, window) + _transitions(p, +1, drop_threshold,
                                                                                  min_depth, window)
    runs: list[tuple[int, int]] = []
    for a, b in _runs(np.abs(p.slope_wide) <= slope_threshold):
        if runs:
            e = runs[-1][1]
            short = a - e - 1 <= window and not any(p.t[e] <= j.midpoint <= p.t[a] for j in jumps)
            level = abs(p.fit[a] - p.fit[e]) <= slope_threshold * (p.x[a] - p.x[e])  # flat on average
            if short or level:
                runs[-1] = (runs[-1][0], b)
                continue
        runs.append((a, b))
    out = []
    for a, b in runs:
        if np.log10(p.t[b] / p.t[a]) >= min_decades:
            out.append(Plateau(float(p.t[a]), float(p.t[b]), float(np.median(p.y[a:b + 1]))))
    return out


def first_crossing(t, y, level: float, direction: str = "auto") -> float:
    """First t where y passes `level`, interpolated linearly in ln t (in t next to a t = 0 sample).

    direction: "down" (from above to ≤ level), "up" (from below to ≥ level), or "auto" (away
    from the side y[0] is on; t[0] when y[0] is on the level). An explicit direction needs a
    real crossing: a curve that starts past the level must first come back. NaN if never.
    t (T,) increasing, y (T,).
    """
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if t.shape != y.shape or t.size == 0:
        raise ValueError(f"t and y must be non-empty and of equal length, got {t.size} and {y.size}")
    auto = direction == "auto"
    if auto:
        direction = "down" if y[0] > level else "up"
    if direction not in ("down", "up"):
        raise ValueError(f"direction must be 'auto', 'down' or 'up', got {direction!r}")
    past = (y <= level) if direction == "down" else (y >= level)
    if past[0] and auto:
        return float(t[0])
    hits = np.flatnonzero(past[1:] & ~past[:-1]) + 1  # a sample past the level after one that is not
    if hits.size == 0:
        return float("nan")
    k = hits[0]
    w = (level - y[k - 1]) / (y[k] - y[k - 1])
    if t[k - 1] > 0:
        return float(np.exp(np.log(t[k - 1]) + w * (np.log(t[k]) - np.log(t[k - 1]))))
    return float(t[k - 1] + w * (t[k] - t[k - 1]))
