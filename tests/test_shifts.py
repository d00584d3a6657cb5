"""The shift registry: one-sentence errors, and the zero and averaging estimators' errors under each
linear-regression shift against their closed forms (Monte-Carlo within the sampling error); OLS is
equivariant under the task scale; the LSA at the ZFB limit under a covariate shift has the theory's
R(B) with the shifted Λ."""

import math

import pytest
import torch

from icldyn.errors import UsageError
from icldyn.estimators import ESTIMATORS
from icldyn.models.lsa import LSA, LSAConfig
from icldyn.shifts import FAMILIES, family_of, parse_shift
from icldyn.shifts.linear_regression import OUTLIER_SCALE, skewed_eigenvalues
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.theory import linear_regression as theory

D, SEED, PROMPTS = 4, 123, 40_000
GRID = [2, 5, 12]


@pytest.fixture(scope="module")
def task():
    return LinearRegressionTask(LinearRegressionConfig(d=D, n_points=8), dtype=torch.float64)


def errors(task, spec, name, grid=GRID, prompts=PROMPTS):
    """{m: (mean, standard error)} of estimator `name`'s squared error under shift `spec`."""
    family = family_of(task)
    shift, value = parse_shift(task, spec)
    out = {}
    for m, batch in family.prompts(task, shift, value, grid, prompts, SEED):
        loss = family.score(ESTIMATORS[name](task)(batch), batch)[0]
        out[m] = (float(loss.mean()), float(loss.std() / math.sqrt(loss.numel())))
    return out


def averaging_closed_form(m, cov_c, cov_q, s=1.0, var_c=0.0, var_q=0.0):
    """E(hᵀx_q − y_q)², h = (1/m) Σ y_i x_i, x_i ~ N(0, Σc), x_q ~ N(0, Σq) independent, w ~ N(0, s²I),
    context/query label noise variances var_c/var_q (written independently of theory/):
    s²[(1+1/m) tr(Σc²Σq) + tr(ΣcΣq) tr Σc/m − 2 tr(ΣcΣq) + tr Σq] + var_c tr(ΣcΣq)/m + var_q."""
    tr = torch.trace
    cq = tr(cov_c @ cov_q)
    quad = (1 + 1 / m) * tr(cov_c @ cov_c @ cov_q) + cq * tr(cov_c) / m
    return float(s**2 * (quad - 2 * cq + tr(cov_q)) + var_c * cq / m + var_q)


def _proj(k):
    return torch.diag(torch.tensor([1.0] * k + [0.0] * (D - k), dtype=torch.float64))


I = torch.eye(D, dtype=torch.float64)
OUT_VAR = 0.2 * OUTLIER_SCALE**2 * D
# shift → (Σ_context, Σ_query, w scale, context noise var, query noise var)
SETTINGS = {
    "none": (I, I, 1.0, 0.0, 0.0),
    "skewed=2": (None, None, 1.0, 0.0, 0.0),
    "scale_x=3": (9 * I, 9 * I, 1.0, 0.0, 0.0),
    "scale_y=2.5": (I, I, 2.5, 0.0, 0.0),
    "noise=0.7": (I, I, 1.0, 0.49, 0.49),
    "outliers=0.2": (I, I, 1.0, OUT_VAR, 0.0),
    "half_subspace=2": (_proj(2), _proj(2), 1.0, 0.0, 0.0),
    "orthogonal_query=1": (_proj(1), I - _proj(1), 1.0, 0.0, 0.0),
    "length=30": (I, I, 1.0, 0.0, 0.0),
}


@pytest.mark.parametrize("spec", list(SETTINGS))
def test_zero_and_averaging_match_their_closed_forms_under_each_shift(task, spec):
    cov_c, cov_q, s, var_c, var_q = SETTINGS[spec]
    if spec.startswith("skewed"):
        cov_c = cov_q = torch.diag(skewed_eigenvalues(task, 2.0))
    grid = GRID + [30] if spec.startswith("length") else GRID
    zero, avg = errors(task, spec, "zero", grid), errors(task, spec, "averaging", grid)
    for m in grid:
        z_expected = float(s**2 * torch.trace(cov_q) + var_q)
        a_expected = averaging_closed_form(m, cov_c, cov_q, s, var_c, var_q)
        assert abs(zero[m][0] - z_expected) < 4 * zero[m][1], (spec, m, zero[m], z_expected)
        assert abs(avg[m][0] - a_expected) < 4 * avg[m][1], (spec, m, avg[m], a_expected)


def test_query_in_context_matches_its_closed_form(task):
    """x_q = x_j, one of the m context points (Σ = I): E|x_jᵀ(S − I)w|² from χ² moments of r = |x_j|²
    and E R² = (m−1)(m+d) I for R the other points' scatter."""
    d = D
    avg = errors(task, "query_in_context", "averaging")
    zero = errors(task, "query_in_context", "zero")
    for m in GRID:
        expected = (d * (d + 2) * (d + 4) / m**2 - 2 * d * (d + 2) / m + d
                    + 2 * (m - 1) / m * (d * (d + 2) / m - d) + (m - 1) * (m + d) * d / m**2)
        assert abs(avg[m][0] - expected) < 4 * avg[m][1], (m, avg[m], expected)
        assert abs(zero[m][0] - d) < 4 * zero[m][1]


def test_ols_is_equivariant_under_the_task_scale(task):
    """The same draws with w → c·w: OLS predicts c times as much, so its error is c² times as large."""
    family, c = family_of(task), 3.0
    base = dict(family.prompts(task, *parse_shift(task, "none"), GRID, 500, SEED))
    scaled = dict(family.prompts(task, *parse_shift(task, f"scale_y={c}"), GRID, 500, SEED))
    for m in GRID:
        ols = ESTIMATORS["ols"](task)
        assert torch.allclose(ols(scaled[m]), c * ols(base[m]), rtol=1e-6, atol=1e-9)
        assert torch.allclose(family.score(ols(scaled[m]), scaled[m]), c**2 * family.score(ols(base[m]), base[m]),
                              rtol=1e-6, atol=1e-12)


def _lsa_at(task, B):
    """A one-layer LSA whose ZFB blocks give ŷ = hᵀBx_q (v = 1, U = B)."""
    model = LSA(LSAConfig(), task, [0], dtype=torch.float64)
    with torch.no_grad():
        model.w_pv[0].zero_()
        model.w_pv[0][:, D, D] = 1.0
        model.w_kq[0].zero_()
        model.w_kq[0][:, :D, :D] = B
    return model


@pytest.mark.parametrize("spec", ["skewed=3", "scale_x=0.5"])
def test_lsa_at_the_limit_has_the_shifted_risk_and_not_the_unshifted_one(task, spec):
    """Monte-Carlo error of ŷ = hᵀB*x_q on the shifted prompts vs R(B*) with the shifted Λ′ (within
    the sampling error); the unshifted Λ (the negative control) is far outside it."""
    N = task.config.n_points
    B = theory.optimal_matrix(task.covariance, N)
    model, family = _lsa_at(task, B), family_of(task)
    shift, value = parse_shift(task, spec)
    shifted = torch.diag(skewed_eigenvalues(task, value)) if shift.name == "skewed" else value**2 * task.covariance
    for m, batch in family.prompts(task, shift, value, [N, 2 * N], PROMPTS, SEED):
        with torch.no_grad():
            loss = family.score(model(batch), batch)[0]
        mean, se = float(loss.mean()), float(loss.std() / math.sqrt(loss.numel()))
        assert abs(mean - float(theory.risk(B, shifted, N, n_test=m))) < 4 * se
        assert abs(mean - float(theory.risk(B, task.covariance, N, n_test=m))) > 10 * se


@pytest.mark.parametrize("text, message", [
    ("skewd", "unknown shift 'skewd' for the linear-regression task (did you mean 'skewed'?); allowed: "),
    ("skewed=-1", "shift 'skewed': p must be a number ≥ 0 and ≤ 20 (got '-1')"),
    ("scale_x=0", "shift 'scale_x': c must be a number > 0"),
    ("length", "shift 'length' needs a value: --shift length=M"),
    ("length=2.5", "shift 'length': M must be an integer ≥ 1"),
    ("orthogonal_query=4", "shift 'orthogonal_query': k must be an integer ≥ 1 and ≤ 3 (got '4')"),
    ("query_in_context=1", "shift 'query_in_context' takes no value"),
    ("noise=nan", "shift 'noise': sigma must be a number ≥ 0"),
])
def test_bad_shift_is_one_sentence(task, text, message):
    with pytest.raises(UsageError) as err:
        parse_shift(task, text)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_every_family_lists_none_and_the_issue_s_shifts():
    lr = set(FAMILIES["linear-regression"].shifts)
    assert {"none", "skewed", "orthogonal_query", "query_in_context", "half_subspace", "scale_x", "scale_y",
            "noise", "length", "outliers"} <= lr
    assert {"alpha", "length"} <= set(FAMILIES["ngram-markov"].shifts)
    assert "ood" in set(FAMILIES["binary-classification"].shifts)


def test_ngram_and_classification_shifts_draw_the_shifted_prompts():
    """alpha=a draws π with the prior a (the batch records it); ood draws the task's OOD split."""
    from icldyn.tasks.binary_classification import BinaryClassificationConfig, BinaryClassificationTask
    from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramMarkovTask

    ng = NgramMarkovTask(NgramMarkovConfig(n_points=20))
    shift, value = parse_shift(ng, "alpha=2.5")
    [(L, b)] = list(family_of(ng).prompts(ng, shift, value, [20], 64, SEED))
    assert L == 20 and b.extras["alpha"] == 2.5 and b.x.shape[-1] == 20
    probs = torch.full((1, 64, ng.config.n_states), 1.0 / ng.config.n_states)
    assert torch.allclose(family_of(ng).score(probs, b), torch.full((1, 64), math.log(ng.config.n_states),
                                                                      dtype=torch.float64))
    cl = BinaryClassificationTask(BinaryClassificationConfig())
    shift, value = parse_shift(cl, "ood")
    assert value == cl.config.ood_s1
    [(m, b)] = list(family_of(cl).prompts(cl, shift, value, [cl.config.n_points - 1], 64, SEED))
    relevant, _ = cl.patterns("ood", value)
    # every OOD input lies in the span of the OOD relevant patterns plus the irrelevant ones
    assert b.x.shape[-2] == cl.config.n_points and relevant.shape[0] == cl.config.ood_relevant
