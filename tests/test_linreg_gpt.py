"""linreg-gpt: curves and claims, with an untrained model as the negative control."""

import pytest

import icldyn

TINY = {"task.d": 3, "task.n_points": 6, "model.n_layers": 1, "model.width": 16, "train.steps": 3,
        "train.eval_prompts": 2000, "train.eval_prompts_during": 200, "curve_prompts": 2000, "train.n_records": 3}


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    return icldyn.run("linreg-gpt", overrides=TINY, out=tmp_path_factory.mktemp("gpt"))


def test_curves_cover_every_predictor_and_prefix(untrained):
    c = untrained.curves
    assert set(c["predictor"]) >= {"gpt", "ols", "ridge", "averaging", "zero"}
    assert sorted(c[c.predictor == "gpt"]["x"]) == list(range(7))
    # noiseless OLS interpolates once it has d points: an independent fact the curves must show
    ols = c[c.predictor == "ols"].set_index("x")["value"]
    assert ols.loc[3:].max() < 1e-6 and ols.loc[0] > 1


def test_untrained_model_fails_every_claim(untrained):
    assert [cl["passed"] for cl in untrained.claims] == [False, False, False]


def test_figure_is_written(untrained):
    assert (untrained.path / "figures" / "overview.png").stat().st_size > 10_000


@pytest.mark.slow
def test_quick_preset_passes_every_claim(tmp_path):
    run = icldyn.run("linreg-gpt", out=tmp_path)
    assert all(c["passed"] for c in run.claims), [c for c in run.claims if not c["passed"]]


def test_error_curves_on_cut_prompts_estimate_the_causal_pass():
    """The two ways of evaluating a model (one causal pass at every prefix; the query of prompts cut to
    m examples) estimate the same error: checked with OLS standing in for a two-seed model."""
    import torch

    from icldyn.analysis.error_curves import error_curves
    from icldyn.estimators import ESTIMATORS
    from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask

    task = LinearRegressionTask(LinearRegressionConfig(d=3, n_points=8), dtype=torch.float64)
    batch = task.eval_batch(6000, 1)
    ols = ESTIMATORS["ols"](task)

    def model(b):
        return ols(b).expand(2, -1, -1)

    causal = error_curves(model, task, batch, name="m", seeds=[0, 1], estimators=["zero"], chunk=2500)
    cut = error_curves(model, task, batch, name="m", seeds=[0, 1], estimators=[], prefixes=[1, 2, 3, 8])
    assert set(causal["x_name"]) == {"n_examples"} and set(causal["metric"]) == {"mse"}
    assert sorted(set(cut["x"])) == [1, 2, 3, 8] and set(cut["seed"]) == {0, 1}
    a = causal[causal.predictor == "m"].set_index(["seed", "x"])
    b = cut.set_index(["seed", "x"])
    for key in b.index:
        tol = 4 * (a.loc[key, "stderr"] ** 2 + b.loc[key, "stderr"] ** 2) ** 0.5 + 1e-9
        assert abs(a.loc[key, "value"] - b.loc[key, "value"]) <= tol, key
    # d = 3 noiseless examples pin w down: OLS's error vanishes from there on, on both paths
    assert b.loc[(0, 3), "value"] < 1e-12 and b.loc[(0, 2), "value"] > 0.1
