"""Post-hoc analysis of linear-exact-dynamics-vector runs, shared by its claims and its figures.

Reads metrics.parquet (`probes/vector_modes.py`: probe/mode_product/<α>, probe/mode_conserved/<α>,
probe/mode_norm/<α>, probe/conserved) and theory.parquet (the experiment's `theory_frame`: curves
closed_form/<α>, mode_ode/<α>, layer_ode/<α>, scalar/<α> in progress units a/a^∞, and constants
s/<α>, s_inf/<α>, a_inf/<α>, tau/<α>, half_time/<α>). Nothing is recomputed from theory here.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis.fits import fit_line
from icldyn.analysis.phases import first_crossing
from icldyn.analysis.runs import per_seed, theory_constant, views

HALF = 0.5


def role_of(run) -> str:
    return "modes" if run.config.role == "all" else run.config.role


def roles(run) -> dict[str, list[tuple[str, object]]]:
    """{role: [(label, sub-run), ...]} of a sweep directory (or of a single run, labelled "run")."""
    out: dict[str, list] = {}
    for label, r in views(run):
        out.setdefault(role_of(r), []).append((label, r))
    return out


def n_modes(run) -> int:
    return run.config.task.d


def constants(run, name: str) -> np.ndarray:
    """A per-mode theory constant (d,): s, s_inf, a_inf, tau, half_time, c."""
    return np.array([theory_constant(run, f"{name}/{i}") for i in range(n_modes(run))])


def has_theory(run, name: str) -> bool:
    return bool((run.theory["name"] == name).any())


def progress(run, mode: int) -> dict:
    """{seed: frame (step, time, value)} of a/a^∞ for one mode."""
    a_inf = theory_constant(run, f"a_inf/{mode}")
    out = {}
    for seed, g in per_seed(run, f"probe/mode_product/{mode}").items():
        g = g.copy()
        g["value"] = g["value"] / a_inf
        out[seed] = g
    return out


def deviation(run, mode: int, curve: str) -> np.ndarray:
    """max over the records of |a/a^∞ − theory `curve`/<mode>| per seed (seeds,), on the shared clock."""
    th = run.theory
    th = th[th["name"] == f"{curve}/{mode}"].set_index("time")["value"].rename("theory")
    out = []
    for _, g in sorted(progress(run, mode).items()):
        merged = g.join(th, on="time", how="inner")
        out.append(float((merged["value"] - merged["theory"]).abs().max()) if len(merged) else np.nan)
    return np.array(out)


def loss_deviation(run, curve: str) -> tuple[np.ndarray, float]:
    """(max over the records of |loss/train − theory `curve`| per seed (seeds,), the theory's drop
    from its first to its last value, the scale the deviation is judged on)."""
    th = run.theory
    th = th[th["name"] == curve].sort_values("time").set_index("time")["value"].rename("theory")
    out = []
    for _, g in sorted(per_seed(run, "loss/train").items()):
        merged = g.join(th, on="time", how="inner")
        out.append(float((merged["value"] - merged["theory"]).abs().max()) if len(merged) else np.nan)
    return np.array(out), float(th.iloc[0] - th.iloc[-1]) if len(th) else np.nan


def worst_deviation(run, curve: str) -> np.ndarray:
    """max over modes of `deviation` (seeds,)."""
    return np.max([deviation(run, i, curve) for i in range(n_modes(run))], axis=0)


def half_times(run) -> np.ndarray:
    """Measured first time a/a^∞ rises through ½ (seeds, d); NaN where it never does."""
    curves = [progress(run, i) for i in range(n_modes(run))]
    return np.array([[first_crossing(c[s]["time"].values, c[s]["value"].values, HALF, "up") for c in curves]
                     for s in run.seeds])


def order_ratios(run) -> np.ndarray:
    """Smallest ratio t½(α+1)/t½(α) over consecutive modes by decreasing s, per seed (seeds,); NaN
    where a mode never crossed ½."""
    order = np.argsort(-constants(run, "s"), kind="stable")
    t = half_times(run)[:, order]
    return (t[:, 1:] / t[:, :-1]).min(1) if t.shape[1] > 1 else np.full(len(t), np.nan)


def final_progress(run) -> np.ndarray:
    """a_α s^∞_α at the last record (seeds, d)."""
    return np.stack([np.array([g["value"].iloc[-1] for _, g in sorted(progress(run, i).items())])
                     for i in range(n_modes(run))], axis=1)


def mode_drift(run) -> np.ndarray:
    """max_t |C_α(t) − C_α(0)| per seed and mode (seeds, d), C_α = p_α² − q_α²."""
    out = []
    for i in range(n_modes(run)):
        out.append([float((g["value"] - g["value"].iloc[0]).abs().max())
                    for _, g in sorted(per_seed(run, f"probe/mode_conserved/{i}").items())])
    return np.array(out).T


def relative_mode_drift(run) -> np.ndarray:
    """mode_drift / max_t (p_α² + q_α²) (seeds, d)."""
    scale = [[g["value"].max() for _, g in sorted(per_seed(run, f"probe/mode_norm/{i}").items())]
             for i in range(n_modes(run))]
    return mode_drift(run) / np.array(scale).T


def drift_fit(runs) -> dict | None:
    """ln(drift) against ln lr, drift = the mean over seeds of the largest per-mode drift; None if a drift is 0."""
    runs = sorted(runs, key=lambda r: r.config.train.lr)
    lrs = np.array([r.config.train.lr for r in runs])
    drift = np.array([mode_drift(r).max(1).mean() for r in runs])
    if np.any(drift <= 0):
        return None
    return {**fit_line(np.log(lrs), np.log(drift)), "lr": lrs, "drift": drift}


def scalar_gap(run) -> np.ndarray:
    """max over modes and records of |a/a^∞ (trained) − the scalar reduction's progress| (seeds,)."""
    return worst_deviation(run, "scalar")
