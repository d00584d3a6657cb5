"""multihead-tasks: one-layer multi-head softmax attention on I-task linear regression
(Chen, Sheen, Wang & Yang 2024; the debiased-GD follow-up of He, Pan, Chen & Yang 2025).

One command trains the comparison the claims need (a sweep directory of variants):
- the main run: I = 2 tasks, H = I heads, noiseless, from the spec's small near-symmetric all-positive
  decomposable init — phases, task allocation, optimality, pairing;
- H = 1 and H = I for every I in `separation_tasks` — single vs multi-head separation;
- the main I with H = 2I heads — allocation and pairing together;
- the main run with label noise σ = `noise_check` — the attention regime;
- one task with `debiased_heads` heads started with alternating signs (the follow-up's debiased GD), and
  the same with the all-positive init as the control.

Training is gradient descent with a cosine lr on the full matrices W^{(h)}, U^{(h)}, on fresh prompts every
step; `time` = Σ lr is the gradient-flow clock. Fresh prompts, not a fixed pool: a pool's off-family
gradient has a non-zero mean (the pool is not symmetric under the data's symmetries), so the weights drift
out of the decomposable family and overfit the pool (seen: projected loss < loss); fresh batches of 1024
leak only as a random walk and cost about what pool batches of 4096 did. The runs whose claims settle
early (H = 1, other I, the one-task control) train `short_steps`; the main, noisy and debiased runs train
the full `train.steps`, as their claims compare time courses or approach an infimum (and H = 2I too). The held-out loss,
the baselines and the per-task losses use `train.eval_prompts` = 10⁵ prompts.

What the quick preset shows (the claims, and how they read it: multihead_tasks_claims.py):
- The main run goes through warm-up (loss ≈ I/2), a fast drop to the *shared* single-head solution (heads
  alike, r_h ≈ 1/I), a rest at the best single-head loss, the emergence — min_h r_h rises from ≈1/I to ≈1
  while the loss falls to the best one-head-per-task loss —, a stage with one task per head, and then a
  slow pairing: each head takes an opposite-sign share of the other task, and the loss creeps towards the
  global optimum of the decomposable family, an infimum (paired heads with ω → 0).
- Why the pairing (our reconstruction; He, Pan, Chen & Yang 2025 for the debiased heads): with small scores
  softmax_l ≈ (1 + s_l − s̄)/L, so a head outputs μ·ȳ + (a GD step); the bias μ·ȳ (E ȳ² = 1/L per task) does
  not vanish at finite L, and two heads of opposite signs cancel it (centred, "debiased" GD) — one head per
  task with H = I cannot. The paper proves allocation during the emergence and optimality "up to a constant factor"; we
  read the allocation as the end of the emergence and the constant factor as the one the allocated model
  has: c = (best one-head-per-task loss)/(global optimum), both computed numerically (theory/multihead.py).

Theory (`theory/multihead.py`, written to theory.parquet after training as constants, one row each,
stamped with the run's final time Σ lr of `train.schedule.clock`): the best H-head decomposable model
found numerically (free support; and one head per task), the best single-head model, and the
closed-form losses of one-step GD and centred GD. Claims and figures read only the stored run
(`analysis/multihead.py`, `multihead_tasks_claims.py`, `report/multihead.py`).
"""

from __future__ import annotations

from typing import Literal, Optional

import pandas as pd
import torch
from pydantic import Field

from icldyn.analysis.runs import views as run_views
from icldyn.claims import Claim
from icldyn.config import ExperimentConfig, TrainConfig
from icldyn.experiments.base import Experiment
from icldyn.experiments.multihead_tasks_claims import CLAIMS
from icldyn.models import ModelConfig
from icldyn.models.multihead_attention import MultiheadAttentionConfig
from icldyn.probes import build_probes
from icldyn.tasks import TaskConfig
from icldyn.tasks.multitask_regression import MultitaskRegressionConfig
from icldyn.theory import multihead as mh
from icldyn.train.schedule import clock


class MultiheadTasksConfig(ExperimentConfig):
    experiment: Literal["multihead-tasks"] = "multihead-tasks"
    task: TaskConfig = MultitaskRegressionConfig(d0=4, n_tasks=2, n_points=80)
    model: ModelConfig = MultiheadAttentionConfig(n_heads=2, n_tasks=2)
    train: TrainConfig = TrainConfig(optimizer="gd", lr=1.0, schedule="cosine", warmup_steps=40, steps=800,
                                     batch_size=1024, dataset_size=None, n_records=50, checkpoint_every=800,
                                     eval_prompts=100_000)
    head_signs: Literal["positive", "alternating"] = Field(
        default="positive", description="sign of head h's init: all +, or (−1)^h (ω and μ alike, so ω·μ > 0)")
    compare: bool = Field(default=True, description="train the comparison variants with the main run")
    separation_tasks: list[int] = Field(default=[2, 3, 4], description="I values of the single vs multi-head runs")
    noise_check: float = Field(default=2.0, ge=0, description="σ of the attention-regime run (0: none)")
    debiased_heads: int = Field(default=2, ge=0, description="heads of the one-task debiased-GD runs (0: none)")
    paired_allocation: bool = Field(default=True,
                                    description="train the main run's I with H = 2I heads too (allocation + pairing)")
    short_steps: Optional[int] = Field(
        default=400, gt=0,
        description="steps of the runs whose claims settle early (H = 1, other I, the same-sign control); "
                    "None: as the main run")
    optimum_prompts: int = Field(default=5000, gt=0, description="CRN prompts of the numerical optimum")
    optimum_eval_prompts: int = Field(default=50_000, gt=0, description="independent prompts re-evaluating it")
    optimum_iters: int = Field(default=100, gt=0, description="L-BFGS iterations per start of the optimum")
    optimum_max_params: int = Field(default=4, ge=0,
                                    description="compute the H-head optimum only when H·I is at most this")


def _tasks_heads(n_tasks: int, n_heads: int) -> dict:
    return {"task.n_tasks": n_tasks, "model.n_tasks": n_tasks, "model.n_heads": n_heads}


class MultiheadTasks(Experiment):
    name = "multihead-tasks"
    title = "Multi-head softmax attention on multi-task regression: emergence, allocation, optimality"
    paper = "Chen, Sheen, Wang & Yang 2024; He, Pan, Chen & Yang 2025"
    config_class = MultiheadTasksConfig
    time_target = "3 minutes on a 2-core CPU"
    quick_seconds = 155
    presets = {
        "quick": {},
        "paper": {"n_seeds": 5, "train.steps": 8000, "train.lr": 0.5, "train.warmup_steps": 100,
                  "train.batch_size": 16_384,
                  "train.dataset_size": None, "train.n_records": 100, "train.checkpoint_every": 2000,
                  "train.eval_prompts_during": 16_384, "short_steps": None, "optimum_prompts": 20_000,
                  "optimum_iters": 200, "optimum_max_params": 8},
    }

    # -- runs ------------------------------------------------------------------------------------
    def variants(self, config):
        if not config.compare:
            return None
        I, H = config.task.n_tasks, config.model.n_heads
        out = {f"I{I}-H{H}": {}}
        short = {}
        if config.short_steps is not None and config.short_steps < config.train.steps:
            short = {"train.steps": config.short_steps,
                     "train.checkpoint_every": min(config.train.checkpoint_every, config.short_steps),
                     "train.warmup_steps": min(config.train.warmup_steps, config.short_steps // 4)}
        for n in config.separation_tasks:
            for h in (n, 1) if n > 1 else (1,):
                out.setdefault(f"I{n}-H{h}", {**_tasks_heads(n, h), **short})
        if config.preset == "paper":  # the spec's H = 2I as well
            for n in config.separation_tasks:
                out.setdefault(f"I{n}-H{2 * n}", {**_tasks_heads(n, 2 * n), **short})
        if config.paired_allocation and I >= 2:
            out.setdefault(f"I{I}-H{2 * I}", _tasks_heads(I, 2 * I))
        if config.noise_check > 0:
            out[f"I{I}-H{H}-noise{config.noise_check:g}"] = {"task.noise_std": config.noise_check}
        if config.debiased_heads > 0:
            k = config.debiased_heads
            out[f"I1-H{k}-debiased"] = {**_tasks_heads(1, k), "head_signs": "alternating"}
            out[f"I1-H{k}-same-sign"] = {**_tasks_heads(1, k), "head_signs": "positive", **short}
        return out

    def build_model(self, config, task, seeds):
        # `head_signs` is an experiment field (stored configs and the claims read it there), so
        # the sign flip of the registry-built model stays here rather than in the model config.
        model = super().build_model(config, task, seeds)
        if config.head_signs == "alternating":
            sign = torch.tensor([(-1.0) ** h for h in range(config.model.n_heads)], dtype=self.dtype(config))
            with torch.no_grad():
                for p in model.parameters():                      # (E, H, ...) in either parametrisation
                    p.mul_(sign.reshape(1, -1, *([1] * (p.dim() - 2))))
        return model

    def probes(self, config, task):
        return build_probes(config, task, ["multihead_semi_singular", "multihead_projected_loss",
                                           "multihead_task_loss", "multihead_attention", "multihead_estimators"])

    def after_training(self, run_dir, config, task, model, device):
        run_dir.write_theory(theory_table(config))

    # -- claims and figures, from the stored run ------------------------------------------------------
    def claims(self, run) -> list[Claim]:
        return CLAIMS.evaluate(run)

    def figures(self, run):
        from icldyn.report.multihead import debiased_figure, overview_figure, separation_figure

        views = run_views(run)
        return [f for f in (overview_figure(run, views), separation_figure(run, views), debiased_figure(run, views))
                if f is not None]


# -- theory written after training ------------------------------------------------------------------
def theory_table(config) -> pd.DataFrame:
    """theory.parquet rows, constants (one row each) stamped with the run's final time (Σ lr over its
    schedule, `train.schedule.clock`): closed-form GD / centred-GD losses; the numerical optimum of the
    H-head decomposable family (free support; one head per task when H ≥ I ≥ 2) and of one head."""
    t = config.task
    I, H, time = t.n_tasks, config.model.n_heads, float(clock(config.train)[-1])
    rows = [("theory/gd_loss", mh.gd_loss(I, t.d0, t.test_points, t.noise_std)),
            ("theory/centred_gd_loss", mh.centred_gd_loss(I, t.d0, t.test_points, t.noise_std)),
            ("theory/zero_loss", 0.5 * I)]
    kw = dict(noise_std=t.noise_std, n_prompts=config.optimum_prompts, n_eval_prompts=config.optimum_eval_prompts,
              max_iter=config.optimum_iters, seed=0)

    def add(tag, opt):
        rows.extend([(f"optimum/{tag}/loss", opt.loss), (f"optimum/{tag}/stderr", opt.stderr),
                     (f"optimum/{tag}/loss_crn", opt.loss_crn)])
        for h in range(opt.omega.shape[0]):
            for i in range(opt.omega.shape[1]):
                rows.extend([(f"optimum/{tag}/omega/{h}/{i}", float(opt.omega[h, i])),
                             (f"optimum/{tag}/mu/{h}/{i}", float(opt.mu[h, i]))])

    add("single_head", mh.optimal_decomposable(I, 1, t.d0, t.test_points, **kw))
    if H > 1 and H * I <= config.optimum_max_params and t.noise_std == 0:   # no claim needs it with noise
        add("global", mh.optimal_decomposable(I, H, t.d0, t.test_points, **kw))
        if I >= 2 and H >= I:
            support = torch.zeros(H, I, dtype=torch.bool)
            support[torch.arange(H), torch.arange(H) % I] = True
            add("one_head_per_task", mh.optimal_decomposable(I, H, t.d0, t.test_points, support=support, **kw))
    return pd.DataFrame([(time, n, float(v)) for n, v in rows], columns=["time", "name", "value"])
