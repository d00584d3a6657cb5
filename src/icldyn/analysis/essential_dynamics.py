"""Essential dynamics of a trajectory of outputs: PCA over the checkpoints and the events on the
projected curve (one seed at a time).

Checkpoints are log-spaced in time, so the curve is read against x = ln t:
- speed s(t) = ‖dz/d ln t‖ in PC space (z = the first k projections). A stage in which a mode of
  behaviour switches on — a sigmoid in ln t — moves the curve fastest at its midpoint, so the
  local maxima of s are the stage points (`speed_peak`).
- turning rate θ(t) = the angle between successive tangents per unit ln t. Where one stage ends
  and the next, moving the outputs in another direction, begins, the curve turns: local maxima of
  θ are the turning points (`turn`), the corners between stages.
Local maxima are taken on ln s (resp. θ) with `scipy.signal.find_peaks`; a peak counts when it
stands `prominence` above the deeper of its two neighbouring minima (for ln s: a factor e^prominence
in speed), which ignores the ripples of a plateau.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import find_peaks

SPEED_PROMINENCE = 1.0       # ln units: a stage point moves ≥ e× faster than the slowest stretch beside it
TURN_PROMINENCE = 0.5        # radians per e-fold of t


def pca_trajectory(outputs: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Projections (T, k) of the trajectory `outputs` (T, F) on its top-k principal components
    (centred over the checkpoints), and the fraction of variance each explains (k,)."""
    centred = outputs - outputs.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = min(k, len(s))
    total = float((s**2).sum()) or 1.0
    return u[:, :k] * s[:k], (s[:k] ** 2) / total


def speed_and_turning(t: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Speed ‖dz/d ln t‖ (T,) and turning rate (T,) (radians per e-fold; 0 at the ends) of z (T, k)."""
    x = np.log(t)
    dz = np.gradient(z, x, axis=0)
    speed = np.linalg.norm(dz, axis=1)
    unit = dz / np.maximum(speed[:, None], 1e-300)
    cos = np.clip((unit[1:] * unit[:-1]).sum(1), -1.0, 1.0)
    angle = np.arccos(cos) / np.maximum(np.diff(x), 1e-12)          # between samples i and i+1
    turn = np.zeros_like(speed)
    turn[1:-1] = 0.5 * (angle[1:] + angle[:-1])
    return speed, turn


def events(t: np.ndarray, z: np.ndarray, speed_prominence: float = SPEED_PROMINENCE,
           turn_prominence: float = TURN_PROMINENCE) -> dict[str, np.ndarray]:
    """Times of the stage points (`speed_peak`) and turning points (`turn`) of the curve z (T, k) at
    times t (T,) (increasing, > 0)."""
    speed, turn = speed_and_turning(t, z)
    log_speed = np.log(np.maximum(speed, speed.max() * 1e-12 + 1e-300))
    peaks, _ = find_peaks(log_speed, prominence=speed_prominence)
    turns, _ = find_peaks(turn, prominence=turn_prominence)
    return {"speed_peak": t[peaks], "turn": t[turns]}


def matched_offsets(found: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """|ln t_found − ln t_ref| of the found event nearest each reference time (len(reference),);
    inf where nothing was found."""
    if len(found) == 0:
        return np.full(len(reference), np.inf)
    d = np.abs(np.log(np.asarray(found))[None, :] - np.log(np.asarray(reference))[:, None])
    return d.min(axis=1)
