"""linreg-lsa's claims pass on a small converged run and fail on their negative controls. (That von
Oswald's construction is one GD step is a property of the theory, tested in test_theory_linreg.py.)"""

import pytest

import icldyn
from icldyn.api import recompute_claims
from icldyn.experiments import EXPERIMENTS
from icldyn.theory import linear_regression as theory

SMALL = {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1.0, 0.5, 0.25], "train.lr": 0.1,
         "train.steps": 2500, "train.n_records": 8, "train.eval_prompts": 100_000,
         "train.eval_prompts_during": 500, "sampled_check": False}


def by_id(claims):
    return {c["id"]: c for c in claims}


@pytest.fixture(scope="module")
def converged(tmp_path_factory):
    return icldyn.run("linreg-lsa", overrides=SMALL, out=tmp_path_factory.mktemp("lsa"))


def test_converged_run_passes_every_claim(converged):
    claims = by_id(converged.claims)
    assert all(c["passed"] for c in claims.values()), claims
    # the trained effective matrix is Γ⁻¹ (a closed form computed here, not by the experiment)
    B = converged.checkpoint()
    v, U = B["w_pv.0"][0, 3, 3], B["w_kq.0"][0, :3, :3]
    target = theory.optimal_matrix([1.0, 0.5, 0.25], 10)
    assert ((v * U).double() - target).norm() / target.norm() < 0.01


def test_untrained_model_fails(tmp_path):
    run = icldyn.run("linreg-lsa", overrides={**SMALL, "train.steps": 2, "train.eval_prompts": 5000}, out=tmp_path)
    claims = by_id(run.claims)
    for cid in ("test_loss_at_optimum", "vU_equals_gamma_inv", "aligns_with_preconditioned_gd"):
        assert claims[cid]["passed"] is False, cid


def test_claims_against_the_wrong_covariance_fail(converged, tmp_path):
    """The stored theory of the wrong Λ (isotropic instead of [1, 0.5, 0.25]) fails the limit-loss claim."""
    import shutil

    import pandas as pd
    import torch

    copy = tmp_path / "copy"
    shutil.copytree(converged.path, copy)
    n = SMALL["task.n_points"]
    wrong = torch.eye(3, dtype=torch.float64)
    rstar_half = 0.5 * float(theory.risk(theory.optimal_matrix(wrong, n), wrong, n))
    th = pd.read_parquet(copy / "theory.parquet")
    th.loc[th["name"] == "lsa_limit_loss", "value"] = rstar_half
    th.to_parquet(copy / "theory.parquet")
    claims = by_id(c.to_dict() for c in EXPERIMENTS["linreg-lsa"].claims(icldyn.load_run(copy)))
    assert claims["test_loss_at_optimum"]["passed"] is False
    assert claims["vU_equals_gamma_inv"]["passed"] is True  # measured during training, not from the theory file


def test_stored_theory_is_the_closed_form_limit(converged):
    """theory.parquet holds ZFB's B* = Γ⁻¹, Γ = (1 + 1/N)Λ + tr(Λ)/N·I (written out here), and ½·R(B*)
    (checked by Monte Carlo); the figure is drawn from the run directory."""
    import torch

    th = converged.theory.set_index("name")["value"]
    lam, n = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64), 10
    gamma_inv = 1 / ((1 + 1 / n) * lam + lam.sum() / n)
    for i in range(3):
        assert th[f"lsa_limit_matrix/{i}/{i}"] == pytest.approx(gamma_inv[i].item(), rel=1e-12)
        assert th[f"lsa_limit_matrix/{i}/{(i + 1) % 3}"] == 0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40_000, n + 1, 3, generator=g, dtype=torch.float64) * lam.sqrt()
    w = torch.randn(40_000, 3, generator=g, dtype=torch.float64)
    y = (x * w[:, None]).sum(-1)  # noiseless labels
    h = (y[:, :n, None] * x[:, :n]).mean(1)
    pred = (h * gamma_inv * x[:, n]).sum(-1)
    assert th["lsa_limit_loss"] == pytest.approx(0.5 * (pred - y[:, n]).pow(2).mean().item(), rel=0.03)
    assert (converged.path / "figures" / "overview.png").stat().st_size > 10_000


def test_error_curves_use_the_general_schema(converged):
    c = converged.curves
    assert set(c["x_name"]) == {"n_examples"} and set(c["metric"]) == {"mse"}
    assert set(c["predictor"]) >= {"lsa", "theory:lsa_limit", "preconditioned_gd", "ridge", "zero"}
    # the converged LSA sits on the theory's error curve at its training length N = 10
    at = c[c["x"] == 10].groupby("predictor")["value"].mean()
    assert at["lsa"] == pytest.approx(at["theory:lsa_limit"], rel=0.05)


def test_generic_init_fails_off_block_claim(tmp_path):
    over = {**SMALL, "model.init": "gaussian", "train.gradient": "sampled", "train.optimizer": "adam",
            "train.lr": 0.01, "train.steps": 3, "train.eval_prompts": 2000}
    claims = by_id(icldyn.run("linreg-lsa", overrides=over, out=tmp_path).claims)
    assert claims["off_blocks_stay_zero"]["passed"] is False


def test_claims_are_recomputed_from_files(converged):
    again = by_id(recompute_claims(converged.path))
    assert {k: v["measured"] for k, v in again.items()} == {k: v["measured"] for k, v in by_id(converged.claims).items()}


@pytest.mark.slow
def test_quick_preset_passes_every_claim(tmp_path):
    run = icldyn.run("linreg-lsa", out=tmp_path)
    assert all(c["passed"] for c in run.claims), [c for c in run.claims if not c["passed"]]
