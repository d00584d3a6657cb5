"""linear-exact-dynamics-vector: the exact-dynamics paper's own linear model (Mainali & Teixeira 2025;
specs/grokking-spectral.md Part A) — vector-valued tasks W^µ = U Λ^µ Uᵀ from a fixed pool of P,
sharing Σ = U S Uᵀ's eigenbasis, and a linear layer with per-mode value and key-query factors
(p_α, q_α) — against the paper's logistic closed form per mode, next to the scalar ZFB reduction
that `linear-exact-dynamics` reproduces.

One command trains, into one sweep directory (variants, by `role`):
- modes           exact population gradients in the N → ∞ limit of the context (Σ̂ = Σ), where
                  the modes decouple exactly: per-mode logistic curves, ½-crossings in order of
                  s_α at t½ = (τ_α/2) ln((a^∞ − a₀)/a₀), the fixed point a_α = 1/s^∞_α;
- finite-n        the same at N = 20: the layer's exact flow couples the modes through an O(1/N)
                  term (theory/vector_modes.py), so the paper's finite-N s^∞ is tested, not assumed;
- sgd             N = 20 on sampled prompts (minibatch SGD): the layer's flow with sampled prompts;
- conserve-lr=*   unbalanced init (p ≠ q), N → ∞, 4 learning rates over a decade: the drift of each
                  p_α² − q_α² ∝ lr (conserved by gradient flow).
theory.parquet holds, on each run's clock: the closed form (`closed_form/<α>`, progress a/a^∞),
the paper's per-mode ODE (`mode_ode/<α>`), the layer's exact flow (`layer_ode/<α>`), the scalar ZFB
reduction on the same Σ and N from the same mode strengths a₀ (`scalar/<α>`, progress γ_α b_α),
and the constants (s, s^∞, a^∞, τ, t½, c per mode).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field

from icldyn.config import ExperimentConfig, TrainConfig
from icldyn.experiments.base import Experiment
from icldyn.experiments.exact_dynamics import piecewise
from icldyn.experiments.exact_dynamics_vector_claims import evaluate as evaluate_claims
from icldyn.models import ModelConfig
from icldyn.models.mode_lsa import ModeLSAConfig
from icldyn.probes import build_probes
from icldyn.tasks import TaskConfig
from icldyn.tasks.vector_regression import VectorRegressionConfig
from icldyn.theory.exact_dynamics import ReducedLSA
from icldyn.theory.vector_modes import LayerSystem, ModeSystem, paper_s_inf
from icldyn.train.schedule import record_steps_in_time, time_at

PARAMS = ["p", "q"]
SCHEDULE = [(25.0, 0.005), (150.0, 0.05)]
Role = Literal["all", "modes", "finite-n", "sgd", "conservation"]


def _train(schedule, **extra) -> dict:
    return {f"train.{k}": v for k, v in {**piecewise(schedule, PARAMS), **extra}.items()}


class ExactDynamicsVectorConfig(ExperimentConfig):
    experiment: Literal["linear-exact-dynamics-vector"] = "linear-exact-dynamics-vector"
    task: TaskConfig = VectorRegressionConfig(d=3, n_points=20, eigenvalues=[1.0, 0.5, 0.25], n_tasks=16,
                                              normalize_pool=True, population_context="infinite")
    model: ModelConfig = ModeLSAConfig(init_scale=0.03)
    train: TrainConfig = TrainConfig(optimizer="gd", gradient="population", n_records=150, checkpoint_every=5000,
                                     eval_prompts=8192, eval_prompts_during=1024, **piecewise(SCHEDULE, PARAMS))
    role: Role = Field(default="all", description="all: every run below as variants; else this run's role")
    record_from: float = Field(default=0.05, gt=0, description="first record time (records log-spaced in time)")
    finite_n: int = Field(default=20, gt=0, description="N of the finite-n and sgd runs")
    sgd_batch_size: int = 512
    sgd_schedule: list[tuple[float, float]] = [(25.0, 0.005), (150.0, 0.05)]
    conservation_lrs: list[float] = [0.005, 0.01, 0.02, 0.05]
    conservation_time: float = 10.0
    conservation_init_scale: float = 0.3
    conservation_init_ratio: float = 2.0
    conservation_records: int = 40
    # claim tolerances (fixed before the run)
    closed_form_tolerance: float = 0.01   # max |a/a^∞ − closed form| (progress runs 0 → 1), population GD
    layer_tolerance: float = 0.01          # max |a/a^∞ − layer flow|, population GD
    sampled_tolerance_factor: float = 5.0  # minibatch SGD: noise on p, q
    half_time_tolerance: float = 0.05      # |t½ / closed-form t½ − 1|
    fixed_point_tolerance: float = 0.01    # max |a s^∞ − 1| at the end
    conservation_exponent_tolerance: float = 0.15
    scalar_gap: float = 0.1                # the scalar reduction differs by more than this somewhere


class ExactDynamicsVector(Experiment):
    name = "linear-exact-dynamics-vector"
    title = "The exact-dynamics paper's own model: per-mode logistics, order of s, per-mode conservation"
    paper = "Mainali & Teixeira 2025 (exact ICL dynamics of linear transformers), vector-valued model"
    config_class = ExactDynamicsVectorConfig
    time_target = "1.5 min on a 2-core CPU"
    quick_seconds = 32
    presets = {
        "quick": {},
        "paper": {"train.n_records": 300, "sgd_batch_size": 8192, "model.init_scale": 0.01,
                  **_train([(25.0, 0.0005), (200.0, 0.005)]), "sgd_schedule": [(25.0, 0.0005), (200.0, 0.005)],
                  "conservation_lrs": [0.001, 0.002, 0.005, 0.01, 0.02, 0.05], "conservation_records": 100,
                  "closed_form_tolerance": 0.005, "layer_tolerance": 0.005},
    }

    def variants(self, config):
        if config.role != "all":
            return None
        finite = {"task.population_context": "finite", "task.n_points": config.finite_n}
        out = {"modes": {"role": "modes"}, "finite-n": {"role": "finite-n", **finite},
               "sgd": {"role": "sgd", **finite, "train.gradient": "sampled", "train.optimizer": "sgd",
                       "train.batch_size": config.sgd_batch_size, **_train(config.sgd_schedule)}}
        for lr in config.conservation_lrs:
            out[f"conserve-lr={lr:g}"] = {
                "role": "conservation", "model.init_scale": config.conservation_init_scale,
                "model.init_ratio": config.conservation_init_ratio, "train.n_records": config.conservation_records,
                **_train([(config.conservation_time, lr)])}
        return out

    def record_steps(self, config):
        return record_steps_in_time(config.train, config.train.n_records, t_min=config.record_from)

    def dtype(self, config):
        import torch

        return torch.float64

    def probes(self, config, task):
        return build_probes(config, task, ["vector_modes"])

    def after_training(self, run_dir, config, task, model, device):
        metrics = pd.DataFrame(run_dir.read_metric_rows())
        steps = np.unique(metrics.loc[metrics["name"] == "loss/train", "step"].values)
        run_dir.write_theory(theory_frame(config, task.mode_moments.numpy(), time_at(config.train, steps)))

    def claims(self, run):
        return evaluate_claims(run)

    def figures(self, run):
        from icldyn.report.exact_dynamics_vector import all_figures

        return all_figures(run)


# -- theory on the run's clock ----------------------------------------------------------------------
def context_n(config) -> int | None:
    """N of the population loss: None in the N → ∞ limit."""
    return None if config.task.population_context == "infinite" else config.task.n_points


def systems(config, c, *, permutation=None) -> tuple[ModeSystem, LayerSystem]:
    """The paper's decoupled system and the layer's exact flow for this config; `permutation`
    reorders the eigenvalues (a negative control: the wrong assignment of s to modes)."""
    s = np.asarray(config.task.eigenvalues, dtype=np.float64)
    if permutation is not None:
        s = s[np.asarray(permutation)]
    n = context_n(config)
    return ModeSystem(s, paper_s_inf(s, n), c), LayerSystem(s, n, c)


def theory_frame(config, c, times, *, permutation=None, time_scale: float = 1.0) -> pd.DataFrame:
    """theory.parquet: constants (time 0) and curves at `times` (T,). `c` (d,): the pool's per-mode
    second moments. Negative controls: `permutation` (modes shuffled), `time_scale` (t → t·scale,
    e.g. the P of a summed loss)."""
    modes, layer = systems(config, c, permutation=permutation)
    m = config.model
    p0, q0 = m.init_scale * m.init_ratio, m.init_scale / m.init_ratio
    a0 = p0 * q0
    times = np.unique(np.asarray(times, dtype=np.float64))
    t = times * time_scale
    rows = {f"{k}/{i}": (0.0, v) for k, arr in (("s", modes.s), ("s_inf", modes.s_inf), ("a_inf", modes.a_inf),
                                                 ("tau", modes.tau), ("half_time", modes.half_time(a0) / time_scale),
                                                 ("c", modes.c)) for i, v in enumerate(arr)}
    frames = [pd.DataFrame({"time": 0.0, "name": list(rows), "value": [v for _, v in rows.values()]})]

    def add(name, values):
        frames.append(pd.DataFrame({"time": times, "name": name, "value": values}))

    ode, flow = modes.integrate(p0, q0, t), layer.integrate(p0, q0, t)
    for i in range(modes.s.size):
        add(f"mode_ode/{i}", ode["a"][:, i] / modes.a_inf[i])
        add(f"layer_ode/{i}", flow["a"][:, i] / modes.a_inf[i])
        add(f"mode_conserved/{i}", ode["conserved"][:, i])
    add("layer_ode/conserved", flow["conserved"].sum(-1))
    add("layer_ode/loss", flow["loss"])
    add("mode_ode/loss", ode["loss"])
    if m.init_ratio == 1.0:
        closed = modes.closed_form(a0, t) / modes.a_inf
        for i in range(modes.s.size):
            add(f"closed_form/{i}", closed[:, i])
    frames.append(scalar_frame(config, a0, times, t))
    return pd.concat(frames, ignore_index=True)


def scalar_frame(config, a0: float, times, t) -> pd.DataFrame:
    """The scalar ZFB reduction (theory/exact_dynamics.py) on the same Σ and N, from the same mode
    strengths b_α = v u_α = a₀ (v = u_α = √a₀): progress γ_α b_α per mode, in the task's order."""
    s = np.asarray(config.task.eigenvalues, dtype=np.float64)
    order = np.argsort(-s, kind="stable")                 # ReducedLSA keeps the order it is given
    n = context_n(config) or 10**12                       # N → ∞: γ_α → s_α
    system = ReducedLSA(s[order], n)
    out = system.integrate(np.sqrt(a0), np.full(s.size, np.sqrt(a0)), t)
    progress = np.empty_like(out["mode_progress"])
    progress[:, order] = out["mode_progress"]
    frames = [pd.DataFrame({"time": times, "name": f"scalar/{i}", "value": progress[:, i]}) for i in range(s.size)]
    frames.append(pd.DataFrame({"time": times, "name": "scalar/conserved", "value": out["conserved"]}))
    for i in range(s.size):  # the scalar reduction's per-mode analogue v² − u_α²: not conserved
        frames.append(pd.DataFrame({"time": times, "name": f"scalar/mode_conserved/{i}",
                                    "value": out["v"] ** 2 - out["u"][:, np.where(order == i)[0][0]] ** 2}))
    return pd.concat(frames, ignore_index=True)
