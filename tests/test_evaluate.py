"""`icldyn evaluate`: results written beside a stored run without touching its files, claims of the LSA
under shift (a model at the theory's limit passes them; an untrained model and the unshifted Λ fail
them), the report and `icldyn runs` show the results, bad input is one sentence."""

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from icldyn import api, store
from icldyn.cli import app
from icldyn.errors import UsageError
from icldyn.evaluate import COLUMNS, evaluate_run
from icldyn.evaluate import claims as eval_claims
from icldyn.theory import linear_regression as theory

SHIFTS = ["skewed=6", "scale_y=3", "length=20"]


@pytest.fixture(scope="module")
def lsa_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate")
    overrides = {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1.0, 0.5, 0.25], "train.steps": 40,
                 "train.n_records": 6, "train.eval_prompts": 2000, "train.eval_prompts_during": 500,
                 "train.checkpoint_every": 20, "sampled_check": False}
    return api.run("linreg-lsa", "quick", overrides, seeds=2, out=out)


@pytest.fixture(scope="module")
def at_limit(lsa_run, tmp_path_factory):
    """A copy of the run whose last checkpoint holds the theory's limit B* = Γ⁻¹ (v = 1, U = B*)."""
    path = tmp_path_factory.mktemp("limit") / "run"
    shutil.copytree(lsa_run.path, path)
    run = api.load_run(path)
    step = run.checkpoint_steps[-1]
    params, meta = store.load_checkpoint(store.RunDir(path).checkpoint_path(step))
    t = run.config.task
    B = theory.optimal_matrix(t.eigenvalues, t.n_points).float()
    d = t.d
    params["param/w_pv.0"].zero_()
    params["param/w_pv.0"][:, d, d] = 1.0
    params["param/w_kq.0"].zero_()
    params["param/w_kq.0"][:, :d, :d] = B
    store.save_checkpoint(store.RunDir(path).checkpoint_path(step), params, meta)
    return path


def _hashes(path):
    return {p.relative_to(path): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()}


def _claims(ev):
    return {c["id"]: c for c in ev.claims}


def test_the_limit_passes_the_claims_under_shift(at_limit):
    ev = evaluate_run(at_limit, SHIFTS, estimators=[], figures=False)
    claims = _claims(ev)
    assert set(claims) == {f"lsa_risk[{s}]" for s in ["none"] + SHIFTS} | {"test_length_law[length=20]"}
    assert all(c["passed"] is True for c in claims.values()), [c["note"] for c in claims.values()]


def test_unshifted_lambda_fails_the_covariate_claim(at_limit, monkeypatch):
    """Negative control: the theory with the training Λ instead of the shifted Λ′."""
    monkeypatch.setattr(eval_claims, "shifted_covariance", lambda task, shift, value: task.covariance)
    claims = _claims(evaluate_run(at_limit, ["skewed=6"], estimators=[], figures=False))
    assert claims["lsa_risk[skewed=6]"]["passed"] is False and claims["lsa_risk[none]"]["passed"] is True


def test_an_untrained_model_fails_the_claims(lsa_run):
    """Negative control: the first checkpoint (barely trained from a small init) predicts ≈ 0."""
    ev = evaluate_run(lsa_run.path, SHIFTS, step=lsa_run.checkpoint_steps[0], estimators=[], figures=False)
    assert all(c["passed"] is False for c in ev.claims)
    assert ev.path.name.endswith(f"@step{lsa_run.checkpoint_steps[0]}")


def test_results_are_written_beside_the_run_without_touching_it(lsa_run):
    before = _hashes(lsa_run.path)
    ev = evaluate_run(lsa_run.path, ["skewed=2", "orthogonal_query"], prompts=400)
    after = _hashes(lsa_run.path)
    assert {k: v for k, v in after.items() if k in before} == before
    new = {str(k) for k in set(after) - set(before)}
    assert all(k.startswith("evaluate/") for k in new)
    folder = "evaluate/skewed=2+orthogonal_query=1"
    assert {f"{folder}/{f}" for f in ("curves.parquet", "claims.json", "evaluate.yaml",
                                      "figures/error_vs_examples.png")} <= new
    curves = pd.read_parquet(lsa_run.path / folder / "curves.parquet")
    assert list(curves.columns) == COLUMNS
    assert set(curves["shift"]) == {"none", "skewed=2", "orthogonal_query=1"}
    assert {"lsa", "zero", "ols", "averaging", "theory_lsa"} <= set(curves["predictor"])
    assert set(curves.loc[curves["predictor"] == "lsa", "seed"]) == {0, 1}
    assert api.check(lsa_run.path).state == "complete"
    assert ev.settings["prompts"] == 400


def test_the_unshifted_curve_is_the_run_s_own_error_curve(lsa_run):
    """`none` draws the experiment's own curve prompts (eval_seed + 1, 2N examples, cut at m): the LSA's
    rows equal those after_training wrote (a different code path) at every m."""
    ev = evaluate_run(lsa_run.path, ["scale_x=1"], estimators=[], figures=False)
    mine = ev.curves[(ev.curves["shift"] == "none") & (ev.curves["predictor"] == "lsa")]
    stored = lsa_run.curves if hasattr(lsa_run, "curves") else pd.read_parquet(lsa_run.path / "curves.parquet")
    stored = stored[stored["predictor"] == "lsa"]
    merged = mine.merge(stored, on=["x", "seed"], suffixes=("", "_run"))
    assert len(merged) == len(stored) > 0
    assert torch.allclose(torch.tensor(merged["value"].values), torch.tensor(merged["value_run"].values), rtol=1e-5)


def test_report_and_runs_show_the_evaluation(lsa_run):
    evaluate_run(lsa_run.path, ["scale_y=2"], prompts=300, estimators=["zero"])
    page = api.report(lsa_run.path).read_text()
    assert "Under distribution shift" in page and "evaluate/scale_y=2/figures/error_vs_examples.png" in page
    table = api.runs(lsa_run.path.parent.parent)
    row = table[table["path"] == str(lsa_run.path)].iloc[0]
    assert row["evaluations"] >= 1 and row["evaluation_claims"]


def test_bad_input_is_one_sentence_exit_2(lsa_run):
    r = CliRunner().invoke(app, ["evaluate", str(lsa_run.path), "--shift", "skewd"])
    assert r.exit_code == 2 and "unknown shift 'skewd'" in r.output and "allowed: " in r.output
    assert "Traceback" not in r.output
    r = CliRunner().invoke(app, ["evaluate", str(lsa_run.path), "--shift", "length=0"])
    assert r.exit_code == 2 and "M must be an integer ≥ 1" in r.output
    r = CliRunner().invoke(app, ["evaluate", str(lsa_run.path), "--shift", "none", "--step", "7"])
    assert r.exit_code == 2 and "step must be one of the stored checkpoints" in r.output
    with pytest.raises(UsageError, match="prompts must be an integer ≥ 2"):
        evaluate_run(lsa_run.path, ["none"], prompts=1)
    with pytest.raises(UsageError, match="unknown estimator"):
        evaluate_run(lsa_run.path, ["none"], estimators=["nope"])


def test_cli_happy_path_prints_claims_and_the_folder(at_limit):
    r = CliRunner().invoke(app, ["evaluate", str(at_limit), "--shift", "scale_x=2", "--prompts", "2000"])
    assert r.exit_code == 0, r.output
    assert "lsa_risk" in r.output and "evaluate/scale_x=2" in r.output.replace("\n", "")


@pytest.mark.slow
def test_quick_preset_lsa_passes_every_claim_under_shift(tmp_path):
    """End to end: the trained quick-preset LSA (population gradients) under covariate shift, task shift,
    label noise and a longer test length matches the theory's R(B*) of the shifted prompts."""
    run = api.run("linreg-lsa", "quick", {"sampled_check": False}, out=tmp_path)
    ev = evaluate_run(run.path, ["skewed=2", "scale_x=2", "scale_y=3", "noise=0.5", "length=60"])
    assert len(ev.claims) == 7 and all(c["passed"] is True for c in ev.claims), [c["note"] for c in ev.claims]



INDUCTION_TINY = {"task.n_points": 20, "train.steps": 40, "train.dataset_size": 300, "train.batch_size": 300,
                  "validation_size": 100, "train.n_records": 4, "train.eval_prompts": 200,
                  "train.eval_prompts_during": 100, "train.checkpoint_every": 100, "info_draws": 300,
                  "generalisation_lengths": [10, 20], "generalisation_prompts": 100, "compare_losses": False}


def test_induction_under_no_shift_reproduces_the_experiments_own_generalisation_curves(tmp_path):
    """induction-ngram draws its generalisation prompts from the n-gram shift family and scores the
    same baselines (the GIH at the run's S*): `icldyn evaluate --shift none` with as many prompts
    gives the experiment's stored paper_loss curve at the training α, value for value."""
    run = api.run("induction-ngram", "quick", INDUCTION_TINY, out=tmp_path)
    ev = evaluate_run(run.path, ["none"], prompts=run.config.generalisation_prompts, figures=False)
    mine = ev.curves.set_index(["predictor", "x"])["value"]
    c = run.curves
    own = c[(c["x_name"] == "n_examples") & (c["metric"] == "paper_loss") & np.isclose(c["alpha"], run.config.task.alpha)]
    own = own.replace({"predictor": {"model": run.config.model.name}}).set_index(["predictor", "x"])["value"]
    both = own.index.intersection(mine.index)
    assert len(both) == 5 * len(run.config.generalisation_lengths)          # the model and four baselines
    assert np.allclose(mine[both].to_numpy(), own[both].to_numpy(), rtol=1e-5, atol=1e-6)
