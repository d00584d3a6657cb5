"""Post-hoc curve analysis of feature-convergence runs, shared by its claims and its figures.

Phase markers per feature (`feature_markers`, `markers_of`): a_k passes ½, ℓ_k reaches 10⁻² and
10⁻³, the rise of a_k (`phases.detect_rises`), and for an under-represented feature the peak of
the cross-feature score B̄_k (rise, then fall) and the time a_k overtakes the dominant feature's
mass. The K-scaling's crossing times (`scaling_points`), trained and of the reduced dynamics, and
the gap between training and the reduced dynamics (`reduced_dynamics_gaps`). Everything is read
from the stored run (metrics.parquet, theory.parquet, config.yaml) through `analysis.runs`.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import phases
from icldyn.analysis.runs import final_values, seed_matrix, theory_constant, theory_curve, views

# Thresholds shared by the claims and the figures, fixed before any run.
EPS_ATTENTION = 0.05     # a_k ≥ 1 − ε at the end of training
EPS_ERROR = 1e-3         # ℓ_k ≤ 1e-3 at the end of training (the K-scaling's target too)
STAGE_ERROR = 1e-2       # "reaches ℓ ≤ 10⁻²": the stage-wise ordering of the imbalanced case

# theory.parquet names written by the experiment beside the reduced dynamics (constants, one row each)
CLOSED_FORM = "closed_form/K={K}/{what}"   # what: "attention" (time to a_k = ½) or "error" (to ℓ_k = EPS_ERROR)
ERROR_FLOOR = "error_floor/{k}"            # ½(1 − p_k)^N


# -- runs and their kinds -------------------------------------------------------------------------
def run_kind(run) -> str:
    """balanced, imbalanced (Q trained) or full (W^KQ and W^PV trained)."""
    c = run.config
    return "full" if c.model.train == "full" else c.task.balance


def feature_views(run) -> list[tuple[str, object]]:
    """(name, run) pairs: the variants of a sweep directory, or the run itself named by its kind."""
    return views(run, run_kind(run))


def is_scaling_run(label: str, top) -> bool:
    """A sub-run of the K-scaling: a `K=<K>` variant or a sub-run of a `--sweep task.K=[...]`."""
    return label.startswith("K=") or "task.K" in (top.sweep.get("swept") or {})


def minor_features(run) -> list[int]:
    return list(range(1, run.config.task.K)) if run.config.task.balance == "imbalanced" else []


# -- curves ---------------------------------------------------------------------------------------
def on_grid(t_from, v_from, t_to) -> np.ndarray:
    """v at the times t_to (theory rows share the trainer's times; else linearly interpolated)."""
    idx = np.searchsorted(t_from, t_to)
    idx = np.clip(idx, 0, len(t_from) - 1)
    exact = np.isclose(t_from[idx], t_to, rtol=1e-9, atol=1e-12)
    if exact.all():
        return v_from[idx]
    return np.interp(t_to, t_from, v_from)


def cross_score_curve(values_by_pair: dict, k: int, K: int) -> np.ndarray | None:
    """B̄_k = mean over under-represented n ∉ {0, k} of s_{k,n} (the spec's cross-feature score)."""
    others = [values_by_pair[(k, n)] for n in range(1, K) if n != k and (k, n) in values_by_pair]
    return np.mean(others, axis=0) if others else None


def final_per_feature(run, prefix: str) -> np.ndarray:
    """(S, K) final values of `prefix`/<k> per seed."""
    return np.stack([final_values(run, f"{prefix}/{k}") for k in range(run.config.task.K)], axis=1)


def late_slope(t, err, decades: float = 1.0) -> float:
    """Least-squares slope of ln ℓ vs ln t over the last `decades` of recorded time."""
    keep = (t >= t[-1] / 10 ** decades) & (t > 0) & (err > 0)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(t[keep]), np.log(err[keep]), 1)[0])


def clean(obj):
    """JSON-friendly: NaN → None, numpy scalars → floats, int keys → str."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if not np.isfinite(obj) else float(obj)
    return obj


# -- phase markers --------------------------------------------------------------------------------
def feature_markers(t, same, error, dominant_mass=None, cross_score=None) -> dict:
    """Phase markers of one query feature from its curves (time (T,), each (T,)):
    t_attention_half (a_k passes ½; 0 when it starts above), t_error_1e-2 / t_error_1e-3 (ℓ_k
    reaches them), the rise of a_k found by `phases.detect_rises`; for an under-represented
    feature, t_overtake (a_k overtakes the dominant feature's mass) and the peak of the mean
    cross-feature score B̄_k toward the other under-represented features (rise, then fall)."""
    # a feature whose attention starts at ≥ ½ (the dominant one) has no attention-growth phase: 0
    out = {"t_attention_half": 0.0 if same[0] >= 0.5 else phases.first_crossing(t, same, 0.5, "up"),
           f"t_error_{STAGE_ERROR:g}": phases.first_crossing(t, error, STAGE_ERROR, "down"),
           f"t_error_{EPS_ERROR:g}": phases.first_crossing(t, error, EPS_ERROR, "down")}
    try:
        rises = phases.detect_rises(t, same)
        out["attention_rises"] = [{"start": r.start, "midpoint": r.midpoint, "end": r.end,
                                   "from": r.y_start, "to": r.y_end} for r in rises]
    except ValueError:
        out["attention_rises"] = []
    if dominant_mass is not None:
        out["t_overtake"] = phases.first_crossing(t, same - dominant_mass, 0.0, "up")
    if cross_score is not None:
        i = int(np.argmax(cross_score))
        # a peak is an interior maximum above the start: a curve that only falls has none
        interior = 0 < i < len(cross_score) - 1 and cross_score[i] > cross_score[0]
        out["t_cross_peak"] = float(t[i]) if interior else float("nan")
        out["cross_rise"] = float(cross_score[i] - cross_score[0])
        out["cross_fall"] = float(cross_score[i] - cross_score[-1])
    return out


def _reader(run, source: str, seed_index: int | None):
    """name → (time, values): the reduced dynamics, or the trained seed mean (or one seed)."""
    def get(name):
        if source == "theory":
            return theory_curve(run, name)
        t, v = seed_matrix(run, name)
        if v.size == 0:
            return t, np.zeros(0)
        return t, (v.mean(0) if seed_index is None else v[seed_index])
    return get


def markers_of(run, source: str = "train", seed_index: int | None = None) -> dict[int, dict]:
    """Phase markers of every feature, from the trained curves (the seed mean, or one seed) or
    from the reduced dynamics in theory.parquet (source="theory")."""
    K = run.config.task.K
    minors = set(minor_features(run))
    get = _reader(run, source, seed_index)
    out = {}
    for k in range(K):
        t, same = get(f"probe/same_feature_attention/{k}")
        _, err = get(f"probe/feature_error/{k}")
        if same.size < 3 or err.size != same.size:
            continue
        dom = cross = None
        if k in minors:
            _, dom = get(f"probe/attention_mass/{k}/0")
            pairs = {}
            for n in range(1, K):
                if n != k:
                    _, v = get(f"probe/score/{k}/{n}")
                    if v.size == same.size:
                        pairs[(k, n)] = v
            cross = cross_score_curve(pairs, k, K)
            dom = dom if dom.size == same.size else None
        out[k] = feature_markers(t, same, err, dom, cross)
    return out


def phase_order_ok(m: dict) -> bool:
    """The four phases of an under-represented feature in the spec's order: B̄_k peaks, a_k overtakes
    the dominant mass, a_k passes ½, ℓ_k reaches STAGE_ERROR."""
    keys = ["t_cross_peak", "t_overtake", "t_attention_half", f"t_error_{STAGE_ERROR:g}"]
    ts = [m.get(k, np.nan) for k in keys]
    return bool(np.all(np.isfinite(ts)) and np.all(np.diff(ts) > 0))


# -- training vs the reduced dynamics ------------------------------------------------------------
def reduced_dynamics_gaps(run) -> tuple[np.ndarray, np.ndarray] | None:
    """Per seed (S,): max over t and k of |a_k − a_k^reduced| and of |ln(ℓ_k / ℓ_k^reduced)|, on the
    trainer's record times; None without reduced dynamics or probes."""
    dev_a, dev_l = [], []
    for k in range(run.config.task.K):
        t, v = seed_matrix(run, f"probe/same_feature_attention/{k}")
        tt, tv = theory_curve(run, f"probe/same_feature_attention/{k}")
        if v.size == 0 or tv.size == 0:
            return None
        dev_a.append(np.abs(v - on_grid(tt, tv, t)[None]).max(1))
        t, v = seed_matrix(run, f"probe/feature_error/{k}")
        tt, tv = theory_curve(run, f"probe/feature_error/{k}")
        with np.errstate(divide="ignore", invalid="ignore"):
            dev_l.append(np.abs(np.log(v / on_grid(tt, tv, t)[None])).max(1))
    return np.max(dev_a, 0), np.max(dev_l, 0)


def optimal_value_scale(run) -> tuple[np.ndarray, np.ndarray] | None:
    """The value weight that would minimise the loss at the Q-only reduced path's attention:
    r* = Σ_k p_k E[a_k] / Σ_k p_k E[Σ_n a_kn²], with E[Σ_n a_kn²] = 2ℓ_k + 2E[a_k] − 1 (from
    ℓ_k = ½E[(1 − a_k)² + Σ_{n≠k} a_kn²]). (time (T,) > 0, r* (T,)), or None."""
    p = run.config.task.probabilities()
    num = den = t = None
    for k in range(run.config.task.K):
        t, a = theory_curve(run, f"probe/same_feature_attention/{k}")
        _, l = theory_curve(run, f"probe/feature_error/{k}")
        if a.size == 0 or l.size != a.size:
            return None
        num = p[k] * a if num is None else num + p[k] * a
        sq = 2 * l + 2 * a - 1
        den = p[k] * sq if den is None else den + p[k] * sq
    keep = t > 0
    return t[keep], (num / den)[keep]


# -- K-scaling ------------------------------------------------------------------------------------
def crossing_times(t, same, err) -> tuple[float, float]:
    """(time a crosses ½ upward, time ℓ crosses EPS_ERROR downward)."""
    return (phases.first_crossing(t, same, 0.5, "up"), phases.first_crossing(t, err, EPS_ERROR, "down"))


def mean_feature_curves(run, source: str = "train"):
    """(time, a (R, T), ℓ (R, T)): every feature's curves (R rows: seeds × features for training,
    features for the reduced dynamics), or None when a curve is missing."""
    same, err, t = [], [], None
    for k in range(run.config.task.K):
        if source == "train":
            t, a = seed_matrix(run, f"probe/same_feature_attention/{k}")
            _, e = seed_matrix(run, f"probe/feature_error/{k}")
            if a.size == 0 or e.shape != a.shape:
                return None
            same += list(a)
            err += list(e)
        else:
            t, a = theory_curve(run, f"probe/same_feature_attention/{k}")
            _, e = theory_curve(run, f"probe/feature_error/{k}")
            if a.size < 2 or e.size != a.size:
                return None
            same.append(a)
            err.append(e)
    return t, np.asarray(same), np.asarray(err)


def trained_crossings(run) -> tuple[float, float] | None:
    """Crossing times of a trained balanced run, read off the curves averaged over features and seeds
    (all features are alike; the mean uses every held-out prompt, so one noisy feature does not
    decide the crossing)."""
    curves = mean_feature_curves(run, "train")
    return None if curves is None else crossing_times(curves[0], curves[1].mean(0), curves[2].mean(0))


def reduced_crossings(run) -> tuple[float, float] | None:
    """Crossing times of the reduced dynamics on the run's own clock (theory.parquet), feature mean."""
    curves = mean_feature_curves(run, "theory")
    return None if curves is None else crossing_times(curves[0], curves[1].mean(0), curves[2].mean(0))


def has_scaling_flow(run) -> bool:
    """theory.parquet holds the reduced flow of the K-scaling (scaling_source="theory")."""
    th = run.theory
    return bool(len(th) and th["name"].str.startswith("scaling/").any())


def _trained_points(run, views) -> dict:
    trained = []
    for label, r in views:
        c = r.config
        if c.task.balance == "balanced" and c.model.train == "q" and is_scaling_run(label, run):
            tr = trained_crossings(r)
            if tr is not None:
                trained.append((c.task.K, c.task.n_points, tr, reduced_crossings(r), label))
    if len(trained) < 2:
        return {}
    trained.sort(key=lambda p: p[0])
    checked = [p for p in trained if p[3] is not None]
    return {"source": "training", "K": [p[0] for p in trained], "N": [p[1] for p in trained],
            "t_half": [p[2][0] for p in trained], "t_error": [p[2][1] for p in trained],
            "check": {"K": [p[0] for p in checked], "N": [p[1] for p in checked],
                      "trained": [list(p[2]) for p in checked], "reference": [list(p[3]) for p in checked],
                      "reference_name": "the reduced dynamics on each run's own clock (GD on the scores at "
                                        "its lr schedule, multinomial expectation)",
                      "runs": [p[4] for p in checked]}}


def _flow_points(label, r) -> dict:
    c = r.config
    pts = []
    for K in c.scaling_K:
        N = K * c.scaling_tokens_per_feature
        t, a = theory_curve(r, f"scaling/K={K},N={N}/same_feature_attention")
        _, e = theory_curve(r, f"scaling/K={K},N={N}/feature_error")
        if a.size:
            pts.append((K, *crossing_times(t, a, e), N))
    # training check: the balanced run's crossing times vs the flow at its own (K, N)
    K0, N0 = c.task.K, c.task.n_points
    t, a = theory_curve(r, f"scaling/K={K0},N={N0}/same_feature_attention")
    _, e = theory_curve(r, f"scaling/K={K0},N={N0}/feature_error")
    check = {}
    tr = trained_crossings(r)
    if a.size and tr is not None:
        check = {"K": [K0], "N": [N0], "trained": [list(tr)], "reference": [list(crossing_times(t, a, e))],
                 "reference_name": "the reduced gradient flow (multinomial expectation)", "runs": [label]}
    if not pts:
        return {}
    return {"source": "theory", "K": [p[0] for p in pts], "t_half": [p[1] for p in pts],
            "t_error": [p[2] for p in pts], "N": [p[3] for p in pts], "check": check}


def scaling_points(run, views) -> dict:
    """{"source": "training" | "theory", "K", "t_half", "t_error", "N": [...], "check": {"K", "N",
    "trained", "reference": [[t_half, t_error], ...], "reference_name", "runs"}} or {}."""
    pts = _trained_points(run, views)
    if pts:
        return pts
    for label, r in views:
        if has_scaling_flow(r) and (pts := _flow_points(label, r)):
            return pts
    return {}


def closed_form_times(views, Ks, what: str) -> list[float]:
    """The closed form's time to a_k = ½ (what="attention") or ℓ_k = EPS_ERROR ("error") of the
    balanced large-N flow at each K, as the runs stored it in theory.parquet (NaN where none did)."""
    out = []
    for K in Ks:
        found = [v for _, r in views if np.isfinite(v := theory_constant(r, CLOSED_FORM.format(K=K, what=what)))]
        out.append(found[0] if found else float("nan"))
    return out


def error_floors(run) -> list[float]:
    """½(1 − p_k)^N per feature, as the run stored it in theory.parquet (NaN where absent)."""
    return [theory_constant(run, ERROR_FLOOR.format(k=k)) for k in range(run.config.task.K)]
