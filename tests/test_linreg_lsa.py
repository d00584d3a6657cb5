"""linreg-lsa's claims pass on a small converged run and fail on their negative controls."""

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
    assert claims["von_oswald_equals_gd"]["passed"] is True  # independent of training


def test_claims_against_the_wrong_covariance_fail(converged, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(converged.path, copy)
    run = icldyn.load_run(copy)
    run.config = run.config.model_copy(update={"task": run.config.task.model_copy(update={"eigenvalues": [1.0, 1.0, 1.0]})})
    claims = by_id(c.to_dict() for c in EXPERIMENTS["linreg-lsa"].claims(run))
    assert claims["test_loss_at_optimum"]["passed"] is False


def test_generic_init_fails_off_block_claim(tmp_path):
    over = {**SMALL, "model.init": "gaussian", "train.gradient": "sampled", "train.optimizer": "adam",
            "train.lr": 0.01, "train.steps": 3, "train.eval_prompts": 2000}
    claims = by_id(icldyn.run("linreg-lsa", overrides=over, out=tmp_path).claims)
    assert claims["off_blocks_stay_zero"]["passed"] is False


def test_wrong_von_oswald_weights_fail(tmp_path, monkeypatch):
    original = theory.von_oswald_weights

    def sign_flipped(d, eta, dtype=None):
        w_pv, w_kq = original(d, eta)
        return -w_pv, w_kq  # von Oswald's W_V sign, read out without their sign flip

    monkeypatch.setattr(theory, "von_oswald_weights", sign_flipped)
    run = icldyn.run("linreg-lsa", overrides={**SMALL, "train.steps": 2, "train.eval_prompts": 5000}, out=tmp_path)
    assert by_id(run.claims)["von_oswald_equals_gd"]["passed"] is False


def test_claims_are_recomputed_from_files(converged):
    again = by_id(recompute_claims(converged.path))
    assert {k: v["measured"] for k, v in again.items()} == {k: v["measured"] for k, v in by_id(converged.claims).items()}


@pytest.mark.slow
def test_quick_preset_passes_every_claim(tmp_path):
    run = icldyn.run("linreg-lsa", out=tmp_path)
    assert all(c["passed"] for c in run.claims), [c for c in run.claims if not c["passed"]]
