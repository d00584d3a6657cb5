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
