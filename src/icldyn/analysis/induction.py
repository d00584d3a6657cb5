"""Post-hoc analysis of induction-ngram / induction-full runs (Chen, Sheen, Wang & Yang 2024), from the store.

Used by both the claims (`experiments/induction_claims.py`) and the figures (`report/induction.py`):
the loss views of a run, S* and the information table written to theory.parquet, the S* heads and
their parent offsets, the three stage curves and their half-way times, a(t)'s growth per decade, the
plateau-then-emergence test of the full model, the final RPE masses, and the generalisation curves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from icldyn.analysis import phases
from icldyn.analysis.runs import curve_rows, final_values, metric_curve, seed_matrix, theory_constant
from icldyn.analysis.runs import views as run_views
from icldyn.models.induction import copier_span

STAGES = ("selector", "copier", "classifier")
PLATEAU_DECADES = 0.5       # claim 6: a flat stretch of the loss this long (phases.detect_plateaus)
EMERGENCE_DEPTH = 0.3       # claim 6: then a drop losing this fraction (phases.detect_drops)
EMERGENCE_ACCELERATION = 3.0  # claim 6: peak rate of loss decrease / the rate at the start


# -- the run and its views -------------------------------------------------------------------------
def loss_views(run) -> list[tuple[str, Any]]:
    """(claim-id suffix, run) pairs: `[paper]`/`[code]` for the variants of a sweep directory (variant
    `loss=paper`), `[code-faithful]` for variant `fidelity=code`, "" for a single run."""
    if not run.variants:
        return [("", run)]
    return [(_suffix(name), r) for name, r in run_views(run)]


def _suffix(variant: str) -> str:
    return "[code-faithful]" if variant == "fidelity=code" else f"[{variant.split('=')[-1]}]"


def view_suffix(run) -> str:
    """The claim-id suffix `loss_views` gives this (sub-)run."""
    return _suffix(run.path.name) if run.path.parent.name == "variants" else ""


def stored_s_star(run) -> tuple[int, ...]:
    """S* as written to theory.parquet (rows s_star/<k>); () when the run wrote no theory."""
    th = run.theory
    if not len(th):
        return ()
    rows = th[th["name"].str.startswith("s_star/")].sort_values("name")
    return tuple(int(v) for v in rows["value"])


def subset_label(subset) -> str:
    return "+".join(str(s) for s in subset)


def information(run, kind: str) -> dict[str, float]:
    """Subset name → Ĩ (kind "modified") or I_χ² ("chi2") as written to theory.parquet."""
    th = run.theory
    if not len(th):
        return {}
    rows = th[th["name"].str.startswith(f"info/{kind}/") & ~th["name"].str.endswith("/stderr")]
    return {n.split("/")[-1]: float(v) for n, v in zip(rows["name"], rows["value"])}


def runner_up(run) -> str:
    """The subset with the largest Ĩ after S*."""
    info = information(run, "modified")
    star = subset_label(stored_s_star(run))
    rest = {k: v for k, v in info.items() if k != star}
    return max(rest, key=rest.get) if rest else star


def margin_z(run) -> float:
    """The paired z-score of Ĩ(S*) − Ĩ(runner-up) (theory.parquet)."""
    return theory_constant(run, "margin_z")


def selector_subsets(run) -> list[str]:
    """The selector's subset names recorded (probe/selector/<subset>), in name order."""
    return [n.split("/")[-1] for n in sorted(set(run.metrics["name"])) if n.startswith("probe/selector/")]


def head_offsets(run, s_star) -> list[tuple[int, int]]:
    """(head, parent offset) for each offset of S* that has a head initialised on it (head o−1 ↔ offset o)."""
    H = run.config.model.n_heads
    return [(o - 1, o) for o in s_star if o - 1 < H]


def loss_scale(run, kind: str) -> np.ndarray:
    """unigram − oracle per seed on the validation prompts (the unit of the loss comparisons)."""
    return final_values(run, f"baseline/unigram/{kind}") - final_values(run, f"baseline/oracle/{kind}")


# -- the three stages ------------------------------------------------------------------------------
def parent_mass(run, s_star, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the S* heads of the mass on their parent offsets, over time."""
    t, _ = metric_curve(run, "probe/a", seed)
    vals = [metric_curve(run, f"probe/rpe_mass/{h}/{o}", seed)[1] for h, o in head_offsets(run, s_star)]
    return t, np.mean(vals, axis=0) if vals else np.full_like(t, np.nan)


def stage_curves(run, s_star, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(time, value) of each stage's component: selector weight of S*, parent mass, a."""
    return {"selector": metric_curve(run, f"probe/selector/{subset_label(s_star)}", seed),
            "copier": parent_mass(run, s_star, seed),
            "classifier": metric_curve(run, "probe/a", seed)}


def stage_times(run, s_star) -> dict[str, list[float]]:
    """Per component, per seed: the time its progress (v − v₀)/(v_T − v₀) first reaches ½.

    a grows without bound, so its midpoint is taken against its value at the end of the run;
    a longer run can only move it later.
    """
    out: dict[str, list[float]] = {comp: [] for comp in STAGES}
    for seed in run.seeds:
        for comp, (t, v) in stage_curves(run, s_star, seed).items():
            if len(v) < 3 or not np.isfinite(v).all() or v[-1] == v[0]:
                out[comp].append(float("nan"))
                continue
            progress = (v - v[0]) / (v[-1] - v[0])
            out[comp].append(phases.first_crossing(t, progress, 0.5, "up"))
    return out


def stage_rises(run, s_star) -> dict[str, list[dict]]:
    """Sharp rises (phases.detect_rises) of each component's progress, first seed: start, end, midpoint."""
    out = {}
    for comp, (t, v) in stage_curves(run, s_star, run.seeds[0]).items():
        try:
            found = phases.detect_rises(t, (v - v[0]) / (v[-1] - v[0])) if v[-1] != v[0] else []
        except (ValueError, FloatingPointError):
            found = []
        out[comp] = [{"start": d.start, "end": d.end, "midpoint": d.midpoint} for d in found]
    return out


def a_growth(t: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """(slope of a per decade of t over the last decade, last half-decade's slope / the one before)."""
    keep = t > 0
    t, a = t[keep], a[keep]
    T = t[-1]

    def slope(lo, hi):
        sel = (t >= lo * (1 - 1e-9)) & (t <= hi * (1 + 1e-9))
        if sel.sum() < 3:
            return float("nan")
        return float(np.polyfit(np.log10(t[sel]), a[sel], 1)[0])

    last, late, before = slope(T / 10, T), slope(T / 10**0.5, T), slope(T / 10, T / 10**0.5)
    return last, (late / before if before and np.isfinite(before) and before > 0 else float("nan"))


# -- induction-full: plateau then emergence ----------------------------------------------------------
def plateau_then_emergence(t: np.ndarray, y: np.ndarray) -> dict:
    """The first plateau (≥ PLATEAU_DECADES) followed by a drop (depth ≥ EMERGENCE_DEPTH), and the
    acceleration: the largest rate of loss decrease between records over the rate at the start.

    On a log time axis any curve L₀ − g·t looks flat at small t and then drops, so a plateau in
    log time alone is no evidence of one; a genuine plateau followed by emergence is a loss that
    falls much faster later than it did at the start (an escape from near a saddle)."""
    keep = np.isfinite(y)
    t, y = t[keep], y[keep]
    rate = -np.diff(y) / np.diff(t)
    accel = float(rate.max() / rate[0]) if rate.size and rate[0] > 0 else float("inf") if rate.size else float("nan")
    try:
        plateaus = phases.detect_plateaus(t, y, min_decades=PLATEAU_DECADES)
        drops = phases.detect_drops(t, y, min_depth=EMERGENCE_DEPTH)
    except ValueError:  # too few records to judge
        plateaus, drops = [], []
    pair = None
    for p in plateaus:
        after = [d for d in drops if d.start >= p.start and d.midpoint > p.end * 0.999]
        if after:
            pair = (p, after[0])
            break
    return {"acceleration": accel, "plateau": None if pair is None else (pair[0].start, pair[0].end, pair[0].value),
            "drop": None if pair is None else (pair[1].start, pair[1].end, pair[1].depth, pair[1].midpoint)}


def descent_summary(t: np.ndarray, y: np.ndarray) -> dict | None:
    """How a loss curve falls: its initial rate, where it falls fastest, when 90% of the drop is made."""
    keep = np.isfinite(y)
    t, y = t[keep], y[keep]
    if len(t) < 3:
        return None
    rate = -np.diff(y) / np.diff(t)
    k = int(np.argmax(rate))
    return {"initial_rate": float(rate[0]), "t_fastest": float(t[k + 1]), "fastest_rate": float(rate[k]),
            "t_90": float(t[np.argmax(y - y[-1] <= 0.1 * (y[0] - y[-1]))]), "t_end": float(t[-1])}


# -- figures' readers ------------------------------------------------------------------------------
def seed_band(run, name: str) -> tuple[np.ndarray, ...]:
    """(time (T,), mean, min, max over seeds) of a metric, records at time > 0 (log-time axes)."""
    t, v = seed_matrix(run, name)
    if not t.size:
        return t, t, t, t
    keep = t > 0
    v = v[:, keep]
    return t[keep], np.nanmean(v, 0), np.nanmin(v, 0), np.nanmax(v, 0)


def rpe_masses(run, at: str) -> np.ndarray:
    """Each head's positional attention mass over offsets 1..window (heads, window), seed mean,
    at the first record ("init") or the last ("end")."""
    c = run.config.model
    span = copier_span(c)
    mats = np.full((c.n_heads, span), np.nan)
    for h in range(c.n_heads):
        for j in range(span):
            m = run.metric(f"probe/rpe_mass/{h}/{j + 1}")
            if len(m):
                step = m["step"].min() if at == "init" else m["step"].max()
                mats[h, j] = m[m["step"] == step]["value"].mean()
    return mats


# -- generalisation: other context lengths and another prior ---------------------------------------
def generalisation_alphas(run) -> list[float]:
    """The training α, then generalisation_alpha (once when they are equal)."""
    c = run.config
    return list(dict.fromkeys([float(c.task.alpha), float(c.generalisation_alpha)]))


def generalisation_curve(run, name: str, loss: str, alpha: float, seed: int | None = None) -> pd.Series:
    """Loss of predictor `name` under `loss` (paper, code) vs context length L at prior α (index L),
    averaged over the rows (seeds) unless `seed` is given (curves.parquet, metric `<loss>_loss`)."""
    if "alpha" in run.curves.columns:
        rows = curve_rows(run, predictor=name, x_name="n_examples", metric=f"{loss}_loss", alpha=alpha)
    else:  # runs stored before the general schema: predictor `<name>/<loss>/alpha=<α>`
        rows = curve_rows(run, predictor=f"{name}/{loss}/alpha={alpha:g}")
    if seed is not None and len(rows):
        rows = rows[rows["seed"] == seed]
    return rows.groupby("x")["value"].mean() if len(rows) else pd.Series(dtype=float)


def generalisation_gaps(run, kind: str) -> dict:
    """The model against GIH(S*, a → ∞) in the bounded code loss at every L and α, per seed: the worst
    |loss − GIH|/(unigram − GIH) (0: the GIH, 1: the unigram); the worst (loss − oracle)/(unigram −
    oracle) at the training α in the `kind` loss; where the model does not beat the unigram; and,
    for the paper loss, the relative gap to the GIH with the model's own a."""
    alphas = generalisation_alphas(run)
    worst = np.full(len(run.seeds), -np.inf)
    left = np.full(len(run.seeds), -np.inf)
    behind, by_L, own_a = [], {}, {}
    get = lambda *args: generalisation_curve(run, *args)  # noqa: E731
    for alpha in alphas:
        gih, uni_code, uni, oracle = (get("gih", "code", alpha), get("unigram", "code", alpha),
                                      get("unigram", kind, alpha), get("oracle", kind, alpha))
        for e, seed in enumerate(run.seeds):
            gap = (get("model", "code", alpha, seed) - gih).abs() / (uni_code - gih)
            worst[e] = max(worst[e], float(gap.max()))
            own = get("model", kind, alpha, seed)
            behind += [f"α={alpha:g}, L={L}" for L in own.index if own[L] >= uni[L]]
            if alpha == alphas[0]:
                left[e] = float(((own - oracle) / (uni - oracle)).max())
            by_L[f"alpha={alpha:g}/seed={seed}"] = {int(L): round(float(g), 4) for L, g in gap.items()}
            if kind == "paper":
                ref = get("gih_model_a", "paper", alpha, seed)
                own_a[f"alpha={alpha:g}/seed={seed}"] = {int(L): round(float(g), 4)
                                                         for L, g in ((own - ref).abs() / ref).items()}
    return {"worst": worst, "left": left, "behind": sorted(set(behind)), "by_L": by_L, "own_a": own_a}


# -- closing tables: the code-faithful runs at fixed epochs, and the ingredient ablations -----------
CLOSING_EPOCHS = (10, 100, 1000, 10_000, 50_000)
FLAT_FRACTION = 0.05  # an ablation's loss is "flat" when it falls < 5% of its epoch-1 value by the end


def _nearest_step(steps: np.ndarray, epoch: int) -> int:
    """The recorded step nearest to `epoch` in log distance (records are log-spaced)."""
    steps = steps[steps > 0]
    return int(steps[np.argmin(np.abs(np.log(steps) - np.log(epoch)))])


def closing_table(run, epochs=CLOSING_EPOCHS) -> pd.DataFrame:
    """Per view and asked epoch (≤ the run's last step): the recorded step used, a, the code loss on
    the training set and on the validation split, and the selector's normalised c² per subset
    (seed means). Columns: view, epoch, step, a, loss_train, loss_val_code, loss_train_kind, share/<subset>."""
    rows = []
    for sfx, r in loss_views(run):
        m = r.metrics
        steps = np.unique(m["step"].to_numpy())
        for epoch in epochs:
            if not len(steps) or epoch > steps.max() * 1.05:
                continue
            at = m[m["step"] == _nearest_step(steps, epoch)].groupby("name")["value"].mean()
            row = {"view": sfx or "run", "epoch": epoch, "step": _nearest_step(steps, epoch),
                   "a": at.get("probe/a", np.nan), "loss_train": at.get("loss/train", np.nan),
                   "loss_train_kind": r.config.model.loss, "loss_val_code": at.get("loss/val/code", np.nan)}
            row.update({f"share/{n}": at.get(f"probe/selector/{n}", np.nan) for n in selector_subsets(r)})
            rows.append(row)
    return pd.DataFrame(rows)


def copier_table(run) -> pd.DataFrame:
    """Final positional mass of every head on every offset 1..span, per view (seed means):
    columns view, head, offset, mass."""
    rows = []
    for sfx, r in loss_views(run):
        mat = rpe_masses(r, "end")
        rows += [{"view": sfx or "run", "head": h, "offset": j + 1, "mass": float(mat[h, j])}
                 for h in range(mat.shape[0]) for j in range(mat.shape[1]) if np.isfinite(mat[h, j])]
    return pd.DataFrame(rows)


def ingredient_table(run) -> pd.DataFrame:
    """Per view (the `ingredients` preset's single-ingredient ablations): the test of
    full_plateau_then_emergence on the training loss (first seed: `plateau_then_emergence` finds a
    plateau then a drop, with acceleration ≥ EMERGENCE_ACCELERATION), the acceleration, the plateau's span
    and the drop, the loss at the start and the end, a at the start and the end, and the time
    t_10 at which the loss has made 10% of its total drop (a plateau delays it), and `flat`: the loss
    falls by less than FLAT_FRACTION of its value after the first epoch by the end (a plateau that
    lasts the whole run; the authors' first update alone moves the loss, so epoch 1 is the reference)."""
    rows = []
    for sfx, r in loss_views(run):
        t, y = metric_curve(r, "loss/train", r.seeds[0])
        ta, a = metric_curve(r, "probe/a", r.seeds[0])
        if len(t) < 3:
            continue
        found = plateau_then_emergence(t, y)
        drop = y[0] - y[-1]
        t10 = float(t[np.argmax(y <= y[0] - 0.1 * drop)]) if drop > 0 else np.nan
        first = y[t > 0][0] if (t > 0).any() else y[0]
        rows.append({"view": sfx or "run",
                     "plateau_then_drop": found["plateau"] is not None
                     and found["acceleration"] >= EMERGENCE_ACCELERATION,
                     "flat": bool((first - y[-1]) / first < FLAT_FRACTION),
                     "acceleration": found["acceleration"],
                     "plateau": found["plateau"][:2] if found["plateau"] else None,
                     "drop": found["drop"][:2] if found["drop"] else None,
                     "loss_start": float(y[0]), "loss_epoch_1": float(first), "loss_end": float(y[-1]), "t_10": t10,
                     "a_start": float(a[0]) if len(a) else np.nan, "a_end": float(a[-1]) if len(a) else np.nan})
    return pd.DataFrame(rows)


def ingredient_answer(run) -> dict | None:
    """From the `ingredients` preset's views: per ingredient X, whether the loss stalls (flat, or a
    plateau then a drop) with X alone on the paper model (`sufficient`) and whether it stops stalling
    when X alone is switched off in the authors' run (`necessary`, given the authors' run stalls).
    None when the run has no ingredient views."""
    table = ingredient_table(run)
    if table.empty or "[code]" not in set(table["view"]) or "[paper]" not in set(table["view"]):
        return None
    stalls = {v: bool(f or p) for v, f, p in zip(table["view"], table["flat"], table["plateau_then_drop"])}
    names = sorted({v[len("[paper+"):-1] for v in stalls if v.startswith("[paper+")})
    out = {"code_stalls": stalls["[code]"], "paper_stalls": stalls["[paper]"], "ingredients": {}}
    for x in names:
        on, off = stalls.get(f"[paper+{x}]"), stalls.get(f"[code-{x}]")
        out["ingredients"][x] = {"sufficient": on, "necessary": None if off is None else stalls["[code]"] and not off}
    return out
