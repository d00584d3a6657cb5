"""`icldyn diagnose`: the LLC against closed forms, its reproducibility on the LSA at the ZFB optimum,
and essential dynamics against the measured mode crossings of linear-exact-dynamics (with a
shuffled-checkpoint negative control). devinterp (the extra `diagnose`) is installed by `make test`.

Closed forms used (tempered posterior p(w) ∝ exp(−nβ L(w)), no localisation or a negligible one):
- a quadratic L = ½ Σ h_j w_j² (a regular model, e.g. least squares at its optimum):
  nβ (E L − L*) = d/2 exactly, for any curvatures h_j;
- a quartic L = Σ w_j⁴: ∫ w⁴ e^{−a w⁴} / ∫ e^{−a w⁴} = 1/(4a) per coordinate, so λ = d/4 (a
  singular model whose λ is not the parameter count over two).
"""

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import icldyn
from icldyn import api
from icldyn.analysis import essential_dynamics as ed
from icldyn.analysis.diagnose import final_llc, recorded_outputs
from icldyn.analysis.exact_dynamics import mode_crossings
from icldyn.cli import app
from icldyn.diagnose import DiagnoseSettings, EssentialSettings, diagnose, parse_settings
from icldyn.diagnose.core import essential_frame, outputs_over_checkpoints
from icldyn.errors import UsageError
from icldyn.experiments.exact_dynamics import _train_overrides
from icldyn.models.lsa import LSA, LSAConfig
from icldyn.probes import PROBES
from icldyn.probes.base import RecordContext
from icldyn.probes.llc import LLCSettings, model_llc, sample_llc
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.theory.linear_regression import zfb_limit
from icldyn.train.schedule import time_at
from icldyn.trained import load_trained

pytest.importorskip("devinterp")

LLC_TOLERANCE = 0.15      # the bound for closed-form learning coefficients
SEED_AGREEMENT = 0.20     # the bound for two sampler seeds on the LSA
# A stage point (maximum speed in ln t) against a mode's ½-crossing: for a logistic switch-on in ln t
# they coincide; for an exponential relaxation b = 1 − e^{−t/τ} the speed t·db/dt peaks at t = τ,
# where b = 1 − 1/e, while b = ½ at τ ln 2: a factor 1/ln 2 ≈ 1.44 apart. So: within a factor 1.5.
STAGE_FACTOR = 1.5


class Params(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w.clone())


def closed_form_llc(loss_of_w, d, chains=16, **settings):
    model = Params(torch.zeros(chains, d, dtype=torch.float64))
    s = LLCSettings(chains=chains, n_prompts=1024, **settings)
    return sample_llc(model, lambda index: loss_of_w(model.w), 1, s), s


def test_llc_of_a_regular_model_is_half_its_dimension():
    # least squares in d = 6 at its optimum, written around w* (L − L* = ½ δᵀ H δ, H = XᵀX/n)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1024, 6, generator=g, dtype=torch.float64) * torch.linspace(0.5, 1.5, 6, dtype=torch.float64)
    H = X.T @ X / 1024
    res, _ = closed_form_llc(lambda w: 0.5 * ((w @ H) * w).sum(1), 6, lr=1e-3, localization=0.5,
                             draws=600, burnin=200)
    assert abs(res.llc[0] - 3.0) < LLC_TOLERANCE * 3.0, res.llc


def test_llc_of_a_quartic_is_a_quarter_per_coordinate_and_not_half():
    # negative control of "LLC = parameters / 2": a singular potential has a smaller coefficient
    res, _ = closed_form_llc(lambda w: w.pow(4).sum(1), 4, lr=2e-3, localization=0.0, draws=2000, burnin=300)
    assert abs(res.llc[0] - 1.0) < LLC_TOLERANCE * 1.0, res.llc
    assert abs(res.llc[0] - 2.0) > LLC_TOLERANCE * 2.0


def test_mixed_quadratic_and_quartic_directions_add():
    res, _ = closed_form_llc(lambda w: 0.5 * w[:, :2].pow(2).sum(1) + w[:, 2:].pow(4).sum(1), 4, lr=2e-3,
                             localization=0.1, draws=2000, burnin=300)
    assert abs(res.llc[0] - 1.5) < LLC_TOLERANCE * 1.5, res.llc


@pytest.fixture(scope="module")
def zfb_lsa():
    """A one-layer LSA (d = 3, N = 20, Λ = diag(1, .25, .0625)) set at ZFB's limit, float64."""
    tc = LinearRegressionConfig(d=3, n_points=20, covariance="anisotropic", eigenvalues=[1.0, 0.25, 0.0625])
    task = LinearRegressionTask(tc, torch.float64)
    v, U = zfb_limit(torch.diag(torch.tensor(tc.eigenvalues, dtype=torch.float64)), tc.n_points)
    pv, kq = torch.zeros(1, 4, 4, dtype=torch.float64), torch.zeros(1, 4, 4, dtype=torch.float64)
    pv[0, 3, 3], kq[0, :3, :3] = v, U
    build = lambda m: LSA(LSAConfig(), task, list(range(m)), torch.float64)  # noqa: E731
    return task, build, {"w_pv.0": pv, "w_kq.0": kq}


def test_lsa_llc_at_the_zfb_optimum_agrees_across_sampler_seeds(zfb_lsa):
    task, build, params = zfb_lsa
    batch = task.eval_batch(1024, 20_201)
    a, b = (model_llc(build, params, batch, LLCSettings(seed=s)).llc[0] for s in (0, 1))
    assert abs(a - b) < SEED_AGREEMENT * 0.5 * (a + b), (a, b)
    # a learning coefficient lies in (0, parameters / 2] at a minimum (32 parameters here)
    assert 0 < a <= 16 and 0 < b <= 16


def test_lsa_llc_at_the_saddle_is_negative(zfb_lsa):
    # negative control: at the origin (a saddle, not a minimum) SGLD runs downhill, λ̂ < 0
    task, build, params = zfb_lsa
    batch = task.eval_batch(1024, 20_201)
    zero = {k: v * 1e-3 for k, v in params.items()}
    assert model_llc(build, zero, batch, LLCSettings()).llc[0] < 0


def test_a_diverging_chain_gives_nan_not_a_number():
    res, _ = closed_form_llc(lambda w: 0.5 * 1e4 * w.pow(2).sum(1), 2, chains=2, lr=1.0, draws=50, burnin=0)
    assert np.isnan(res.llc).all() and np.isnan(res.traces[0, 0, -1])


# -- essential dynamics -------------------------------------------------------------------------
def logistic_stages(t, centres, width=0.3):
    """z (T, k): stage i moves the curve along axis i by a logistic step in ln t centred at t_i."""
    x = np.log(t)[:, None]
    return 1 / (1 + np.exp(-(x - np.log(centres)[None, :]) / width))


def test_stage_points_of_logistic_stages_are_their_midpoints():
    t = np.logspace(-1, 3, 400)
    centres = np.array([1.0, 10.0, 100.0])
    z = logistic_stages(t, centres) * np.array([3.0, 1.0, 0.2])   # unequal sizes: PCA must not matter
    proj, explained = ed.pca_trajectory(z @ np.random.default_rng(0).normal(size=(3, 50)))
    assert explained.sum() == pytest.approx(1.0)
    ev = ed.events(t, proj)
    assert len(ev["speed_peak"]) == 3
    assert ed.matched_offsets(ev["speed_peak"], centres).max() < 0.05
    # corners between the stages: one turning point between each pair of stages
    assert len(ev["turn"]) == 2
    assert all(a < tt < b for tt, a, b in zip(ev["turn"], centres[:-1], centres[1:]))


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory):
    """A small staged linear-exact-dynamics run (λ = (1, .25, .0625), σ₀ = 10⁻², 80 records, to t = 2000)."""
    over = {"role": "staged", "model.init_scale": 1e-2, "train.n_records": 80, "train.eval_prompts": 2000,
            "train.eval_prompts_during": 500, "train.checkpoint_every": 100_000,
            **_train_overrides([(8.0, 0.01), (2000.0, 0.2)])}
    return icldyn.run("linear-exact-dynamics", overrides=over, out=tmp_path_factory.mktemp("staged"))


def stage_check(t, crossings):
    """Exactly one stage point per mode crossing, each within STAGE_FACTOR of its crossing."""
    return len(t) == len(crossings) and bool((ed.matched_offsets(t, crossings) < np.log(STAGE_FACTOR)).all())


def test_stage_points_coincide_with_the_mode_crossings(staged_run):
    res = diagnose(staged_run.path, llc=False, essential_dynamics=True)
    crossings = mode_crossings(staged_run, range(3))[0]
    stages = np.array(res.summary["essential_dynamics"]["0"]["speed_peak"])
    print("mode crossings", crossings, "stage points", stages, "turns", res.summary["essential_dynamics"]["0"]["turn"])
    assert stage_check(stages, crossings)
    files = {p.name for p in res.files}
    assert {"essential_dynamics.parquet", "essential_dynamics.png", "diagnose.yaml", "summary.json"} <= files


def test_shuffled_checkpoints_break_the_coincidence(staged_run):
    trained = load_trained(staged_run.path)
    steps = trained.run.checkpoint_steps
    times = time_at(trained.config.train, steps)
    settings = EssentialSettings()
    outputs = outputs_over_checkpoints(trained, steps, settings)
    crossings = mode_crossings(staged_run, range(3))[0]
    perm = np.random.default_rng(0).permutation(outputs.shape[1])
    _, summary = essential_frame(outputs[:, perm], steps, times, trained.seeds, settings)
    assert not stage_check(np.array(summary["0"]["speed_peak"]), crossings)


def test_llc_over_checkpoints_writes_its_files_and_the_run_stays_whole(staged_run):
    settings = parse_settings(["llc.draws=20", "llc.burnin=5", "llc.chains=2", "llc.n_prompts=128",
                               "max_checkpoints=3"])
    res = diagnose(staged_run.path, llc=True, essential_dynamics=False, settings=settings)
    assert len(res.llc) == 3 and set(res.llc.columns) >= {"step", "time", "seed", "llc", "llc_std"}
    traces = pd.read_parquet(res.path / "llc_traces.parquet")
    assert len(traces) == 3 * 1 * 2 * 25 and traces["burnin"].sum() == 3 * 2 * 5
    assert final_llc(staged_run.path) == pytest.approx(res.llc["llc"].iloc[-1])
    assert api.check(staged_run.path).state == "complete"
    row = api.runs(staged_run.path.parent).iloc[0]
    assert row["llc_final"] == pytest.approx(res.llc["llc"].iloc[-1])
    page = api.report(staged_run.path).read_text()
    assert "Diagnostics" in page and "diagnose/llc.png" in page


def test_cli_refuses_bad_input(staged_run, monkeypatch):
    runner = CliRunner()
    r = runner.invoke(app, ["diagnose", str(staged_run.path)])
    assert r.exit_code == 2 and "--llc" in r.output
    r = runner.invoke(app, ["diagnose", str(staged_run.path), "--essential-dynamics", "--set", "llc.draws=-1"])
    assert r.exit_code == 2 and "llc.draws" in r.output
    monkeypatch.setitem(__import__("sys").modules, "devinterp.optim", None)
    r = runner.invoke(app, ["diagnose", str(staged_run.path), "--llc"])
    assert r.exit_code == 2 and "pip install 'icldyn[diagnose]'" in r.output


def test_settings_reject_unknown_keys():
    with pytest.raises(UsageError, match="llc"):
        parse_settings(["llc.step_size=1"])
    assert DiagnoseSettings().llc.nbeta() == pytest.approx(1024 / np.log(1024))


# -- the probes ----------------------------------------------------------------------------------
def test_probes_record_llc_and_outputs(zfb_lsa):
    task, build, params = zfb_lsa
    model = build(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    config = type("C", (), {"model": LSAConfig()})()
    ctx = RecordContext(step=1, time=1.0, model=model, task=task, eval_batch=None, final=True, seeds=[0])
    out = PROBES["llc"](config, task, draws=20, burnin=5, n_prompts=128)(ctx)
    assert set(out) == {"probe/llc", "probe/llc_std"} and out["probe/llc"].shape == (1,)
    rec = PROBES["essential_dynamics"](config, task, n_prompts=8)(ctx)
    assert len(rec) == 8 and all(v.shape == (1,) for v in rec.values())


def test_recorded_outputs_pivot_back_to_a_trajectory():
    from types import SimpleNamespace

    rows = [{"step": s, "time": 0.1 * s, "seed": seed, "name": f"probe/essential_dynamics/{j}",
             "value": 100 * seed + 10 * s + j} for s in (1, 2, 3) for seed in (0, 1) for j in range(4)]
    steps, times, out = recorded_outputs(SimpleNamespace(metrics=pd.DataFrame(rows)))
    assert list(steps) == [1, 2, 3] and out.shape == (2, 3, 4)
    assert out[1, 2, 3] == 100 + 30 + 3
