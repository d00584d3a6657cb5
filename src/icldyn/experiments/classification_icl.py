"""classification-icl: a one-layer softmax-attention + ReLU-MLP transformer learns in-context binary
classification, generalises to unseen and out-of-domain tasks, and can be pruned (Li, Wang, Lu,
Cui & Chen 2024, "How Do Nonlinear Transformers Learn and Generalize in In-Context Learning?").

Spec: ../shared/specs/classification-pruning.md. One command trains, as variants of one sweep
directory: `main` (the training α, the model whose post-hoc curves the claims read: unseen tasks,
the S₁ sweep, error vs context length against the five per-prompt learners, pruning of the
stored final checkpoint) and `alpha=<α>` for α in `alpha_sweep` (training only: the iterations
needed to reach `iterations_error` on held-out prompts, for the α^{−2/3} law). The paper preset
adds `gpt` (the project's GPT, 3 layers, 2 heads, trained on ½·MSE of the ±1 labels — its
regression read-out used as a least-squares classifier) with the same S₁ and α′ curves.

Training: minibatch SGD on the hinge loss, lr 2, batch 256 (chosen so the quick preset converges
in a few hundred steps on a CPU: the spec leaves width, lr, batch and iterations open).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from icldyn.claims import Claim
from icldyn.config import ExperimentConfig, TrainConfig
from icldyn.experiments.base import Experiment
from icldyn.experiments.classification_icl_claims import CLAIMS
from icldyn.models import ModelConfig
from icldyn.models.relu_attention_classifier import ReluAttentionClassifierConfig
from icldyn.probes import build_probes
from icldyn.tasks import TaskConfig
from icldyn.tasks.binary_classification import BinaryClassificationConfig

ALPHA_SWEEP = [0.2, 0.3, 0.5, 0.7, 1.0]


class ClassificationICLConfig(ExperimentConfig):
    experiment: Literal["classification-icl"] = "classification-icl"
    task: TaskConfig = BinaryClassificationConfig()
    model: ModelConfig = ReluAttentionClassifierConfig()
    train: TrainConfig = TrainConfig(optimizer="sgd", lr=2.0, steps=600, batch_size=256, n_records=30,
                                     eval_prompts=4000, eval_prompts_during=1000, checkpoint_every=5000)
    evaluate: bool = Field(default=True, description="write the post-hoc curves (S₁, α′, learners, pruning)")
    curve_prompts: int = Field(default=2000, gt=0, description="held-out prompts per point of a curve")
    s1_values: list[float] = Field(default=[0.5, 0.7, 0.9, 1.1, 1.3], min_length=1)
    alpha_tests: list[float] = Field(default=[1.0, 0.8, 0.6], min_length=1)
    n_examples: list[int] = Field(default=[6, 8, 10, 12, 14, 16, 18, 20], min_length=1)
    prune_rates: list[float] = Field(default=[0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4], min_length=1)
    alpha_sweep: list[float] = Field(default=ALPHA_SWEEP, description="training α of the iterations law")
    sweep_steps: int = Field(default=1500, gt=0, description="training steps of each alpha_sweep run")
    iterations_error: float = Field(default=0.1, gt=0, lt=1, description="error the iterations law counts to")
    gpt: bool = Field(default=False, description="also train the project's GPT on the same data (paper preset)")
    gpt_steps: int = Field(default=20_000, gt=0)


class ClassificationICL(Experiment):
    name = "classification-icl"
    title = "Nonlinear transformers on in-context binary classification: unseen tasks, OOD shift, pruning"
    paper = "Li, Wang, Lu, Cui & Chen 2024"
    config_class = ClassificationICLConfig
    time_target = "2.5 min on a 2-core CPU"
    quick_seconds = 31
    presets = {
        "quick": {},
        "paper": {"train.steps": 3000, "sweep_steps": 6000, "curve_prompts": 10_000, "n_seeds": 3,
                  "train.eval_prompts": 20_000, "gpt": True},
    }

    def variants(self, config):
        if not config.alpha_sweep and not config.gpt:
            return None
        single = {"alpha_sweep": [], "gpt": False}
        out = {"main": dict(single)}
        for alpha in config.alpha_sweep:
            out[f"alpha={alpha:g}"] = {**single, "task.alpha": alpha, "evaluate": False,
                                       "train.steps": config.sweep_steps}
        if config.gpt:
            out["gpt"] = {**single, "model": {"name": "gpt", "n_layers": 3, "n_heads": 2, "width": 64},
                          "train.optimizer": "adam", "train.lr": 1e-3, "train.steps": config.gpt_steps,
                          "prune_rates": [0.0]}
        return out

    def probes(self, config, task):
        return build_probes(config, task, ["classification"])

    def after_training(self, run_dir, config, task, model, device):
        if not config.evaluate:
            return
        import pandas as pd

        from icldyn.analysis.classification import evaluation_curves, pruning_curves

        frames = [evaluation_curves(config, task, model, device)]
        if hasattr(model, "row_products"):
            frames.append(pruning_curves(run_dir, config, task, device))
        run_dir.write_curves(pd.concat(frames, ignore_index=True))

    def claims(self, run) -> list[Claim]:
        return CLAIMS.evaluate(run)

    def figures(self, run):
        from icldyn.report.classification_icl import figures

        return figures(run)
