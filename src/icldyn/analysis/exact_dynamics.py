"""Post-hoc analysis of linear-exact-dynamics runs, shared by its claims and its figures.

Everything here reads the stored run: metrics.parquet (the probes of `probes/lsa_modes.py`) and
theory.parquet, which the experiment fills after training with the reduced ODE's curves on the
run's clock (`loss`, `conserved`, `mode_progress/<i>`, where the ODE applies) and its constants,
one row each: `saddle_loss`, `optimal_loss`, `crossing_time/<i>` (the ODE's ½-crossings from the
ZFB init at the run's σ₀), `escape_rate` (ρ), `erank_gamma_inv`, `erank_lambda_squared`.
Nothing is recomputed from theory or tasks here.

Markers: the ½-crossing of a mode's progress, the escape time (the loss halfway from its first to
its last record), the first sharp drop of the loss (`phases.detect_drops`), the drift of the
conserved quantity C = ‖p‖² − ‖Q‖_F²; fits: the escape time over log10(1/σ₀) and ln drift over
ln lr (`fits.fit_line`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from icldyn.analysis.fits import fit_line
from icldyn.analysis.phases import Drop, detect_drops, first_crossing
from icldyn.analysis.runs import metric_curve, per_seed, theory_constant, views
from icldyn.probes.lsa_modes import X_BLOCK, modes_eigenvalues  # noqa: F401 — the figures' names, from here

HALF = 0.5                   # a mode has switched on when its progress γ_i b_i crosses ½
COLLAPSE_TOLERANCE = 0.1     # erank(U) at the plateau's end within 10% of erank(Λ²)
ERANK_FINAL_TOLERANCE = 0.03  # erank(U) at the end within 3% of erank(Γ⁻¹)
INIT_NAMES = {"gaussian": "all-blocks Gaussian", "zfb_random": "ZFB blocks, random Θ (U(0) not commuting with Λ)",
              "zfb": "ZFB (commuting)"}
INIT_SHORT = {"zfb": "ZFB", "zfb_random": "ZFB blocks, random Θ", "gaussian": "all-blocks Gaussian"}


def crossing_name(i: int) -> str:
    """The theory.parquet name of mode i's ODE ½-crossing time."""
    return f"crossing_time/{i}"


# -- which run is which --------------------------------------------------------------------------------
def role_of(run) -> str:
    """A run's role; a single run of role `all` is read as the staged run."""
    return "staged" if run.config.role == "all" else run.config.role


def roles(run) -> dict[str, list[tuple[str, object]]]:
    """{role: [(label, sub-run), ...]} of a sweep directory (or of a single run, labelled "run")."""
    out: dict[str, list] = {}
    for label, r in views(run):
        out.setdefault(role_of(r), []).append((label, r))
    return out


def ode_applies(config) -> bool:
    """The reduced ODE describes a 1-layer LSA from the commuting ZFB init on noiseless Gaussian data."""
    t, m = config.task, config.model
    return (m.init == "zfb" and m.n_layers == 1 and not m.mask_query and t.inputs == "gaussian"
            and t.noise_std == 0 and t.pool_size is None and getattr(t, "curriculum", None) is None)


def loss_metric(config) -> str:
    """The exact population loss where training used it; else the held-out loss."""
    return "loss/train" if config.train.gradient == "population" else "loss/test"


def gradient_mode(run) -> str:
    c = run.config
    return "exact population gradients" if c.train.gradient == "population" else \
        f"minibatch SGD, batch {c.train.batch_size}"


def end_time(run) -> float:
    return float(run.metric("loss/train")["time"].max())


# -- the ODE against training --------------------------------------------------------------------------
def ode_crossings(run) -> np.ndarray:
    """The reduced ODE's ½-crossing time of every mode from the run's σ₀ (d,), by decreasing λ."""
    return np.array([theory_constant(run, crossing_name(i)) for i in range(run.config.task.d)])


def loss_drop(run) -> float:
    """The ODE's loss drop from the saddle to the fixed point, ½ tr Λ − R*/2."""
    return theory_constant(run, "saddle_loss") - theory_constant(run, "optimal_loss")


def ode_deviation(run, metric: str, name: str) -> list[float]:
    """max over the records of |metric − theory curve `name`| per seed, on the shared clock."""
    th = run.theory
    th = th[th["name"] == name].set_index("time")["value"]
    out = []
    for _, g in per_seed(run, metric).items():
        merged = g.join(th.rename("theory"), on="time", how="inner")
        out.append(float((merged["value"] - merged["theory"]).abs().max()) if len(merged) else float("nan"))
    return out


def mode_crossings(run, modes) -> np.ndarray:
    """Measured ½-crossing times (seeds, modes) of the given modes' progress; NaN if never crossed."""
    curves = [per_seed(run, f"probe/mode_progress/{i}") for i in modes]
    return np.array([[first_crossing(cv[s]["time"].values, cv[s]["value"].values, HALF, "up") for cv in curves]
                     for s in run.seeds]).reshape(len(run.seeds), len(modes))


def modes_within_run(run, tolerance: float) -> tuple[list[int], list[int]]:
    """(modes the ODE says cross ½ within the run with room for a crossing `tolerance` late, the rest)."""
    expected, t_end = ode_crossings(run), end_time(run)
    modes = [i for i in range(run.config.task.d) if expected[i] * (1 + tolerance) <= t_end]
    return modes, [i for i in range(run.config.task.d) if i not in modes]


def order_ratios(measured: np.ndarray) -> np.ndarray:
    """The smallest ratio t_(i+1)/t_i of consecutive crossings per seed (0 where one is missing). (seeds,)"""
    ratios = measured[:, 1:] / measured[:, :-1]
    return np.where(np.isfinite(ratios).all(1), np.nanmin(np.where(np.isfinite(ratios), ratios, np.inf), 1), 0.0)


# -- the plateau law -----------------------------------------------------------------------------------
def escape_time(run, seed: int) -> float:
    """Time at which the recorded loss has fallen halfway from its first to its last value."""
    g = per_seed(run, loss_metric(run.config))[seed]
    level = 0.5 * (g["value"].iloc[0] + g["value"].iloc[-1])
    return first_crossing(g["time"].values, g["value"].values, level, "down")


def by_init_scale(runs) -> tuple[list, np.ndarray]:
    """The runs by decreasing σ₀, and x = log10(1/σ₀) of each."""
    runs = sorted(runs, key=lambda r: -r.config.model.init_scale)
    return runs, np.log10(1 / np.array([r.config.model.init_scale for r in runs]))


def escape_fit(runs, seed: int) -> dict:
    """Escape time against log10(1/σ₀) for one seed: {slope, intercept, stderr, ci, escape_times}
    (no fit, only escape_times, when a run never left its plateau)."""
    runs, x = by_init_scale(runs)
    t = np.array([escape_time(r, seed) for r in runs])
    if not np.isfinite(t).all():
        return {"escape_times": t.tolist()}
    return {**fit_line(x, t), "escape_times": t.tolist()}


# -- conservation --------------------------------------------------------------------------------------
def conserved_drift(run) -> np.ndarray:
    """max_t |C(t) − C(0)| per seed, C = ‖p‖² − ‖Q‖_F²."""
    return np.array([float((g["value"] - g["value"].iloc[0]).abs().max())
                     for _, g in sorted(per_seed(run, "probe/conserved").items())])


def relative_drift(run) -> np.ndarray:
    """max_t |C(t) − C(0)| / max_t (‖p‖² + ‖Q‖_F²) per seed: the drift on the scale of the weights."""
    scale = {s: g["value"].max() for s, g in per_seed(run, "probe/pq_norm").items()}
    return conserved_drift(run) / np.array([scale[s] for s in sorted(scale)])


def relative_drift_curve(run, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """|C(t) − C(0)| / max_{s ≤ t}(‖p‖² + ‖Q‖²) over t > 0, of one seed."""
    t, y = metric_curve(run, "probe/conserved", seed, positive_time=True)
    _, scale = metric_curve(run, "probe/pq_norm", seed, positive_time=True)
    return t, np.abs(y - y[0]) / np.maximum.accumulate(scale) if len(t) else y


def by_gradient(runs, gradient: str) -> list:
    """The conservation runs of one gradient mode (population / sampled), by increasing lr."""
    return sorted([r for r in runs if r.config.train.gradient == gradient], key=lambda r: r.config.train.lr)


def drift_fit(runs) -> dict | None:
    """ln(mean drift) against ln lr over runs at one horizon: fit_line's dict plus lr, drift; None
    when a drift is exactly 0 (no log)."""
    lrs = np.array([r.config.train.lr for r in runs])
    drift = np.array([conserved_drift(r).mean() for r in runs])
    if np.any(drift <= 0):
        return None
    return {**fit_line(np.log(lrs), np.log(drift)), "lr": lrs, "drift": drift}


# -- spectral: alignment and rank steps ----------------------------------------------------------------
def first_drop(run, seed: int) -> Drop | None:
    """The first sharp drop of the loss (`phases.detect_drops` on t > 0), or None."""
    t, y = metric_curve(run, loss_metric(run.config), seed, positive_time=True)
    drops = detect_drops(t, y) if len(t) >= 3 else []
    return drops[0] if drops else None


def alignment_in_drop(run, seed: int, eigenvector: int = 0) -> tuple[float, Drop | None]:
    """The largest overlap (u₁·r_i)² of W^KQ's x-block with Λ's eigenvector `eigenvector` from the
    first drop's start to its midpoint (NaN without a drop), and the drop."""
    drop = first_drop(run, seed)
    if drop is None:
        return float("nan"), None
    g = per_seed(run, f"probe/eigen_overlap/{X_BLOCK}/{eigenvector}")[seed]
    window = g[(g["time"] >= drop.start) & (g["time"] <= drop.midpoint)]
    return (float(window["value"].max()) if len(window) else float("nan")), drop


def route_norms(run) -> dict[str, list[float]]:
    """Final ‖p_y Q_x‖ (vu) and ‖p_x‖‖q_y‖ (rank_one) per seed: which route carries B."""
    return {key: run.final(f"probe/route/{key}").tolist() for key in ("vu", "rank_one")}


def value_at(g: pd.DataFrame, t: float) -> float:
    """A recorded curve's value at time t, interpolated linearly in ln t."""
    g = g[g["time"] > 0]
    return float(np.interp(np.log(t), np.log(g["time"].values), g["value"].values)) if np.isfinite(t) else float("nan")


def erank_sequence(run, seed: int) -> dict | None:
    """[min erank(U) up to the first drop's midpoint, erank(U) at the ½-crossing of mode 1, ..., of
    mode d−1] of one seed, with the crossings and the final erank; None when the run did not leave
    the plateau or a mode never crossed ½."""
    g = per_seed(run, f"probe/erank/{X_BLOCK}")[seed]
    drop = first_drop(run, seed)
    crossings = mode_crossings(run, range(1, run.config.task.d))[run.seeds.index(seed)].tolist()
    if drop is None or not np.isfinite(crossings).all():
        return None
    before = g[(g["time"] > 0) & (g["time"] <= drop.midpoint)]["value"]
    return {"erank_sequence": [float(before.min())] + [value_at(g, t) for t in crossings], "crossings": crossings,
            "erank_final": float(g["value"].iloc[-1])}
