"""induction-ngram / induction-full: the generalized induction head on in-context n-gram Markov
chains and its three stages (Chen, Sheen, Wang & Yang 2024, "Unveiling Induction Heads").

Data: the paper's fixed dataset, `train.dataset_size + validation_size` sequences (9,000 + 1,000)
drawn once per seed from the task's "fixed" stream and split by index: the trainer trains on the
first 9,000 (full-batch GD), `loss/val` and every baseline are measured on the last 1,000 — the
same prompts, disjoint from the training set by construction (the `ngram-markov-split` task,
`tasks/ngram_markov.py`). `loss/test` is
the trainer's usual held-out stream (fresh prompts shared by all seeds).

induction-ngram trains the simplified model twice from one command — under the paper's loss
−log(ŷ_y + ε) and under the authors' code loss (softmax cross-entropy of ŷ) — because claim 3
(a grows without bound) depends on it: under −log ŷ at finite L an a → ∞ induction head pays
−log ε whenever the target never followed the matching history, so a levels off at a finite
value; the bounded code loss has no such penalty. Claims are checked on both runs.

Staged training (the theory's split: c, then w, then a) is an option of the shared trainer:
  --set 'train.stages=[{params: [c], steps: 1000}, {params: [w], steps: 1000}, {params: [a], steps: 1000}]'
(at lr 1 with a frozen at 0.01 in the first stage the code-loss selector can settle on a wrong
subset; the claims say so).

induction-full trains jointly at lr 1e-3 (the spec) with full-batch GD, the optimizer of the
simplified model (the paper's appendix optimizer could not be confirmed here). Adam at lr 1e-3 was
tried on the quick preset (3,000 steps): its loss also falls from the first step and converges by
t ≈ 0.3 (peak/initial rate 1.5×, vs 2.3× under GD), so neither the optimizer nor the horizon
produces the paper's plateau then emergence; `full_plateau_then_emergence` fails and says why.

Init: RPE logits w+ = 1 on the preferred offset, w− = 0.01 elsewhere (mass 0.57 on it), the
flatter init of the authors' runs; with the spec's e.g. w+ = 3, w− = 0.1 (mass 0.90) the copier
has almost nothing left to learn and its slow late sharpening comes after a's growth.

Code-faithful variants (`code_variant: true`, set by both `paper` presets; `models/induction.py`
lists what `model.fidelity: code` changes): induction-ngram adds the run `fidelity=code` — the
authors' simplified-model run (their code loss, per-head windows, selector, w+ = 3, w− = 0.1,
c = a = 0.01, lr 1, 50,000 epochs) next to `loss=paper` / `loss=code` under the flat init, so
the copier and stage claims are reported for both inits; induction-full trains `fidelity=paper`
(the run it always made) and `fidelity=code` — the authors' full-model run (their code loss,
w+ = 1, w− = 0.01, Q = K = O = 0.01·I, l2 normalisation, lr 1e-3 full-batch GD, 10,000 epochs).
Claims of a code-faithful run carry the suffix `[code-faithful]`.

Which ingredient makes the authors' full-model plateau: `induction-full --preset ingredients` trains
the paper-faithful full model and the authors' run (lr 1e-3, full-batch GD, 1,000 epochs) and, for
each ingredient in which they differ (the code parts window, selector, double_norm, init of
`model.code_parts`; the loss; LayerNorm vs l2; and the spec's w+ = 3, w− = 0.1 instead of the shared
1, 0.01), the paper model with it switched on alone (`paper+X`) and the authors' run with it switched
off alone (`code-X`); `full_plateau_then_emergence` is measured on every one.
Data quirks of the authors' code we do not reproduce: their 10,000 sequences are split 90/10 at
random (ours by index — the same law, sequences being iid); the n-gram dataset version we could
read draws the target from π at a uniformly drawn context rather than at the sequence's own last
tokens (ours continues the chain); its first n−1 tokens are uniform, as ours.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import pandas as pd
import torch
from pydantic import Field

from icldyn.config import ExperimentConfig, TrainConfig
from icldyn.claims import Claim
from icldyn.experiments.base import Experiment
from icldyn.experiments.induction_claims import FULL, NGRAM
from icldyn.models import ModelConfig
from icldyn.models.induction import InductionFullConfig, InductionSimplifiedConfig, token_loss
from icldyn.probes import build_probes
from icldyn.probes.induction import LOSSES, gih_with_a
from icldyn.shifts import NONE, family_of
from icldyn.tasks import TaskConfig, build_task
from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramSplitConfig
from icldyn.theory.induction import selection_summary

BASELINES = ("unigram", "ngram_bayes", "gih", "oracle")
CURVE_ESTIMATORS = BASELINES  # what `icldyn evaluate` scores beside the model (see shift_estimators)
FLAT_RPE = {"w_plus": 1.0, "w_minus": 0.01}
# the authors' runs (RPE/train_simplified.py, RPE/train.py and their result-file names)
CODE_NGRAM = {"model.fidelity": "code", "model.loss": "code", "model.w_plus": 3.0, "model.w_minus": 0.1}
CODE_FULL = {"model.fidelity": "code", "model.loss": "code", "model.norm": "l2", "model.w_plus": 1.0,
             "model.w_minus": 0.01, "model.proj_init": 0.01, "train.lr": 1e-3, "train.steps": 10_000}
CODE_PARTS = ("window", "selector", "double_norm", "init")  # models.induction.CODE_PARTS
# the ingredients in which the paper-faithful full model (the experiment's default) and the authors'
# run (CODE_FULL) differ, each as (setting in the paper-faithful model, setting in the authors' run);
# the code parts are switched through model.code_parts. Both already use w+ = 1, w− = 0.01: the
# w± ingredient switches to the spec's w+ = 3, w− = 0.1 from either side.
INGREDIENTS = {"loss": ({"model.loss": "paper"}, {"model.loss": "code"}),
               "norm": ({"model.norm": "layernorm"}, {"model.norm": "l2"}),
               "w_init": ({"model.w_plus": 3.0, "model.w_minus": 0.1}, {"model.w_plus": 3.0, "model.w_minus": 0.1})}


def ingredient_variants() -> dict[str, dict]:
    """The single-ingredient ablations of the full model (preset `ingredients`): `paper+X` is the
    paper-faithful model with ingredient X of the authors' run switched on alone, `code-X` the
    authors' run with X switched off alone; `paper` and `code` are the two bases. Same lr, steps."""
    base_code = {k: v for k, v in CODE_FULL.items() if not k.startswith("train.")}
    out = {"ingredient=paper": {}, "ingredient=code": dict(base_code)}
    for part in CODE_PARTS:
        out[f"ingredient=paper+{part}"] = {"model.code_parts": [part]}
        out[f"ingredient=code-{part}"] = {**base_code, "model.code_parts": [p for p in CODE_PARTS if p != part]}
    for name, (paper, code) in INGREDIENTS.items():
        out[f"ingredient=paper+{name}"] = dict(code if name != "w_init" else paper)
        out[f"ingredient=code-{name}"] = {**base_code, **(paper if name != "w_init" else code)}
    return out


# -- configs ---------------------------------------------------------------------------------------
class InductionNgramConfig(ExperimentConfig):
    experiment: Literal["induction-ngram"] = "induction-ngram"
    task: TaskConfig = NgramMarkovConfig()
    model: ModelConfig = InductionSimplifiedConfig(**FLAT_RPE)
    train: TrainConfig = TrainConfig(optimizer="gd", lr=1.0, steps=3000, batch_size=9000, dataset_size=9000,
                                     n_records=40, eval_prompts=4000, eval_prompts_during=1000,
                                     checkpoint_every=1000)
    validation_size: int = Field(default=1000, gt=0, description="the held-out 10% of the fixed dataset")
    compare_losses: bool = Field(default=True, description="train under both losses (paper, code): two runs")
    info_draws: int = Field(default=4000, gt=10, description="Monte-Carlo draws of π for Ĩ(S)")
    generalisation_lengths: list[int] = Field(default=[25, 50, 100, 200, 400], min_length=1)
    generalisation_alpha: float = Field(default=1.0, gt=0, description="a prior α other than the training one")
    generalisation_prompts: int = Field(default=2000, gt=0)
    code_variant: bool = Field(default=False, description="also train the authors' code-faithful run "
                                                          "(variant fidelity=code; experiment doc)")
    ingredients: bool = Field(default=False, description="induction-full: train the single-ingredient "
                                                         "ablations between the paper-faithful and the authors' "
                                                         "full model (`ingredient_variants`)")
    unhashed_at_default: ClassVar[tuple[str, ...]] = ("code_variant", "ingredients")


class InductionFullExpConfig(InductionNgramConfig):
    experiment: Literal["induction-full"] = "induction-full"
    model: ModelConfig = InductionFullConfig(**FLAT_RPE)
    train: TrainConfig = TrainConfig(optimizer="gd", lr=1e-3, steps=3000, batch_size=9000, dataset_size=9000,
                                     n_records=50, eval_prompts=4000, eval_prompts_during=1000,
                                     checkpoint_every=1000)
    compare_losses: bool = False


# -- theory: Ĩ and S* ------------------------------------------------------------------------------
def info_for(config) -> dict:
    """Ĩ and I_χ² per subset, S* and its margin for this config (`theory.induction.selection_summary`)."""
    t, m = config.task, config.model
    return selection_summary(t.n_states, tuple(t.parents), float(t.alpha), m.window, m.max_degree, config.info_draws)


def theory_frame(config) -> pd.DataFrame:
    """theory.parquet rows (time 0: static values): info/<kind>/<subset>[/stderr], s_star/<k>, margin_z."""
    info = info_for(config)
    rows = []
    for kind in ("modified", "chi2"):
        for name, (mean, se) in info[kind].items():
            rows += [(0.0, f"info/{kind}/{name}", mean), (0.0, f"info/{kind}/{name}/stderr", se)]
    rows += [(0.0, f"s_star/{k}", float(s)) for k, s in enumerate(info["s_star"])]
    rows.append((0.0, "margin_z", info["margin_z"]))
    return pd.DataFrame(rows, columns=["time", "name", "value"])


# -- the experiments -------------------------------------------------------------------------------
class InductionNgram(Experiment):
    name = "induction-ngram"
    title = "Simplified two-layer transformer learns the generalized induction head in three stages"
    paper = "Chen, Sheen, Wang & Yang 2024"
    config_class = InductionNgramConfig
    time_target = "3 min on a 2-core CPU"
    quick_seconds = 40
    presets = {
        "quick": {},
        "paper": {"train.steps": 50_000, "train.n_records": 60, "train.eval_prompts": 20_000,
                  "train.checkpoint_every": 5000, "generalisation_prompts": 10_000, "info_draws": 20_000,
                  "code_variant": True},
    }
    code_overrides = CODE_NGRAM

    def build_task(self, config):
        """`ngram-markov-split`: the experiment's `ngram-markov` task with the fixed dataset's split."""
        split = NgramSplitConfig(**config.task.model_dump(exclude={"name"}), train_size=config.train.dataset_size,
                                 val_size=config.validation_size)
        return build_task(split, self.dtype(config))

    def variants(self, config):
        single = {"compare_losses": False, "code_variant": False, "ingredients": False}
        if config.ingredients:
            return {name: {**ov, **single} for name, ov in ingredient_variants().items()}
        out = {f"loss={k}": {"model.loss": k, **single} for k in LOSSES} if config.compare_losses else {}
        if config.code_variant:
            if not out:
                out["fidelity=paper"] = dict(single)
            out["fidelity=code"] = {**self.code_overrides, **single}
        return out or None

    def probes(self, config, task):
        s_star = info_for(config)["s_star"]
        validation = lambda seeds, device: task.sample(seeds, 0, config.validation_size, device=device,  # noqa: E731
                                                       stream="val")
        return build_probes(config, task, [("induction", {"validation": validation, "s_star": s_star,
                                                          "baselines": BASELINES})])

    def after_training(self, run_dir, config, task, model, device):
        run_dir.write_theory(theory_frame(config))
        run_dir.write_curves(generalisation_curves(config, task, model, device))

    def claims(self, run) -> list[Claim]:
        return NGRAM.evaluate(run)

    def figures(self, run):
        from icldyn.report.induction import ngram_figures

        return ngram_figures(run)


class InductionFullExperiment(InductionNgram):
    name = "induction-full"
    quick_seconds = 27
    title = "Full two-layer transformer (content QK, OV, LayerNorm): plateau then emergence? which subset?"
    config_class = InductionFullExpConfig
    presets = {
        "quick": {},
        "paper": {"train.steps": 50_000, "train.n_records": 60, "train.eval_prompts": 20_000,
                  "train.checkpoint_every": 5000, "generalisation_prompts": 10_000, "info_draws": 20_000,
                  "code_variant": True},
        # which ingredient makes the authors' plateau: 16 short runs (experiment doc)
        "ingredients": {"train.steps": 1000, "train.n_records": 50, "train.eval_prompts": 1000,
                        "generalisation_prompts": 200, "generalisation_lengths": [100], "info_draws": 2000,
                        "ingredients": True},
    }
    code_overrides = CODE_FULL

    def claims(self, run) -> list[Claim]:
        return FULL.evaluate(run)

    def figures(self, run):
        from icldyn.report.induction import full_figures

        return full_figures(run)


# -- generalisation: other context lengths and another prior -------------------------------------
@torch.no_grad()
def generalisation_curves(config, task, model, device) -> pd.DataFrame:
    """Loss of the trained model and of every baseline for L ∈ generalisation_lengths at the
    training α and at generalisation_alpha, both losses: curves.parquet rows (general schema) with
    predictor = the model or baseline, x_name = n_examples, x = L, metric = `<loss>_loss` (paper, code),
    value = the mean loss and its stderr over prompts, seed (−1: one value for all), condition alpha."""
    s_star = list(info_for(config)["s_star"])
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    eps = config.model.loss_eps
    a_values = model.a.tolist()
    rows = []
    family = family_of(task)                   # the n-gram shifts of `icldyn evaluate`: one source of these prompts
    for alpha in dict.fromkeys([float(config.task.alpha), float(config.generalisation_alpha)]):
        shift, value = (family.shifts[NONE], None) if alpha == float(config.task.alpha) else \
            (family.shifts["alpha"], alpha)
        for L, b in family.prompts(task, shift, value, config.generalisation_lengths, config.generalisation_prompts,
                                   config.eval_seed + 1, device):
            preds = {"model": model(b), "gih_model_a": gih_with_a(task, b, s_star, a_values)}
            preds.update({name: est(b) for name, est in shift_estimators(config, task).items()})
            for name, p in preds.items():
                for kind in LOSSES:
                    per = _per_prompt_loss(p, b.y, kind, eps)                    # (E, B)
                    for e in range(per.shape[0]):
                        seed = seeds[e] if per.shape[0] == len(seeds) and name in ("model", "gih_model_a") else -1
                        v = per[e]
                        rows.append((name, "n_examples", L, f"{kind}_loss", float(v.mean()),
                                     float(v.std() / math.sqrt(len(v))), seed, alpha))
    return pd.DataFrame(rows, columns=["predictor", "x_name", "x", "metric", "value", "stderr", "seed", "alpha"])


def shift_estimators(config, task) -> dict:
    """The baselines of the generalisation curves, the GIH at this run's S* (also what `icldyn evaluate`
    scores beside an induction model under shift)."""
    from icldyn.estimators.ngram import NGRAM_ESTIMATORS

    s_star = list(info_for(config)["s_star"])
    return {name: NGRAM_ESTIMATORS[name](task, **({"subset": s_star} if name == "gih" else {})) for name in BASELINES}


def _per_prompt_loss(probs, y, kind, eps) -> torch.Tensor:
    """(E, B) per-prompt losses (token_loss averages over prompts; here each prompt is its own batch)."""
    E, B, S = probs.shape
    flat = probs.reshape(E * B, 1, S)
    return token_loss(flat, y.expand(E, B).reshape(E * B, 1), kind, eps).reshape(E, B).double()
