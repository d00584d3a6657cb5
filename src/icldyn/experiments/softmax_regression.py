"""softmax-regression: one softmax self-attention layer trained in context vs one step of GD on
softmax regression (Li, Song, Xia, Yu & Zhou 2023; the protocol is ours, spec seed 002).

One command trains the d-sweep as variants of one sweep directory (one worker per core), each
variant an ensemble of seeds; the probes (`probes/softmax_regression.py`) record both models'
held-out losses, the alignment metrics and the shift ratios over training. After training each
variant stores its theory checks (float64 random trials of the gradient, the one-step solution,
the weight-shift identity, the Lipschitz and data-shift bounds) in theory.parquet and samples of
them in curves.parquet for the figures.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import Field

from icldyn.config import ExperimentConfig, TrainConfig
from icldyn.experiments.base import Experiment, sweep_variants
from icldyn.models import ModelConfig
from icldyn.models.softmax_attention import SoftmaxAttentionConfig
from icldyn.probes import build_probes
from icldyn.tasks import TaskConfig
from icldyn.tasks.softmax_regression import SoftmaxRegressionConfig
from icldyn.theory import softmax_regression as theory

FIGURE_SAMPLES = 400  # trials per theory check kept in curves.parquet for the figures


class SoftmaxRegressionExperimentConfig(ExperimentConfig):
    experiment: Literal["softmax-regression"] = "softmax-regression"
    task: TaskConfig = SoftmaxRegressionConfig()
    # the label's value weight starts at n, so the values n·b_i are O(1) like the scores (at 1, Adam
    # at any tested lr could not grow it to the ~100 one-step GD needs within thousands of steps)
    model: ModelConfig = SoftmaxAttentionConfig(train="full", readout="softmax", label_value_init=25.0)
    train: TrainConfig = TrainConfig(optimizer="adam", lr=3e-3, steps=1000, batch_size=256, n_records=12,
                                     eval_prompts=4096, eval_prompts_during=1024, checkpoint_every=1000)
    d_sweep: list[int] = Field(default=[5, 10, 20, 40], description="embedding sizes d, one variant each")
    tune_tasks: int = Field(default=4096, gt=0, description="training tasks the GD step η is tuned on")
    theory_trials: int = Field(default=10_000, gt=0, description="random trials per theory check")


class SoftmaxRegression(Experiment):
    name = "softmax-regression"
    title = "In-context softmax regression: one softmax self-attention layer vs one step of GD"
    paper = "Li, Song, Xia, Yu & Zhou 2023 (arXiv 2304.13276)"
    config_class = SoftmaxRegressionExperimentConfig
    time_target = "2 min on a 2-core CPU"
    quick_seconds = 108
    presets = {
        "quick": {"n_seeds": 3},
        "paper": {"n_seeds": 10, "task.n_points": 200, "model.label_value_init": 200.0, "train.steps": 5000, "train.eval_prompts": 1000,
                  "train.eval_prompts_during": 1000, "train.n_records": 30},
    }

    def variants(self, config):
        if not config.d_sweep:
            return None
        for d in config.d_sweep:
            if d <= 0:
                from icldyn.errors import UsageError

                raise UsageError(f"d_sweep: every d must be a positive integer; got {config.d_sweep}")
        return sweep_variants({"task.d": list(config.d_sweep)})

    def probes(self, config, task):
        return build_probes(config, task, [("softmax_regression", {"tune_tasks": config.tune_tasks})])

    def after_training(self, run_dir, config, task, model, device):
        rows, curves = theory_checks(config)
        run_dir.write_theory(pd.DataFrame(rows, columns=["time", "name", "value"]))
        run_dir.write_curves(curves)

    def claims(self, run):
        from icldyn.experiments.softmax_regression_claims import CLAIMS

        return CLAIMS.evaluate(run)

    def figures(self, run):
        from icldyn.report.softmax_regression import figures

        return figures(run)


def theory_checks(config) -> tuple[list[tuple], pd.DataFrame]:
    """theory.parquet rows (time 0, name, worst value over the trials) and curves.parquet samples,
    for the run's own (n, d), in float64. Seeded by config.seed: independent of training."""
    n, d, trials, seed = config.task.n_points, config.task.d, config.theory_trials, config.seed
    grads = theory.autograd_errors(min(trials, 4000), n, d, seed=seed, scale=config.task.scale)
    shifts = theory.weight_shift_trials(trials, n, d, seed=seed + 1, scale=config.task.scale)
    attention = theory.data_shift_trials(min(trials, 4000), n, d, seed=seed + 2, scale=config.task.scale)
    worst = {"check/gradient_autograd_err": grads["gradient"].max(),
             "check/one_step_autograd_err": grads["one_step"].max(),
             "check/weight_shift_identity_err": shifts["identity_err"].max(),
             "check/lipschitz_dx_ratio": shifts["ratio_dx"].max(),
             "check/lipschitz_dA_ratio": shifts["ratio_dA"].max(),
             "check/paper_M_log_margin_dx": shifts["log_margin_dx"].max(),
             "check/paper_M_log_margin_dA": shifts["log_margin_dA"].max(),
             "check/attention_shift_ratio_random": attention.max(),
             "check/near_tied_ratio": theory.near_tied_ratio(seed=seed)}
    rows = [(0.0, name, float(v)) for name, v in worst.items()]
    k = FIGURE_SAMPLES
    frames = [
        _sample("closed_form", "autograd", grads["auto"][:k // d + 1].flatten(), "gradient",
                grads["closed"][:k // d + 1].flatten()),
        _sample("weight_shift", "half_norm_A_dx", shifts["bound_dx"][:k], "norm_df", shifts["df_dx"][:k]),
        _sample("data_shift", "half_norm_dA_x", shifts["bound_dA"][:k], "norm_df", shifts["df_dA"][:k]),
        _sample("paper_M", "trial", range(len(shifts["log_margin_dx"][:k])), "log_margin_dx", shifts["log_margin_dx"][:k]),
        _sample("attention_random", "trial", range(len(attention[:k])), "shift_ratio", attention[:k]),
    ]
    return rows, pd.concat(frames, ignore_index=True)


def _sample(predictor: str, x_name: str, x, metric: str, value) -> pd.DataFrame:
    x = [float(v) for v in x]
    return pd.DataFrame({"predictor": predictor, "x_name": x_name, "x": x, "metric": metric,
                         "value": [float(v) for v in value], "stderr": 0.0, "seed": -1})
