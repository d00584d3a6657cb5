"""induction-ngram / induction-full: the split, the probes, the claim helpers, and negative controls."""

import numpy as np
import pytest
import torch

from icldyn import api
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS
from icldyn.analysis import induction as an
from icldyn.experiments import induction_claims as ic
from icldyn.models.induction import InductionSimplified, InductionSimplifiedConfig
from icldyn.probes.induction import induction_probe
from icldyn.tasks import TASKS, build_task
from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramMarkovTask, NgramSplitConfig, NgramSplitTask
from icldyn.probes.base import RecordContext

TINY = {"task.n_points": 20, "train.steps": 40, "train.dataset_size": 300, "train.batch_size": 300,
        "validation_size": 100, "train.n_records": 12, "train.eval_prompts": 200,
        "train.eval_prompts_during": 100, "train.checkpoint_every": 100, "info_draws": 300,
        "generalisation_lengths": [10, 20], "generalisation_prompts": 100, "compare_losses": False}


def tiny_run(tmp_path, exp="induction-ngram", **extra):
    return api.run(exp, "quick", {**TINY, **extra}, out=tmp_path)


def by_id(run):
    return {c["id"]: c for c in run.claims}


# -- the fixed dataset and its validation split ---------------------------------------------------

def test_validation_split_is_the_disjoint_tail_of_one_fixed_draw():
    cfg = NgramMarkovConfig(n_points=12)
    split = build_task(NgramSplitConfig(n_points=12, train_size=30, val_size=10), torch.float64)  # by its registry name
    assert isinstance(split, NgramSplitTask) and TASKS["ngram-markov-split"][1] is NgramSplitTask
    full = NgramMarkovTask(cfg, torch.float64).sample([0, 1], 0, 40, stream="fixed")
    train = split.sample([0, 1], 0, 30, stream="fixed")               # what the trainer asks for
    val = split.sample([0, 1], 0, 10, stream="val")
    assert train.x.shape == (2, 30, 12) and val.x.shape == (2, 10, 12)
    assert torch.equal(torch.cat([train.x, val.x], 1), full.x)       # one draw, split by index
    assert torch.equal(torch.cat([train.y, val.y], 1), full.y)
    assert torch.equal(val.extras["pi"], full.extras["pi"][:, 30:])
    # the eval stream (loss/test) is another draw altogether
    assert not torch.equal(split.eval_batch(10, 0).x[0], val.x[0])
    # fresh training sequences: validation comes from the then unused fixed stream
    fresh = NgramSplitTask(NgramSplitConfig(n_points=12, train_size=None, val_size=10), torch.float64)
    fixed10 = NgramMarkovTask(cfg, torch.float64).sample([0], 0, 10, stream="fixed")
    assert torch.equal(fresh.sample([0], 0, 10, stream="val").x, fixed10.x)
    with pytest.raises(UsageError, match="validation split"):
        split.sample([0], 0, 10, stream="val", n_points=5)


# -- the probe -------------------------------------------------------------------------------------

def test_probe_names_shapes_and_ablation_restores_the_model():
    cfg = NgramMarkovConfig(n_points=15)
    task = NgramMarkovTask(cfg)
    model = InductionSimplified(InductionSimplifiedConfig(), task, [0, 1])
    with torch.no_grad():
        model.a.fill_(3.0)
    val = task.sample([0, 1], 0, 50, stream="fixed")
    probe = induction_probe(None, task, lambda seeds, device: val, (1, 2))
    w0 = model.w.detach().clone()
    ctx = RecordContext(5, 5.0, model, task, task.eval_batch(20, 0), True, [0, 1])
    out = probe(ctx)
    assert torch.equal(model.w, w0)
    assert all(v.shape == (2,) for v in out.values())
    sel = torch.stack([out[f"probe/selector/{n}"] for n in model.subset_names])
    assert torch.allclose(sel.sum(0), torch.ones(2))
    for h in range(3):
        assert torch.allclose(sum(out[f"probe/rpe_mass/{h}/{j}"] for j in (1, 2, 3)), torch.ones(2))
    for name in ("loss/val", "loss/val/paper", "loss/val/code", "baseline/gih_model_a/paper",
                 "baseline/unigram/code", "baseline/ngram_bayes/paper", "baseline/gih/code",
                 "baseline/oracle/paper", "probe/head_ablation/2", "probe/a", "baseline/gih_best_a/paper",
                 "probe/gih_best_a/code"):
        assert name in out, name
    assert torch.equal(out["loss/val"], out["loss/val/paper"])
    # baselines on the same prompts as loss/val: the oracle beats the unigram
    assert (out["baseline/oracle/paper"] < out["baseline/unigram/paper"]).all()
    assert torch.equal(out["baseline/unigram"], out["baseline/unigram/paper"])  # the training loss's convention
    # the reported best a reproduces the reported best-GIH loss through the estimator itself
    from icldyn.estimators.ngram import NGRAM_ESTIMATORS
    from icldyn.models.induction import token_loss
    for k in ("paper", "code"):
        for e in range(2):
            b_e = type(val)(val.x[e:e + 1], val.y[e:e + 1], {"alpha": val.extras["alpha"]})
            a_e = float(out[f"probe/gih_best_a/{k}"][e])
            pred = NGRAM_ESTIMATORS["gih"](task, subset=[1, 2], a=a_e)(b_e)
            assert token_loss(pred, b_e.y, k).item() == pytest.approx(float(out[f"baseline/gih_best_a/{k}"][e]))
    # under −log(ŷ + ε) at L = 15 some targets never followed the matching history: an a → ∞ GIH pays
    # −log ε on them, so the best a is finite and beats a → ∞ by a clear margin; the code loss is bounded
    assert torch.isfinite(out["probe/gih_best_a/paper"]).all()
    assert (out["baseline/gih/paper"] > out["baseline/gih_best_a/paper"] + 0.1).all()
    assert (out["baseline/gih/code"] < out["baseline/unigram/code"]).all()
    # not final: no estimator baselines, no ablation
    ctx = RecordContext(1, 1.0, model, task, task.eval_batch(20, 0), False, [0, 1])
    assert "baseline/unigram/paper" not in probe(ctx) and "probe/head_ablation/0" not in probe(ctx)


# -- claim helpers on synthetic curves -------------------------------------------------------------

def test_a_growth_tells_logarithmic_from_saturating():
    t = np.logspace(0, 4, 60)
    slope, ratio = an.a_growth(t, 2.0 * np.log10(t) + 1)
    assert slope == pytest.approx(2.0) and ratio == pytest.approx(1.0)
    slope, ratio = an.a_growth(t, 6 * (1 - np.exp(-t / 30)))           # levels off (negative control)
    assert slope < ic.A_SLOPE_MIN
    _, ratio = an.a_growth(t, np.sqrt(t))                              # power-law growth: not logarithmic
    assert ratio > ic.A_RATIO[1]


def test_plateau_then_emergence_needs_an_acceleration():
    t = np.concatenate([[0.0], np.logspace(-3, 1, 50)])
    escape = 0.7 - 0.5 / (1 + np.exp(-(t - 1.0) / 0.1))                 # flat, then a sharp drop at t = 1
    found = an.plateau_then_emergence(t, escape)
    assert found["plateau"] is not None and found["drop"] is not None
    assert found["acceleration"] > ic.ACCELERATION_MIN
    smooth = 0.2 + 0.5 * np.exp(-t / 0.1)                              # looks the same on a log axis
    found = an.plateau_then_emergence(t, smooth)
    assert found["plateau"] is not None and found["acceleration"] <= 1.0 + 1e-9


# -- tiny runs: the claims are computed from the store, with negative controls -------------------

def test_tiny_run_writes_everything_and_claims_are_recomputable(tmp_path):
    run = tiny_run(tmp_path)
    names = set(run.metrics["name"])
    for n in ("loss/val", "loss/test", "probe/a", "probe/selector/1+2", "probe/rpe_mass/0/1",
              "baseline/gih/code", "baseline/gih_model_a/paper", "probe/head_ablation/1"):
        assert n in names, n
    assert set(run.theory["name"]) >= {"info/modified/1+2", "info/chi2/1+2", "s_star/0", "s_star/1", "margin_z"}
    cv = run.curves
    combos = set(zip(cv["predictor"], cv["metric"], cv["alpha"]))
    assert {("model", "paper_loss", 0.1), ("gih", "code_loss", 1.0), ("oracle", "paper_loss", 1.0)} <= combos
    assert set(cv["x_name"]) == {"n_examples"} and sorted(set(cv["x"])) == [10, 20]
    ids = by_id(run)
    for key in ("s_star_is_parents", "selector_on_s_star", "copier_on_parents", "heads_outside_s_star_do_not_matter",
                "a_grows_logarithmically", "stage_order", "val_at_gih_level", "val_far_below_unigram",
                "val_close_to_bayes", "generalises"):
        assert key in ids, key
        assert ids[key]["measured"] is not None or ids[key]["note"], key
    assert ids["s_star_is_parents"]["passed"]
    assert {p.name for p in (run.path / "figures").iterdir()} == {"dynamics.png", "rpe.png", "generalisation.png",
                                                              "closing.png", "closing.md"}
    again = api.recompute_claims(run.path)
    assert [c["measured"] for c in again] == [c["measured"] for c in run.claims]


def test_untrained_model_fails_the_learning_claims(tmp_path):
    run = tiny_run(tmp_path, **{"train.steps": 2, "train.lr": 1e-9})
    ids = by_id(run)
    for key in ("selector_on_s_star", "copier_on_parents", "heads_outside_s_star_do_not_matter",
                "a_grows_logarithmically", "val_at_gih_level", "val_far_below_unigram", "val_close_to_bayes",
                "generalises"):
        assert ids[key]["passed"] is not True, key


def test_untrained_model_is_far_from_the_gih_at_every_length(tmp_path):
    # the reference is GIH(S*, a → ∞) in the code loss, not a GIH that follows the model's a ≈ 0
    claim = by_id(tiny_run(tmp_path, **{"train.steps": 2, "train.lr": 1e-9}))["generalises"]
    assert claim["passed"] is False and claim["measured"] > 0.5
    assert set(claim["details"]["paper_relative_gap_to_gih_with_model_a_by_L"])  # reported, not judged


def test_a_that_never_moves_fails_a_grows(tmp_path):
    # negative control that yields False, not None: c and w train, a is frozen at its init
    run = tiny_run(tmp_path, **{"train.stages": [{"params": ["c", "w"], "steps": 40}]})
    claim = by_id(run)["a_grows_logarithmically"]
    assert claim["passed"] is False and claim["measured"] == pytest.approx(0.0, abs=1e-9)


def test_reversed_stages_fail_the_stage_order(tmp_path):
    stages = [{"params": ["a"], "steps": 40}, {"params": ["w"], "steps": 40}, {"params": ["c"], "steps": 40}]
    run = tiny_run(tmp_path, **{"train.steps": 120, "train.stages": stages, "train.n_records": 30})
    claim = by_id(run)["stage_order"]
    t = claim["details"]
    assert t["t_classifier"][0] < t["t_copier"][0] < t["t_selector"][0]
    assert claim["passed"] is False
    # staged training moved only the named group in each stage
    a = run.metric("probe/a")
    assert a[a["step"] >= 40]["value"].nunique() == 1


def test_s_star_differs_from_a_parent_set_larger_than_the_selector_allows(tmp_path):
    run = tiny_run(tmp_path, **{"task.parents": [1, 2, 3], "train.steps": 2})
    claim = by_id(run)["s_star_is_parents"]
    assert claim["passed"] is False and len(claim["details"]["s_star"].split("+")) <= 2


def test_full_model_untrained_fails_claim_6(tmp_path):
    run = tiny_run(tmp_path, "induction-full", **{"train.steps": 2, "train.lr": 1e-9})
    ids = by_id(run)
    # tied weights 1/6: no subset holds a majority (not: argmax happens to pick `1`)
    assert ids["full_selector_subset"]["passed"] is False
    assert ids["full_selector_subset"]["details"]["ends_on"] == ["none"]
    assert ids["full_plateau_then_emergence"]["passed"] is False
    assert (run.path / "figures" / "full.png").exists()


def test_full_model_with_its_selector_on_a_wrong_subset_fails(tmp_path, monkeypatch):
    """Negative control: the selector is set on 1+3 (c = 1 there, 0.01 elsewhere) and barely trains."""
    from icldyn.models import induction as models

    init = models.InductionFull.__init__

    def wrong_selector(self, *args, **kw):
        init(self, *args, **kw)
        with torch.no_grad():
            self.c[:, self.subset_names.index("1+3")] = 1.0

    monkeypatch.setattr(models.InductionFull, "__init__", wrong_selector)
    claim = by_id(tiny_run(tmp_path, "induction-full", **{"train.steps": 2, "train.lr": 1e-6}))["full_selector_subset"]
    assert claim["passed"] is False and claim["details"]["ends_on"] == ["1+3"] and claim["measured"] < 0.01


def test_configs_and_presets():
    exp = EXPERIMENTS["induction-ngram"]
    cfg = exp.config("quick")
    assert cfg.train.dataset_size + cfg.validation_size == 10_000 and cfg.train.batch_size >= cfg.train.dataset_size
    single = {"compare_losses": False, "code_variant": False, "ingredients": False}
    assert exp.variants(cfg) == {"loss=paper": {"model.loss": "paper", **single},
                                 "loss=code": {"model.loss": "code", **single}}
    assert exp.config("paper").train.steps == 50_000
    # the paper presets add the authors' code-faithful run; the runs they made before keep their hashes
    for name, old_names in (("induction-ngram", ["loss=paper", "loss=code"]), ("induction-full", ["fidelity=paper"])):
        e = EXPERIMENTS[name]
        paper = e.config("paper")
        before = paper.model_copy(update={"code_variant": False})
        variants = e.variants(paper)
        assert set(variants) == {*old_names, "fidelity=code"}
        for v in old_names:
            ov = {k: val for k, val in variants[v].items() if k != "code_variant"}
            assert (e.config("paper", variants[v]).config_hash()
                    == (e.config("paper", ov).model_copy(update={"code_variant": False}).config_hash()))
        assert e.variants(before) == (None if name == "induction-full" else e.variants(e.config("quick")))
        code = e.config("paper", variants["fidelity=code"]).model
        assert code.fidelity == "code" and code.loss == "code"
    assert "code_variant" not in str(cfg.config_hash()) and cfg.config_hash() == cfg.model_copy().config_hash()
    staged = exp.config("quick", {"train.stages": [{"params": ["c"], "steps": 1000}, {"params": ["w"], "steps": 1000},
                                                   {"params": ["a"], "steps": 1000}]})
    assert [s.params for s in staged.train.stages] == [["c"], ["w"], ["a"]]
    full = EXPERIMENTS["induction-full"].config("quick")
    assert full.model.name == "induction-full" and (full.model.w_plus, full.model.w_minus) == (1.0, 0.01)
    with pytest.raises(UsageError, match="validation_size"):
        exp.config("quick", {"validation_size": 0})


# -- the quick presets, end to end -----------------------------------------------------------------

# Where our reconstruction contradicts the paper, the claim fails, and the test pins that finding:
# under the paper's −log(ŷ + ε) loss a levels off at a finite value (≈ 6); it grows ∝ log t only
# under the authors' bounded code loss (spec claim 3 holds there). The full model's loss falls from
# the first step, under full-batch GD and under Adam at lr 1e-3 alike: no plateau then emergence.
KNOWN_CONTRADICTIONS = {"induction-ngram": {"a_grows_logarithmically[paper]"},
                        "induction-full": {"full_plateau_then_emergence"}}


@pytest.mark.slow
@pytest.mark.parametrize("exp", ["induction-ngram", "induction-full"])
def test_quick_preset(tmp_path, exp):
    run = api.run(exp, "quick", out=tmp_path)
    for c in run.claims:
        if c["id"] in KNOWN_CONTRADICTIONS[exp]:
            assert c["passed"] is False and c["measured"] is not None and c["note"], c
            if c["id"] == "a_grows_logarithmically[paper]":
                assert "holds for the bounded code loss" in c["statement"] and "finite" in c["note"]
        else:
            assert c["passed"] is True, c


def test_generalisation_curves_read_the_general_and_the_legacy_schema(tmp_path):
    """curves.parquet rows as written now (predictor, metric `<loss>_loss`, condition alpha) and as runs
    stored before the general schema wrote them (predictor `<name>/<loss>/alpha=<α>`) read alike."""
    import pandas as pd

    from icldyn.store import Run, general_curves

    cfg = EXPERIMENTS["induction-ngram"].config("quick", {"n_seeds": 2})
    rows = [("model", L, kind, alpha, seed, 10 * L + seed + (kind == "code") + alpha)
            for L in (10, 20) for kind in ("paper", "code") for alpha in (0.1, 1.0) for seed in (0, 1)]
    new = pd.DataFrame([(n, "n_examples", L, f"{k}_loss", v, 0.0, s, a) for n, L, k, a, s, v in rows],
                       columns=["predictor", "x_name", "x", "metric", "value", "stderr", "seed", "alpha"])
    old = general_curves(pd.DataFrame([(f"{n}/{k}/alpha={a:g}", L, v, 0.0, s) for n, L, k, a, s, v in rows],
                                      columns=["predictor", "n_examples", "mse", "stderr", "seed"]))
    empty = pd.DataFrame()
    for curves in (new, old):
        run = Run(tmp_path, cfg, empty, curves, empty, [], {})
        seed1 = an.generalisation_curve(run, "model", "code", 1.0, seed=1)
        assert seed1.to_dict() == {10: 103.0, 20: 203.0}
        assert an.generalisation_curve(run, "model", "paper", 0.1).to_dict() == pytest.approx({10: 100.6, 20: 200.6})
        assert an.generalisation_curve(run, "gih", "paper", 0.1).empty


# -- which ingredient makes the full model's plateau (preset `ingredients`) ------------------------

def _ingredient_rows(stalling: set[str]) -> "pd.DataFrame":
    import pandas as pd

    views = ["[paper]", "[code]"] + [f"[{b}{x}]" for x in ("window", "loss") for b in ("paper+", "code-")]
    return pd.DataFrame({"view": views, "flat": [v in stalling for v in views],
                         "plateau_then_drop": [False] * len(views)})


def test_ingredient_claim_names_the_ingredient_that_is_necessary_and_sufficient(monkeypatch):
    spec = next(s for s in ic.FULL.specs if s.id == "full_plateau_ingredient")
    # the authors' run stalls; it stops without `loss`, and `loss` alone makes the paper model stall
    monkeypatch.setattr(an, "ingredient_table", lambda run: _ingredient_rows({"[code]", "[code-window]", "[paper+loss]"}))
    claim = spec.evaluate(object())
    assert claim.passed and claim.measured == 1.0 and "necessary (off alone ends the stall): loss" in claim.note
    # negative control: every run of the authors' stalls whatever is switched off, no paper run stalls
    monkeypatch.setattr(an, "ingredient_table", lambda run: _ingredient_rows({"[code]", "[code-window]", "[code-loss]"}))
    claim = spec.evaluate(object())
    assert not claim.passed and claim.measured == 0.0
    # not an ingredients run: the claim is left out
    monkeypatch.setattr(an, "ingredient_table", lambda run: _ingredient_rows(set()).iloc[2:])
    assert spec.evaluate(object()) is None


def test_ingredient_variants_switch_one_thing_each():
    from icldyn.experiments.induction import CODE_FULL, ingredient_variants

    exp = EXPERIMENTS["induction-full"]
    v = ingredient_variants()
    assert len(v) == 2 + 2 * 7
    paper, code = exp.config("quick").model, exp.config("quick", v["ingredient=code"]).model
    assert code.parts() == frozenset({"window", "selector", "double_norm", "init"}) and paper.parts() == frozenset()
    for name, ov in v.items():
        m = exp.config("ingredients", ov).model
        base = paper if "paper" in name else code
        diff = {k for k in type(m).model_fields if getattr(m, k) != getattr(base, k)}
        if name.endswith("w_init"):
            assert diff == {"w_plus", "w_minus"}
        elif name in ("ingredient=paper", "ingredient=code"):
            assert diff == set()
        else:
            assert len(diff) == 1 or (diff == {"code_parts"} and len(m.parts() ^ base.parts()) == 1), (name, diff)
    assert exp.config("ingredients").train.lr == CODE_FULL["train.lr"]


def test_unmeasured_generalisation_keeps_one_view_suffix(tmp_path):
    """A run without curves gives `generalises[<view>]` not measured, with the view suffix once."""
    import pandas as pd

    run = tiny_run(tmp_path, compare_losses=True)
    for view in run.variants.values():
        view.curves = pd.DataFrame()
    claims = [c for c in ic.NGRAM.evaluate(run) if c.id.startswith("generalises")]
    assert sorted(c.id for c in claims) == [f"generalises[{v.split('=')[1]}]" for v in sorted(run.variants)]
    assert all(c.passed is None for c in claims)
