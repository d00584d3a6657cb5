"""linear-exact-dynamics: a one-layer linear transformer on anisotropic in-context regression
follows the reduced gradient-flow ODE of seed 004 (Mainali & Teixeira 2025): a plateau at the
saddle whose length grows by ln(10)/ρ per decade of smaller init, then the eigenmodes switch on
one by one in order of decreasing λ, while ‖p‖² − ‖Q‖_F² stays constant up to an O(lr) drift.

One command trains every run the claims need, into one sweep directory (variants, by `role`):
- staged         ZFB init, λ = (1, 0.25, 0.0625), σ₀ = 10⁻³, exact population gradients: the
                 loss and every mode's progress against the ODE, ½-crossing times and their order;
- plateau-*      λ = (1, 0.8, 0.6) (ρ ≈ 1.25, far from λ₁² = 1), σ₀ over 4 decades: the slope of
                 the escape time in log10(1/σ₀) against ln(10)/ρ;
- conserve-*     4 learning rates over a decade: the drift of the conserved quantity ∝ lr;
- sgd            the staged run on sampled minibatches (plain SGD): the ODE claims with sampled
                 prompts (DESIGN.md) and the conserved quantity's drift under minibatch noise;
- generic        all-blocks Gaussian init on sampled prompts: W^KQ's x-block aligns with Λ's top
                 eigenvector during the plateau;
- noncommuting   ZFB blocks with a random Θ (U(0) does not commute with Λ): the same alignment, and
                 the effective rank of U rising in steps as the modes switch on.

Time is Σ lr throughout, so runs with different learning rates and the ODE share one axis. The
staged runs take small steps (lr 0.01) through the escape, where GD's Euler error is largest
(a growth factor 1 + lr ρ per step instead of e^{lr ρ}), then larger ones for the slow modes;
that is a piecewise-constant schedule written as `train.stages` over all parameters.

After training, theory.parquet gets the reduced ODE on the run's clock (`train.schedule.time_at`)
and the theory's constants (crossing times, ρ, erank(Γ⁻¹), erank(Λ²)); the claims
(`exact_dynamics_claims.py`) and the figures (`report/exact_dynamics.py`) read those and the
metrics through `analysis/exact_dynamics.py`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from icldyn.analysis.exact_dynamics import crossing_name, ode_applies
from icldyn.claims import Claim
from icldyn.config import ExperimentConfig, TrainConfig
from icldyn.experiments.base import Experiment
from icldyn.experiments.exact_dynamics_claims import evaluate as evaluate_claims
from icldyn.models import ModelConfig
from icldyn.models.lsa import LSAConfig
from icldyn.probes import build_probes
from icldyn.probes.lsa_modes import modes_eigenvalues, overlap_rows
from icldyn.probes.spectral import effective_rank
from icldyn.store import load_checkpoint
from icldyn.tasks import TaskConfig
from icldyn.tasks.linear_regression import LinearRegressionConfig
from icldyn.theory.exact_dynamics import ReducedLSA, zfb_initial
from icldyn.theory.linear_regression import optimal_matrix
from icldyn.train.schedule import record_steps_in_time, time_at

STAGED = [1.0, 0.25, 0.0625]
PARAMS = ["w_pv", "w_kq"]

Role = Literal["all", "staged", "plateau", "conservation", "sgd", "generic", "noncommuting"]


def piecewise(schedule: list[tuple[float, float]], params: list[str] = PARAMS) -> dict:
    """TrainConfig fields for a piecewise-constant lr: [(t_end, lr), ...] → steps, lr, stages.

    Each segment runs at its lr until time Σ lr reaches t_end (rounded to whole steps); `params`:
    the parameter names every stage moves (all of the model's)."""
    stages, t = [], 0.0
    for t_end, lr in schedule:
        steps = max(1, int(round((t_end - t) / lr)))
        stages.append({"params": list(params), "steps": steps, "lr": float(lr)})
        t += steps * lr
    if len(stages) == 1:
        return {"steps": stages[0]["steps"], "lr": stages[0]["lr"], "stages": None}
    return {"steps": sum(s["steps"] for s in stages), "lr": stages[-1]["lr"], "stages": stages}


def _train_overrides(schedule, **extra) -> dict:
    return {f"train.{k}": v for k, v in {**piecewise(schedule), **extra}.items()}


STAGED_SCHEDULE = [(20.0, 0.005), (1000.0, 0.1)]


class ExactDynamicsConfig(ExperimentConfig):
    experiment: Literal["linear-exact-dynamics"] = "linear-exact-dynamics"
    task: TaskConfig = LinearRegressionConfig(d=3, n_points=20, covariance="anisotropic",
                                              eigenvalues=STAGED)
    model: ModelConfig = LSAConfig(init="zfb", init_scale=1e-3)
    train: TrainConfig = TrainConfig(optimizer="gd", gradient="population", n_records=150, checkpoint_every=5000,
                                     eval_prompts=20_000, eval_prompts_during=4096, **piecewise(STAGED_SCHEDULE))
    role: Role = Field(default="all", description="all: every run below as variants; else this run's role")
    float64: bool = True
    spectral_k: int = Field(default=1, gt=0, description="k of the top-k subspace overlaps")
    record_from: float = Field(default=0.05, gt=0, description="first record time (records log-spaced in time)")
    # plateau law: σ₀ sweep at comparable eigenvalues
    plateau_eigenvalues: list[float] = [1.0, 0.8, 0.6]
    plateau_init_scales: list[float] = [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
    plateau_schedule: list[tuple[float, float]] = [(25.0, 0.02)]
    plateau_records: int = 100
    # conservation: learning-rate sweeps over one time horizon, population GD and minibatch SGD
    conservation_lrs: list[float] = [0.005, 0.01, 0.02, 0.05]
    conservation_time: float = 10.0
    conservation_init_scale: float = 0.1
    conservation_records: int = 40
    sgd_batch_size: int = 256
    # the staged run on sampled minibatches (plain SGD): the ODE claims with sampled prompts
    sgd_schedule: list[tuple[float, float]] = [(20.0, 0.01), (100.0, 0.05)]
    sgd_eval_prompts: int = 65_536  # the loss is compared with the ODE on held-out prompts
    sgd_records: int = 100
    # generic init (all blocks Gaussian) on sampled prompts, through the first drop
    generic_seeds: int = 4
    generic_batch_size: int = 256
    generic_schedule: list[tuple[float, float]] = [(25.0, 0.05)]
    generic_records: int = 80
    # non-commuting ZFB-block init (random Θ), population gradients, all three stages
    noncommuting_schedule: list[tuple[float, float]] = [(20.0, 0.02), (1000.0, 0.1)]
    # claim tolerances (fixed before the run)
    ode_loss_tolerance: float = 0.01      # max |L − L_ode| / (L_saddle − L*), population gradients
    ode_mode_tolerance: float = 0.02      # max |γ_i b_i − ODE| (progress runs 0 → 1)
    sampled_tolerance_factor: float = 5.0  # looser for minibatch runs (SGD noise + Monte-Carlo loss)
    crossing_tolerance: float = 0.2
    plateau_tolerance: float = 0.05
    conservation_exponent_tolerance: float = 0.15
    conservation_sgd_exponent_tolerance: float = 0.25  # minibatch noise: ~10% scatter per drift
    alignment_bound: float = 0.95


class ExactDynamics(Experiment):
    name = "linear-exact-dynamics"
    title = "Exact learning dynamics of a linear transformer: ODE overlay, stages, plateau law, conservation"
    paper = "Mainali & Teixeira 2025 (exact ICL dynamics of linear transformers)"
    config_class = ExactDynamicsConfig
    time_target = "3 min on a 2-core CPU"
    quick_seconds = 60
    presets = {
        "quick": {},
        "paper": {
            "train.n_records": 300, "train.eval_prompts": 100_000, "train.eval_prompts_during": 16384,
            **_train_overrides([(20.0, 0.001), (2000.0, 0.02)]),
            "plateau_init_scales": [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8], "plateau_records": 300,
            "plateau_schedule": [(35.0, 0.002)],
            "conservation_lrs": [0.001, 0.002, 0.005, 0.01, 0.02, 0.05], "conservation_records": 100,
            "sgd_batch_size": 4096, "sgd_schedule": [(20.0, 0.002), (1000.0, 0.02)], "sgd_records": 300,
            "sgd_eval_prompts": 262_144,
            "generic_seeds": 32, "generic_batch_size": 4096, "generic_schedule": [(30.0, 0.01)],
            "generic_records": 200, "noncommuting_schedule": [(20.0, 0.002), (2000.0, 0.02)],
            "ode_loss_tolerance": 0.005, "ode_mode_tolerance": 0.01, "plateau_tolerance": 0.02,
        },
    }

    # -- runs ------------------------------------------------------------------------------------
    def variants(self, config):
        if config.role != "all":
            return None
        out = {"staged": {"role": "staged"}}
        for sigma0 in config.plateau_init_scales:
            out[f"plateau-sigma0={sigma0:g}"] = {
                "role": "plateau", "task.eigenvalues": list(config.plateau_eigenvalues), "model.init_scale": sigma0,
                "train.n_records": config.plateau_records, **_train_overrides(config.plateau_schedule)}
        sampled = {"train.gradient": "sampled", "train.optimizer": "sgd", "train.batch_size": config.sgd_batch_size}
        for lr in config.conservation_lrs:
            common = {"role": "conservation", "model.init_scale": config.conservation_init_scale,
                      "train.n_records": config.conservation_records,
                      **_train_overrides([(config.conservation_time, lr)])}
            out[f"conserve-lr={lr:g}"] = common
            out[f"conserve-sgd-lr={lr:g}"] = {**common, **sampled}
        out["sgd"] = {"role": "sgd", **sampled, "train.eval_prompts_during": config.sgd_eval_prompts,
                      "train.eval_prompts": config.sgd_eval_prompts,
                      "train.n_records": config.sgd_records, **_train_overrides(config.sgd_schedule)}
        out["generic"] = {"role": "generic", "model.init": "gaussian", "train.gradient": "sampled",
                          "train.optimizer": "sgd", "train.batch_size": config.generic_batch_size,
                          "train.n_records": config.generic_records,
                          "n_seeds": max(config.n_seeds, config.generic_seeds),
                          **_train_overrides(config.generic_schedule)}
        out["noncommuting"] = {"role": "noncommuting", "model.init": "zfb_random",
                               **_train_overrides(config.noncommuting_schedule)}
        return out

    def record_steps(self, config):
        # log-spaced in time = Σ lr: a piecewise lr would leave decades of time unrecorded otherwise
        return record_steps_in_time(config.train, config.train.n_records, t_min=config.record_from)

    def dtype(self, config) -> torch.dtype:
        return torch.float64 if config.float64 else torch.float32

    def probes(self, config, task):
        return build_probes(config, task, ["lsa_modes", ("spectral", {"k": config.task.d + 1})])

    def after_training(self, run_dir, config, task, model, device):
        metrics = pd.DataFrame(run_dir.read_metric_rows())
        grid = record_grid(metrics)
        run_dir.write_theory(theory_frame(config, task, time_at(config.train, grid["step"].values)))
        seeds = list(range(config.seed, config.seed + config.n_seeds))
        params = []
        for step, time in grid.itertuples(index=False):
            tensors, _ = load_checkpoint(run_dir.checkpoint_path(int(step)))
            params.append((int(step), float(time),
                           {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}))
        rows = overlap_rows(params, seeds, k=config.spectral_k)
        kept = metrics[~metrics["name"].str.startswith("probe/overlap_")]  # a rerun replaces, never duplicates
        run_dir.write_metrics(kept.to_dict("records") + rows)

    # -- claims and figures ----------------------------------------------------------------------
    def claims(self, run) -> list[Claim]:
        return evaluate_claims(run)

    def figures(self, run):
        from icldyn.report.exact_dynamics import all_figures

        return all_figures(run)


# -- theory on the run's clock ------------------------------------------------------------------
def system_for(config, eigenvalues=None) -> ReducedLSA:
    lam = modes_eigenvalues(config) if eigenvalues is None else np.sort(np.asarray(eigenvalues, float))[::-1]
    return ReducedLSA(lam, config.task.n_points)


def ode_curves(config, times, eigenvalues=None) -> pd.DataFrame:
    """ODE curves (loss, mode_progress/<i>, conserved) at `times` from the run's ZFB init."""
    system = system_for(config, eigenvalues)
    times = np.unique(np.asarray(times, dtype=np.float64))
    c = system.integrate(*zfb_initial(config.model.init_scale, system.d), times)
    frames = [pd.DataFrame({"time": times, "name": "loss", "value": c["loss"]}),
              pd.DataFrame({"time": times, "name": "conserved", "value": c["conserved"]})]
    for i in range(system.d):
        frames.append(pd.DataFrame({"time": times, "name": f"mode_progress/{i}", "value": c["mode_progress"][:, i]}))
    return pd.concat(frames, ignore_index=True)


def theory_constants(config, covariance, eigenvalues=None) -> pd.DataFrame:
    """The theory's time-independent values, one row each (time 0): the ODE's saddle and fixed-point
    losses, its ½-crossing times from the ZFB init at this σ₀ (crossing_time/<i>, by decreasing λ),
    the escape rate ρ, erank(Γ⁻¹) (the limit of U's spectrum) and erank(Λ²) (U's direction at the
    plateau's end). `covariance` (d, d): the task's Σ, float64."""
    system = system_for(config, eigenvalues)
    lam2 = system.lam ** 2
    p = lam2 / lam2.sum()
    values = {"saddle_loss": system.saddle_loss, "optimal_loss": system.optimal_loss,
              "escape_rate": system.escape_rate(),
              "erank_gamma_inv": float(effective_rank(optimal_matrix(covariance, config.task.n_points))),
              "erank_lambda_squared": float(np.exp(-(p * np.log(p)).sum()))}
    crossings = system.crossing_times(config.model.init_scale)
    values.update({crossing_name(i): float(t) for i, t in enumerate(crossings)})
    return pd.DataFrame({"time": 0.0, "name": list(values), "value": list(values.values())})


def theory_frame(config, task, times, eigenvalues=None) -> pd.DataFrame:
    """theory.parquet: the constants, and the ODE's curves at `times` where the ODE applies.
    `eigenvalues` replaces Λ's (negative controls: the wrong Λ must fail the claims)."""
    frames = [theory_constants(config, task.covariance, eigenvalues)]
    if ode_applies(config):
        frames.append(ode_curves(config, times, eigenvalues))
    return pd.concat(frames, ignore_index=True)


def record_grid(metrics: pd.DataFrame) -> pd.DataFrame:
    """(step, time) of every record, in step order."""
    m = metrics[metrics["name"] == "loss/train"]
    return m[["step", "time"]].drop_duplicates("step").sort_values("step").reset_index(drop=True)
