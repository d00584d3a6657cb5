"""Claims of `icldyn evaluate`: where the theory predicts a model's error on shifted prompts.

A one-layer LSA trained on Gaussian in-context regression converges to ŷ = hᵀ B* x_q with
B* = (Γ_N + σ²/N·I)⁻¹ of the *training* Λ and N (ZFB). Its error on any Gaussian prompt
distribution is then the closed form R(B*) of that distribution (theory/linear_regression.py):
    covariate shift (skewed, scale_x)  R(B*; Λ′, M)        with the shifted Λ′
    task shift (scale_y = c)           c²·R₀(B*; Λ, M) + noise terms (the limit is unchanged: ZFB's
                                       B* does not depend on the scale of w, so it stays optimal)
    label noise                        R(B*; Λ, M, σ² + σ_shift²)
    test length M ≠ N                  R(B*; Λ, M) = R_M(B*), the O(1/M + 1/N²) law
The expected values come from the training config and the shift alone (fixed before the run);
the claims compare them with the Monte-Carlo error of the stored model on 10⁴ prompts.

Tolerance: |measured/expected − 1| < 5% + 3 standard errors (relative) per seed: 5% for a
trained LSA that is within a few % of B* (linreg-lsa's own claims), 3 SE for the sampling.
"""

from __future__ import annotations

import pandas as pd
import torch

from icldyn.claims import Below, ClaimList, Measurement
from icldyn.shifts.linear_regression import skewed_eigenvalues
from icldyn.theory import linear_regression as theory

SOURCE = "Zhang, Frei & Bartlett 2023 (Thm. 4.1 limit; risk of ŷ = hᵀBx_q: spec, our derivation)"
REL_TOL = 0.05
N_SE = 3.0
THEORY = "theory_lsa"          # predictor name of the theory's curve in curves.parquet
PREDICTED = {"none", "skewed", "scale_x", "scale_y", "noise", "length"}


def shifted_covariance(task, shift: str, value) -> torch.Tensor:
    """Λ′ of the shifted prompts' inputs (d, d) float64."""
    if shift == "skewed":
        return torch.diag(skewed_eigenvalues(task, value))
    if shift == "scale_x":
        return value**2 * task.covariance
    return task.covariance


def predicted_risk(trained, shift: str, value, m: int) -> float:
    """R(B*) of the trained LSA's limit on the shifted prompts with m examples (module doc)."""
    t = trained.config.task
    B = theory.optimal_matrix(trained.task.covariance, t.n_points, t.noise_std)
    cov = shifted_covariance(trained.task, shift, value)
    sigma = (t.noise_std**2 + (value**2 if shift == "noise" else 0.0)) ** 0.5
    scale = value if shift == "scale_y" else 1.0
    clean = theory.risk(B, cov, t.n_points, 0.0, n_test=m)
    noisy = theory.risk(B, cov, t.n_points, sigma, n_test=m)
    return float(scale**2 * clean + (noisy - clean))


def applies(trained) -> bool:
    """The claims hold for a one-layer LSA trained on Gaussian inputs without a finite task pool."""
    c = trained.config
    return (c.model.name == "lsa" and getattr(c.model, "n_layers", 1) == 1 and c.task.name == "linear-regression"
            and c.task.inputs == "gaussian" and c.task.pool_size is None)


def theory_rows(trained, parsed, curves: pd.DataFrame) -> pd.DataFrame:
    """The theory's R(B*) at every evaluated m of each shift it predicts (figures): curves rows."""
    from icldyn.evaluate import COLUMNS, NO_SEED

    rows = []
    if applies(trained):
        for shift, value in parsed:
            if shift.name not in PREDICTED:
                continue
            label = shift.label(value)
            for m in sorted(curves.loc[curves["shift"] == label, "x"].unique()):
                rows.append((THEORY, "n_examples", int(m), "mse", predicted_risk(trained, shift.name, value, int(m)),
                             0.0, NO_SEED, label))
    return pd.DataFrame(rows, columns=COLUMNS)


class View:
    """One shift of an evaluation, as a claim measures it."""

    def __init__(self, ev, shift, value):
        self.trained, self.shift, self.value = ev.trained, shift, value
        self.label = shift.label(value)
        c = ev.curves
        self.model = c[(c["shift"] == self.label) & (c["predictor"] == ev.trained.config.model.name)]


def views(ev):
    return [(f"[{s.label(v)}]", View(ev, s, v)) for s, v in ev.shifts]


CLAIMS = ClaimList("evaluate", views=views)


def _deviation(view, m: int) -> tuple[list, float, float, list]:
    """Per-seed |measured/expected − 1| at m examples, and the bound 5% + 3 relative SE (worst seed)."""
    expected = predicted_risk(view.trained, view.shift.name, view.value, m)
    rows = view.model[view.model["x"] == m].sort_values("seed")
    dev = (rows["value"] / expected - 1).abs().tolist()
    return dev, REL_TOL + N_SE * float((rows["stderr"] / expected).max()), expected, rows["value"].tolist()


@CLAIMS.claim("lsa_risk", "Under {shift}, the trained LSA's error at M = {m} examples equals the theory's R(B*) "
              "of the shifted prompts ({expected:.4g})", SOURCE, Below(REL_TOL),
              tolerance="5% + 3 standard errors (relative, per seed)", per_view=True)
def _lsa_risk(view):
    if not applies(view.trained) or view.shift.name not in PREDICTED or view.model.empty:
        return None
    m = view.value if view.shift.name == "length" else view.trained.config.task.n_points
    dev, bound, expected, measured = _deviation(view, m)
    return Measurement(dev, fmt={"shift": view.label, "m": m, "expected": expected}, expect=Below(bound),
                       details={"expected_risk": expected, "measured_risk": measured, "m": m},
                       note=f"measured error {', '.join(f'{v:.4g}' for v in measured)} (per seed) vs R(B*) "
                            f"{expected:.4g}; |ratio − 1| per seed {', '.join(f'{v:.3f}' for v in dev)}")


@CLAIMS.claim("test_length_law", "At every test length M from N/2 to {top} (trained at N = {n}), the trained "
              "LSA's error follows R_M(B*) (the O(1/M + 1/N²) law)", SOURCE, Below(REL_TOL),
              tolerance="5% + 3 standard errors (relative, per seed), worst M", per_view=True)
def _test_length_law(view):
    if not applies(view.trained) or view.shift.name != "length" or view.model.empty:
        return None
    n = view.trained.config.task.n_points
    ms = sorted(m for m in view.model["x"].unique() if m >= n // 2)
    worst, bound, per_m = None, REL_TOL, {}
    for m in ms:
        dev, b, expected, measured = _deviation(view, int(m))
        per_m[int(m)] = {"expected": expected, "measured": measured}
        if worst is None or max(dev) - b > max(worst) - bound:
            worst, bound = dev, b
    return Measurement(worst, fmt={"top": int(max(ms)), "n": n}, expect=Below(bound), details={"per_m": per_m})


def evaluate_claims(ev) -> list:
    return CLAIMS.evaluate(ev)
