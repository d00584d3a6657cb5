"""Post-hoc analysis of multihead-tasks runs (Chen, Sheen, Wang & Yang 2024), shared by its claims and figures.

Which sub-run of the command's sweep plays which part, the semi-singular values (ω, μ) per head and task
read off the stored probes, the head specialisation r_h and its emergence window, and the loss's phases.
Reads only the stored run (`analysis.runs`); the thresholds claims and figures share live here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from icldyn.analysis.phases import detect_drops, detect_plateaus, first_crossing
from icldyn.analysis.runs import find_view, metric_curve, record_at, views

SPECIALISED = 0.9          # r_h above this: the head keeps one task
CONVERGED_SLOPE = 0.3      # |d ln loss / d ln t| below this at the end: no drop in progress (analysis.phases)


# -- which sub-run is which ----------------------------------------------------------------------------
def variant(runs, n_tasks: int, n_heads: int, noise: float = 0.0, signs: str = "positive"):
    """The sub-run with I = `n_tasks`, H = `n_heads`, label noise `noise` and head signs `signs`, else None."""
    return find_view(runs, {"task.n_tasks": n_tasks, "model.n_heads": n_heads, "task.noise_std": noise,
                            "head_signs": signs})


def base_view(run):
    """The sub-run with the command's own I, H, σ and signs (the main run of the quick preset), else None."""
    c = run.config
    return variant(dict(views(run)), c.task.n_tasks, c.model.n_heads, c.task.noise_std, c.head_signs)


def main_view(run):
    """The main multi-head run the claims read: the command's own (H, I ≥ 2), else the first noiseless
    run with H ≥ I ≥ 2; None when there is none."""
    main = base_view(run)
    if main is None or main.config.model.n_heads < 2 or main.config.task.n_tasks < 2:
        main = next((r for _, r in views(run) if r.config.model.n_heads >= r.config.task.n_tasks >= 2
                     and r.config.task.noise_std == 0), None)
    return main


def noisy_view(run):
    """The run with the command's own I and H, label noise σ > 0 and all-positive heads, else None."""
    c = run.config
    return next((r for _, r in views(run) if r.config.task.n_tasks == c.task.n_tasks
                 and r.config.model.n_heads == c.model.n_heads and r.config.task.noise_std > 0
                 and r.config.head_signs == "positive"), None)


def one_task_view(run, signs: str):
    """The one-task run with H ≥ 2 heads started with `signs` ("alternating": the debiased pair), else None."""
    return next((r for _, r in views(run) if r.config.task.n_tasks == 1 and r.config.model.n_heads >= 2
                 and r.config.head_signs == signs), None)


# -- semi-singular values and the head specialisation ----------------------------------------------------
def semi_singular(run, seed: int, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ω, μ (H, I) of one seed at `step` (default: the last record)."""
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    at = record_at(run, seed, step)
    omega = np.array([[at.get(f"probe/omega/{h}/{i}", np.nan) for i in range(I)] for h in range(H)])
    mu = np.array([[at.get(f"probe/mu/{h}/{i}", np.nan) for i in range(I)] for h in range(H)])
    return omega, mu


def allocation(run, seed: int, step: int | None = None) -> np.ndarray:
    """Signed ω_iμ_i per head and task (H, I) at `step` (default: the last record)."""
    omega, mu = semi_singular(run, seed, step)
    return omega * mu


def cancellation(run, seed: int, step: int | None = None) -> np.ndarray:
    """Per task |Σ_h μ_i^h| / Σ_h |μ_i^h| (I,): 1 when every head's output has one sign, 0 for exact pairs."""
    _, mu = semi_singular(run, seed, step)
    return np.abs(mu.sum(0)) / np.maximum(np.abs(mu).sum(0), np.finfo(float).tiny)


def specialisation(run, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, time, min over heads of r_h) for one seed, t > 0, in time order."""
    H = run.config.model.n_heads
    m = run.metrics
    m = m[(m["seed"] == seed) & (m["time"] > 0) & m["name"].isin([f"probe/head_specialisation/{h}" for h in range(H)])]
    g = m.groupby(["step", "time"])["value"].min().reset_index().sort_values("time")
    return g["step"].to_numpy(), g["time"].to_numpy(), g["value"].to_numpy()


def min_specialisation(run, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, min over heads of r_h) for one seed, t > 0."""
    _, t, r = specialisation(run, seed)
    return t, r


def emergence_window(t: np.ndarray, r: np.ndarray, n_tasks: int) -> tuple[float, float] | None:
    """The emergence phase of min_h r_h (T,): from its last upward crossing of 1/I + (1 − 1/I)/4 before its
    peak to its first crossing of 95% of the way from 1/I to the peak; None when the peak is below
    SPECIALISED or r never sat near 1/I before it."""
    k = int(np.argmax(r))
    base = 1 / n_tasks
    if r[k] < SPECIALISED:
        return None
    below = np.flatnonzero(r[:k + 1] <= base + 0.25 * (1 - base))
    if not below.size:
        return None
    j = below[-1]
    start = first_crossing(t[j:k + 1], r[j:k + 1], base + 0.25 * (1 - base), "up")
    end = first_crossing(t[j:k + 1], r[j:k + 1], base + 0.95 * (r[k] - base), "up")
    return float(start), float(end)


def seed_emergence_window(run, seed: int) -> tuple[float, float] | None:
    """`emergence_window` of one seed's min_h r_h."""
    t, r = min_specialisation(run, seed)
    return emergence_window(t, r, run.config.task.n_tasks)


def specialised_window(run, seed: int) -> tuple[float, float] | None:
    """(first, last) time at which every head has r_h ≥ SPECIALISED, else None."""
    t, r = min_specialisation(run, seed)
    on = np.flatnonzero(r >= SPECIALISED)
    return (t[on[0]], t[on[-1]]) if on.size else None


def head_mean(run, prefix: str) -> pd.Series:
    """Final value of probe/<prefix>/<h> averaged over heads, per seed."""
    H = run.config.model.n_heads
    return pd.concat([run.final(f"{prefix}/{h}") for h in range(H)], axis=1).mean(axis=1)


def at_time(t: np.ndarray, v: np.ndarray, t0: float) -> float:
    """v interpolated at t0 in ln t."""
    return float(np.interp(np.log(t0), np.log(t), v))


def loss_curve(run, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, held-out loss) of one seed, t > 0, on the prompts used during training (the final record,
    on the larger final prompt set, left out so that the curve's shape is not a change of prompts)."""
    return metric_curve(run, "loss/test", seed, positive_time=True, same_prompts=True)


# -- phases of the loss -----------------------------------------------------------------------------------
def loss_phases(t: np.ndarray, loss: np.ndarray) -> dict:
    """Warm-up plateau, drops and convergence of one loss curve on the time axis (t > 0).

    warm-up: the first plateau, if it starts at the first sample and sits within 10% of the initial
    loss; emergence: the first drop that starts after the warm-up begins; convergence: after the last
    drop, with no fast fall in progress at the end — the log-log slope over the last half-decade of
    time below 0.3, the drop threshold of `analysis.phases`. (Not the plateau threshold 0.1: here the
    limit is approached like an infimum, the paired heads' ω → 0, so the loss creeps rather than rests.)"""
    plateaus = detect_plateaus(t, loss)
    drops = detect_drops(t, loss)
    warm = plateaus[0] if plateaus else None
    warm_ok = bool(warm is not None and warm.start <= t[0] * 1.5 and warm.value >= 0.9 * loss[0])
    emergence = next((d for d in drops if warm is None or d.start >= warm.start), None)
    t_back = t[-1] / 10**0.5
    slope = abs(np.log(at_time(t, loss, t_back) / loss[-1])) / np.log(t[-1] / t_back)
    return {
        "warmup": (warm.start, warm.end, warm.value) if warm_ok else None,
        "drops": [(d.start, d.end, d.midpoint, d.depth) for d in drops],
        "emergence": (emergence.start, emergence.end, emergence.midpoint, emergence.depth) if emergence else None,
        "final_log_log_slope": float(slope),
        "convergence_start": drops[-1].end if drops else None,
        "converged": bool(slope < CONVERGED_SLOPE),
    }
