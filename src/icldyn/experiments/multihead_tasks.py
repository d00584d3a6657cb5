"""multihead-tasks: one-layer multi-head softmax attention on I-task linear regression
(Chen, Sheen, Wang & Yang 2024; the debiased-GD follow-up of He, Pan, Chen & Yang 2025).

One command trains the comparison the claims need (a sweep directory of variants):
- the main run: I = 2 tasks, H = I heads, noiseless, from the spec's small near-symmetric
  decomposable init — phases, task allocation, optimality;
- H = 1 and H = I for every I in `separation_tasks` — single vs multi-head separation;
- the main run with label noise σ = `noise_check` — the attention regime;
- one task with `debiased_heads` heads started with alternating signs (the follow-up's debiased
  GD), and the same with the spec's all-positive init as the control.

Training is gradient descent with a constant lr on the full matrices W^{(h)}, U^{(h)}; `time` = Σ lr
is the gradient-flow clock. The quick preset trains on a fixed set of prompts with full batches
(a common-random-numbers estimate of the population loss: resampling the prompts every step would
cost 4x more on a CPU than the forward/backward pass), the paper preset on fresh prompts each step;
the test loss is always on held-out prompts.

Theory (`theory/multihead.py`, written to theory.parquet after training, at the final time):
the best H-head decomposable model found numerically (free support; and one head per task),
the best single-head model, and the closed-form losses of one-step GD and centred GD.
"""

from __future__ import annotations

from typing import Literal, Optional

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from icldyn.config import ExperimentConfig, TrainConfig
from icldyn.experiments.base import Claim, Experiment, run_views
from icldyn.models.multihead_attention import MultiheadAttention, MultiheadAttentionConfig
from icldyn.probes.multihead import (attention_probe, estimator_probe, projected_loss_probe, semi_singular_probe,
                                    task_loss_probe)
from icldyn.probes.phases import detect_drops, detect_plateaus
from icldyn.tasks.multitask_regression import MultitaskRegressionConfig
from icldyn.theory import multihead as mh

SOURCE = "Chen, Sheen, Wang & Yang 2024 (arXiv 2402.19442)"
SOURCE_FOLLOWUP = "He, Pan, Chen & Yang 2025 (arXiv 2503.12734)"
SPECIALISED = 0.9          # r_h above this: the head keeps one task


class MultiheadTasksConfig(ExperimentConfig):
    experiment: Literal["multihead-tasks"] = "multihead-tasks"
    task: MultitaskRegressionConfig = MultitaskRegressionConfig(d0=4, n_tasks=2, n_points=80)
    model: MultiheadAttentionConfig = MultiheadAttentionConfig(n_heads=2, n_tasks=2)
    train: TrainConfig = TrainConfig(optimizer="gd", lr=1.0, schedule="cosine", warmup_steps=40, steps=1200,
                                     batch_size=4096, dataset_size=65_536, n_records=50, checkpoint_every=1200,
                                     eval_prompts=100_000)
    head_signs: Literal["positive", "alternating"] = Field(
        default="positive", description="sign of head h's init: all +, or (−1)^h (ω and μ alike, so ω·μ > 0)")
    compare: bool = Field(default=True, description="train the comparison variants with the main run")
    separation_tasks: list[int] = Field(default=[2, 3, 4], description="I values of the single vs multi-head runs")
    noise_check: float = Field(default=0.5, ge=0, description="σ of the attention-regime run (0: none)")
    debiased_heads: int = Field(default=2, ge=0, description="heads of the one-task debiased-GD runs (0: none)")
    separation_batch: Optional[int] = Field(
        default=1024, gt=0,
        description="batch size of the runs at other I (their pool: 16 batches); None: as the main run")
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
    presets = {
        "quick": {},
        "paper": {"n_seeds": 5, "train.steps": 8000, "train.lr": 0.5, "train.warmup_steps": 100,
                  "train.batch_size": 16_384,
                  "train.dataset_size": None, "train.n_records": 100, "train.checkpoint_every": 2000,
                  "train.eval_prompts_during": 16_384, "separation_batch": None, "optimum_prompts": 20_000,
                  "optimum_iters": 200, "optimum_max_params": 8},
    }

    # -- runs ------------------------------------------------------------------------------------
    def variants(self, config):
        if not config.compare:
            return None
        I, H = config.task.n_tasks, config.model.n_heads
        out = {f"I{I}-H{H}": {}}
        small = {}
        if config.separation_batch is not None:
            small = {"train.batch_size": config.separation_batch}
            if config.train.dataset_size is not None:
                small["train.dataset_size"] = 16 * config.separation_batch
        for n in config.separation_tasks:
            for h in (n, 1) if n > 1 else (1,):
                out.setdefault(f"I{n}-H{h}", {**_tasks_heads(n, h), **(small if n != I else {})})
        if config.preset == "paper":  # the spec's H = 2I as well
            for n in config.separation_tasks:
                out.setdefault(f"I{n}-H{2 * n}", {**_tasks_heads(n, 2 * n), **(small if n != I else {})})
        if config.noise_check > 0:
            out[f"I{I}-H{H}-noise{config.noise_check:g}"] = {"task.noise_std": config.noise_check}
        if config.debiased_heads > 0:
            k = config.debiased_heads
            out[f"I1-H{k}-debiased"] = {**_tasks_heads(1, k), "head_signs": "alternating"}
            out[f"I1-H{k}-same-sign"] = {**_tasks_heads(1, k), "head_signs": "positive"}
        return out

    def build_model(self, config, task, seeds):
        model = MultiheadAttention.for_task(config.model, task, seeds, dtype=self.dtype(config))
        if config.head_signs == "alternating":
            sign = torch.tensor([(-1.0) ** h for h in range(config.model.n_heads)], dtype=self.dtype(config))
            with torch.no_grad():
                for p in model.parameters():                      # (E, H, ...) in either parametrisation
                    p.mul_(sign.reshape(1, -1, *([1] * (p.dim() - 2))))
        return model

    def probes(self, config, task):
        return [semi_singular_probe(), projected_loss_probe(), task_loss_probe(), attention_probe(),
                estimator_probe(task)]

    def after_training(self, run_dir, config, task, model, device):
        run_dir.write_theory(theory_table(config))

    # -- claims ----------------------------------------------------------------------------------
    def claims(self, run) -> list[Claim]:
        views = dict(run_views(run))
        base = run.config
        main = find_view(views, base.task.n_tasks, base.model.n_heads, base.task.noise_std, base.head_signs)
        noisy = next((r for r in views.values() if _is(r, base.task.n_tasks, base.model.n_heads)
                      and r.config.task.noise_std > 0 and r.config.head_signs == "positive"), None)
        if main is None or main.config.model.n_heads < 2 or main.config.task.n_tasks < 2:
            main = next((r for r in views.values() if r.config.model.n_heads >= r.config.task.n_tasks >= 2
                         and r.config.task.noise_std == 0), None)
        out = []
        out += phase_claims(main)
        out += allocation_claims(main)
        out.append(optimality_claim(main))
        out.append(separation_claim(views))
        out += attention_claims(main, noisy)
        out += debiased_claims(views)
        out.append(decomposability_claim(views))
        return out

    def figures(self, run):
        from icldyn.report.multihead import debiased_figure, overview_figure, separation_figure

        views = run_views(run)
        return [f for f in (overview_figure(run, views), separation_figure(run, views), debiased_figure(run, views))
                if f is not None]


# -- theory written after training ------------------------------------------------------------------
def theory_table(config) -> pd.DataFrame:
    """theory.parquet rows at the final time: closed-form GD / centred-GD losses; the numerical optimum
    of the H-head decomposable family (free support; one head per task when H ≥ I ≥ 2) and of one head."""
    t = config.task
    I, H, time = t.n_tasks, config.model.n_heads, float(config.train.lr * config.train.steps)
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


def theory_value(run, name: str) -> float:
    th = run.theory
    v = th[th["name"] == name]["value"]
    return float(v.iloc[-1]) if len(v) else float("nan")


# -- reading stored runs -------------------------------------------------------------------------------
def _is(run, n_tasks, n_heads) -> bool:
    return run.config.task.n_tasks == n_tasks and run.config.model.n_heads == n_heads


def find_view(views: dict, n_tasks, n_heads, noise=0.0, signs="positive"):
    for r in views.values():
        c = r.config
        if _is(r, n_tasks, n_heads) and c.task.noise_std == noise and c.head_signs == signs:
            return r
    return None


def curve(run, name: str, seed: int, *, same_prompts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(time, value) of one metric and seed, t > 0 only, in time order.

    same_prompts: drop the last record when it was measured on the larger final prompt set
    (train.eval_prompts vs eval_prompts_during), so that a curve's shape is not a change of prompts."""
    m = run.metric(name)
    m = m[(m["seed"] == seed) & (m["time"] > 0)].sort_values("time")
    tc = run.config.train
    if same_prompts and tc.eval_prompts != tc.eval_prompts_during and len(m) > 1:
        m = m[m["step"] < m["step"].max()]
    return m["time"].to_numpy(), m["value"].to_numpy()


def semi_singular(run, seed: int, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ω, μ (H, I) of one seed at `step` (default: the last record)."""
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    m = run.metrics[run.metrics["seed"] == seed]
    step = m["step"].max() if step is None else step
    at = m[m["step"] == step].set_index("name")["value"]
    omega = np.array([[at.get(f"probe/omega/{h}/{i}", np.nan) for i in range(I)] for h in range(H)])
    mu = np.array([[at.get(f"probe/mu/{h}/{i}", np.nan) for i in range(I)] for h in range(H)])
    return omega, mu


def min_specialisation(run, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(time, min over heads of r_h) for one seed, t > 0."""
    H = run.config.model.n_heads
    series = [curve(run, f"probe/head_specialisation/{h}", seed) for h in range(H)]
    return series[0][0], np.min([v for _, v in series], axis=0)


def at_time(t: np.ndarray, v: np.ndarray, t0: float) -> float:
    """v interpolated at t0 in ln t."""
    return float(np.interp(np.log(t0), np.log(t), v))


def head_mean(run, prefix: str) -> pd.Series:
    """Final value of probe/<prefix>/<h> averaged over heads, per seed."""
    H = run.config.model.n_heads
    return pd.concat([run.final(f"{prefix}/{h}") for h in range(H)], axis=1).mean(axis=1)


# -- phases (claim 1) ------------------------------------------------------------------------------
def loss_phases(t: np.ndarray, loss: np.ndarray) -> dict:
    """Warm-up plateau, drops and convergence of one loss curve on the time axis (t > 0).

    warm-up: the first plateau, if it starts at the first sample and sits within 10% of the initial
    loss; emergence: the first drop that starts after the warm-up begins; convergence: after the last
    drop, with the loss at rest at the end — its log-log slope over the last half-decade of time
    below 0.1 (the plateau threshold of `probes.phases`)."""
    plateaus = detect_plateaus(t, loss)
    drops = detect_drops(t, loss)
    warm = plateaus[0] if plateaus else None
    warm_ok = bool(warm is not None and warm.start <= t[0] * 1.5 and warm.value >= 0.9 * loss[0])
    emergence = next((d for d in drops if warm is None or d.start >= warm.start), None)
    t_back = t[-1] / 10**0.5
    slope = abs(np.log(at_time(t, loss, t_back) / loss[-1])) / np.log(t[-1] / t_back)
    return {
        "warmup": (warm.start, warm.end, warm.value) if warm_ok else None,
        "drops": [(d.start, d.end, d.midpoint, d.depth) for d in drops],
        "emergence": (emergence.start, emergence.end, emergence.midpoint, emergence.depth) if emergence else None,
        "final_log_log_slope": float(slope),
        "convergence_start": drops[-1].end if drops else None,
        "converged": bool(slope < 0.1),
    }


def _missing(id, statement, source, expected, what) -> Claim:
    return Claim(id, statement, source, None, expected, None, note=f"not measured: {what} is not in this run")


def phase_claims(run) -> list[Claim]:
    s1 = ("The loss shows three phases: a slow warm-up (a plateau at the initial loss), an emergence drop, "
          "then convergence (the loss at rest)")
    s2 = ("During the emergence drop each head picks a task: r_h = max_i|ω_iμ_i|/Σ_i|ω_iμ_i| rises from ≈1/I to "
          "≈1 as the loss falls, so at the drop's midpoint (loss halfway down) every head is at least a quarter "
          "of the way (min over heads of r_h there)")
    e1 = ("warm-up ≥ 0.5 decades within 10% of the initial loss; a drop losing ≥ 50%; then a final "
          "log-log slope < 0.1")
    if run is None:
        return [_missing("phases_three", s1, SOURCE, e1, "a multi-head run"),
                _missing("emergence_specialises_heads", s2, SOURCE, "≥ 1/I + (1 − 1/I)/4", "a multi-head run")]
    I = run.config.task.n_tasks
    quarter = 1 / I + 0.25 * (1 - 1 / I)
    e2 = f"≥ {quarter:.3f} = 1/I + (1 − 1/I)/4"
    per_seed, r_mid, details1, details2 = [], [], {}, {}
    ok = []
    for seed in run.seeds:
        t, loss = curve(run, "loss/test", seed, same_prompts=True)
        ph = loss_phases(t, loss)
        em = ph["emergence"]
        ok.append(ph["warmup"] is not None and em is not None and em[3] >= 0.5 and ph["converged"])
        per_seed.append(em[2] if em else float("nan"))
        details1[f"seed {seed}"] = ph
        tr, r = min_specialisation(run, seed)
        peak = int(np.argmax(r))
        spec = r >= SPECIALISED
        spec_t = float(tr[np.argmax(spec)]) if spec.any() else None
        d = {"one_over_I": 1.0 / I, "r_peak": float(r[peak]), "t_peak": float(tr[peak]), "r_final": float(r[-1]),
             "first_time_all_heads_specialised": spec_t}
        if spec_t is not None:
            # how much of the total fall of the loss (in log) had happened before the heads specialised
            l0, l1, ls = loss[0], loss[-1], at_time(t, loss, spec_t)
            d["loss_when_first_specialised"] = ls
            d["share_of_log_loss_fall_before_specialisation"] = float(np.log(l0 / ls) / np.log(l0 / l1))
        if em:
            d.update(r_drop_start=at_time(tr, r, em[0]), r_drop_midpoint=at_time(tr, r, em[2]),
                     r_drop_end=at_time(tr, r, em[1]), r_max_in_drop=float(r[(tr >= em[0]) & (tr <= em[1])].max()))
        r_mid.append(d["r_drop_midpoint"] if em else float("nan"))
        details2[f"seed {seed}"] = d
    c1 = Claim("phases_three", s1, f"{SOURCE}, abstract (three-phase dynamics)",
               float(np.nanmedian(per_seed)) if np.isfinite(per_seed).any() else None, e1,
               bool(all(ok)), tolerance="phase detection thresholds of probes/phases.py", per_seed=per_seed,
               note="measured: time (Σ lr) of the emergence drop's midpoint", details=details1)
    r_mid = np.asarray(r_mid, float)
    valid = bool(np.isfinite(r_mid).all())
    first = details2[f"seed {run.seeds[0]}"]
    note = None
    if valid and r_mid.min() < quarter:
        share = first.get("share_of_log_loss_fall_before_specialisation")
        note = (f"the fast part of the drop is symmetric: the heads stay shared (r = {first['r_drop_midpoint']:.2f} "
                f"at its midpoint) while learning the same single-head solution; they specialise later (r peaks "
                f"at {first['r_peak']:.2f}, t ≈ {first['t_peak']:.0f}), in a second, slower fall, after "
                + (f"{share:.0%} of the loss's fall (in log)" if share is not None else "most of the fall")
                + f", and later mix again (r = {first['r_final']:.2f} at the end)")
    c2 = Claim("emergence_specialises_heads", s2, f"{SOURCE}, emergence phase",
               float(r_mid.min()) if valid else None, e2, bool(r_mid.min() >= quarter) if valid else None,
               tolerance="a quarter of the way from 1/I to 1", per_seed=r_mid.tolist(),
               note=note if valid else "no emergence drop was detected", details=details2)
    return [c1, c2]


# -- allocation (claim 2) ----------------------------------------------------------------------------
def allocation(run, seed: int) -> np.ndarray:
    """Signed ω_iμ_i per head and task (H, I) at the last record."""
    omega, mu = semi_singular(run, seed)
    return omega * mu


def allocation_claims(run) -> list[Claim]:
    s1 = "In the limit each head keeps one task: r_h ≈ 1 for every head (min over heads, last record)"
    s2 = ("With H ≥ I every task is covered: each task's held-out loss is below half the zero predictor's "
          "(min over tasks of 1 − loss_i/loss_i(zero))")
    if run is None:
        return [_missing("allocation_one_task_per_head", s1, SOURCE, f"≥ {SPECIALISED}", "a multi-head run"),
                _missing("allocation_covers_tasks", s2, SOURCE, "> 0.5", "a multi-head run")]
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    r_final = np.array([min_specialisation(run, s)[1][-1] for s in run.seeds])
    peaks = [min_specialisation(run, s) for s in run.seeds]
    mats = {f"seed {s}": {"omega_mu": allocation(run, s).round(4).tolist(),
                          "omega": semi_singular(run, s)[0].round(4).tolist(),
                          "mu": semi_singular(run, s)[1].round(4).tolist()} for s in run.seeds}
    note = None
    if r_final.min() < SPECIALISED:
        t, r = peaks[0]
        note = (f"each head specialises only transiently (min_h r_h peaks at {r.max():.2f}, "
                f"t ≈ {t[np.argmax(r)]:.0f}); "
                f"the limit pairs the heads with opposite signs on the other task (see the allocation matrix)")
    c1 = Claim("allocation_one_task_per_head", s1, f"{SOURCE}, task allocation", float(r_final.min()),
               f"≥ {SPECIALISED}", bool(r_final.min() >= SPECIALISED), tolerance="r ≥ 0.9",
               per_seed=r_final.tolist(), note=note,
               details={"allocation": mats, "rows": "heads", "columns": "tasks"})
    cover = []
    for s in run.seeds:
        losses = [float(run.final(f"probe/task_loss/{i}").get(s, np.nan)) for i in range(I)]
        cover.append(min(1 - li / 0.5 for li in losses))   # ½ E y_{q,i}² = ½: the zero predictor's loss
    cover = np.asarray(cover)
    c2 = Claim("allocation_covers_tasks", s2, f"{SOURCE}, task allocation (H ≥ I)",
               float(cover.min()) if np.isfinite(cover).all() else None, "> 0.5",
               bool(cover.min() > 0.5) if np.isfinite(cover).all() else None, per_seed=cover.tolist(),
               details={"H": H, "I": I})
    return [c1, c2]


# -- optimality (claim 3) ----------------------------------------------------------------------------
def optimality_claim(run) -> Claim:
    statement = ("The trained model's held-out loss is close to the best H-head decomposable model's "
                 "(ratio trained / numerical optimum)")
    expected = "within [0.95, 1.05] (± 3 Monte-Carlo standard errors of the optimum)"
    if run is None:
        return _missing("optimal_among_multihead", statement, SOURCE, expected, "a multi-head run")
    glob, glob_se = theory_value(run, "optimum/global/loss"), theory_value(run, "optimum/global/stderr")
    per = theory_value(run, "optimum/one_head_per_task/loss")
    per_se = theory_value(run, "optimum/one_head_per_task/stderr")
    single = theory_value(run, "optimum/single_head/loss")
    if not np.isfinite(glob):
        return _missing("optimal_among_multihead", statement, SOURCE, expected,
                        "the numerical optimum (H·I > optimum_max_params)")
    loss = run.final("loss/test")
    r_final = np.array([min_specialisation(run, s)[1][-1] for s in run.seeds])
    one_per_task = bool(np.isfinite(per) and r_final.min() >= SPECIALISED)
    ref, ref_se, tag = (per, per_se, "one_head_per_task") if one_per_task else (glob, glob_se, "global")
    ratio = loss.to_numpy() / ref
    slack = 3 * ref_se / ref
    m = float(ratio.mean())
    passed = bool((ratio >= 0.95 - slack).all() and (ratio <= 1.05 + slack).all())
    basin = ("one head per task (compared with the best one-head-per-task model)" if one_per_task else
             "heads paired with opposite signs on the other tasks (compared with the global optimum, an "
             "infimum at ω → 0)")
    return Claim("optimal_among_multihead", statement, f"{SOURCE}, optimality of the limit", m, expected, passed,
                 tolerance=f"5% + 3·stderr ({slack:.3f})", per_seed=ratio.tolist(),
                 note=f"the trained model ended in the basin of {basin}",
                 details={"reference": tag, "loss_test": loss.tolist(),
                          "optimum_global": glob, "optimum_global_stderr": glob_se,
                          "optimum_one_head_per_task": per, "optimum_one_head_per_task_stderr": per_se,
                          "optimum_single_head": single,
                          "ratio_to_global": (loss.to_numpy() / glob).tolist(),
                          "ratio_to_one_head_per_task": (loss.to_numpy() / per).tolist() if np.isfinite(per) else None,
                          "ratio_to_single_head_optimum": (loss.to_numpy() / single).tolist(),
                          "optimum_prompts": run.config.optimum_prompts})


# -- separation (claim 4) ----------------------------------------------------------------------------
def separation_claim(views: dict) -> Claim:
    statement = ("One head is strictly worse than H = I heads, and the gap grows with the number of tasks I "
                 "(held-out loss ratio single/multi for each I)")
    expected = "ratio > 1.05 for every I, increasing in I"
    pairs = {}
    for r in views.values():
        c = r.config
        I = c.task.n_tasks
        if I < 2 or c.task.noise_std != 0 or c.head_signs != "positive" or c.model.n_heads != I:
            continue
        one = find_view(views, I, 1)
        if one is not None:
            pairs[I] = (one, r)
    if len(pairs) < 2:
        return _missing("single_vs_multihead_separation", statement, SOURCE, expected,
                        "a pair of single- and multi-head runs for two or more I")
    Is = sorted(pairs)
    details, means = {}, []
    for I in Is:
        one, multi = pairs[I]
        a, b = one.final("loss/test"), multi.final("loss/test")
        ratio = (a / b).dropna()
        means.append(float(ratio.mean()))
        details[f"I={I}"] = {"ratio": means[-1], "per_seed": ratio.tolist(), "loss_single": a.tolist(),
                             "loss_multi": b.tolist(),
                             "optimum_single_head": theory_value(one, "optimum/single_head/loss")}
    means = np.array(means)
    passed = bool((means > 1.05).all() and (np.diff(means) > 0).all())
    return Claim("single_vs_multihead_separation", statement, f"{SOURCE}, single vs multi-head separation",
                 float(means.min()), expected, passed, tolerance="5%", per_seed=means.tolist(),
                 note=f"per_seed lists the seed-mean ratio for I = {Is}", details=details)


# -- attention regime (claim 5) ------------------------------------------------------------------------
def attention_claims(main, noisy) -> list[Claim]:
    s1 = ("Trained attention scores are O(1) (spread-out attention): the typical score √Var_l(x_lᵀW x_q), "
          "mean over heads")
    s2 = ("Label noise pushes toward more spread-out attention: score scale with noise / without "
          "(same seeds, same training time)")
    out = []
    if main is None:
        out.append(_missing("attention_scores_order_one", s1, SOURCE, "in [0.1, 10]", "a multi-head run"))
    else:
        scale = head_mean(main, "probe/score_scale")
        spread = head_mean(main, "probe/attention_spread")
        mx = head_mean(main, "probe/max_attention")
        ok = bool(((scale > 0.1) & (scale < 10)).all())
        out.append(Claim("attention_scores_order_one", s1, f"{SOURCE}, attention regime", float(scale.mean()),
                         "in [0.1, 10]", ok, tolerance="one decade either side of 1", per_seed=scale.tolist(),
                         details={"attention_spread (fraction of keys attended)": spread.tolist(),
                                  "max_attention_weight": mx.tolist(),
                                  "uniform_weight": 1 / main.config.task.n_points}))
    expected = "< 0.9 (at least 10% smaller scores with noise)"
    if main is None or noisy is None:
        out.append(_missing("noise_spreads_attention", s2, SOURCE, expected, "a run with label noise"))
        return out
    a, b = head_mean(noisy, "probe/score_scale"), head_mean(main, "probe/score_scale")
    ratio = (a / b).dropna()
    spread = (head_mean(noisy, "probe/attention_spread") / head_mean(main, "probe/attention_spread")).dropna()
    m = float(ratio.max())
    note = None
    if m >= 0.9:
        note = (f"noise σ = {noisy.config.task.noise_std:g} barely changes the attention scale here "
                f"(ratio {ratio.mean():.3f}, the fraction of keys attended changes by a factor "
                f"{spread.mean():.3f})")
    out.append(Claim("noise_spreads_attention", s2, f"{SOURCE}, attention regime with noise", m, expected,
                     bool(m < 0.9), tolerance="10%", per_seed=ratio.tolist(), note=note,
                     details={"noise_std": noisy.config.task.noise_std, "score_scale_noisy": a.tolist(),
                              "score_scale_clean": b.tolist(), "attention_spread_ratio": spread.tolist()}))
    return out


# -- debiased GD (claim 6) -----------------------------------------------------------------------------
def debiased_claims(views: dict) -> list[Claim]:
    s1 = ("With one task and several heads, the heads pair up with opposite signs: their biases cancel, "
          "|Σ_h μ_h| / Σ_h |μ_h| ≈ 0, while every head contributes a positive step ω_hμ_h")
    s2 = ("With one task and several heads the model matches one-step GD on centred data (debiased GD): "
          "held-out loss / centred GD's population loss")
    e1, e2 = "< 0.1 with ω_hμ_h > 0 for all h", "≤ 1.10 (the pair reaches debiased GD only as ω → 0)"
    run = next((r for r in views.values() if r.config.task.n_tasks == 1 and r.config.model.n_heads >= 2
                and r.config.head_signs == "alternating"), None)
    control = next((r for r in views.values() if r.config.task.n_tasks == 1 and r.config.model.n_heads >= 2
                    and r.config.head_signs == "positive"), None)
    if run is None:
        return [_missing("debiased_heads_pair_up", s1, SOURCE_FOLLOWUP, e1, "a one-task run with mixed head signs"),
                _missing("debiased_matches_centred_gd", s2, SOURCE_FOLLOWUP, e2,
                         "a one-task run with mixed head signs")]

    def cancel(r, seed):
        omega, mu = semi_singular(r, seed)
        return float(abs(mu[:, 0].sum()) / np.abs(mu[:, 0]).sum()), bool((omega[:, 0] * mu[:, 0] > 0).all())

    vals = [cancel(run, s) for s in run.seeds]
    c = np.array([v[0] for v in vals])
    pos = all(v[1] for v in vals)
    ctrl = {}
    if control is not None:
        ctrl = {"same_sign_init_cancellation": [cancel(control, s)[0] for s in control.seeds],
                "same_sign_init_loss": control.final("loss/test").tolist()}
    heads = {f"seed {s}": dict(zip(("omega", "mu"), (v[:, 0].tolist() for v in semi_singular(run, s))))
             for s in run.seeds}
    first = Claim("debiased_heads_pair_up", s1, f"{SOURCE_FOLLOWUP}, debiased-GD heads", float(c.max()), e1,
                  bool(c.max() < 0.1 and pos), per_seed=c.tolist(),
                  note=("heads start with alternating signs; from the spec's all-positive init they do not pair "
                        "(see same_sign_init_* in details)") if control is not None else None,
                  details={**heads, **ctrl})
    loss = run.final("loss/test")
    cgd = theory_value(run, "theory/centred_gd_loss")
    gd = theory_value(run, "theory/gd_loss")
    ratio = loss / cgd
    details = {"loss_test": loss.tolist(), "centred_gd_closed_form": cgd, "gd_closed_form": gd,
               "centred_gd_on_test_prompts": run.final("baseline/centred_gd").tolist(),
               "gd_on_test_prompts": run.final("baseline/gd").tolist(),
               "ratio_to_gd_estimator": (loss / run.final("baseline/gd").iloc[0]).tolist()
               if len(run.final("baseline/gd")) else None,
               "pred_rel_diff_centred_gd": run.final("probe/pred_rel_diff/centred_gd").tolist(),
               "pred_rel_diff_gd": run.final("probe/pred_rel_diff/gd").tolist(),
               "optimum_two_heads": theory_value(run, "optimum/global/loss"),
               "optimum_one_head": theory_value(run, "optimum/single_head/loss")}
    if control is not None:
        details["same_sign_init_ratio_to_centred_gd"] = (control.final("loss/test") / cgd).tolist()
    second = Claim("debiased_matches_centred_gd", s2, f"{SOURCE_FOLLOWUP}, debiased GD", float(ratio.max()), e2,
                   bool(ratio.max() <= 1.10), tolerance="10%", per_seed=ratio.tolist(),
                   note=(f"on this zero-mean data centring costs one example: centred GD {cgd:.4f} vs one-step GD "
                         f"{gd:.4f} (population), so the multi-head model cannot beat plain GD here"),
                   details=details)
    return [first, second]


# -- decomposability (the paper's invariance) -------------------------------------------------------------
def decomposability_claim(views: dict) -> Claim:
    statement = ("Training the full matrices W, U from a decomposable init stays decomposable: the part of (W, U) "
                 "outside the family, relative to its norm (every run of this command, worst seed, last record)")
    vals, details = [], {}
    for name, r in views.items():
        v = r.final("probe/off_decomposable_relative")
        if len(v) and r.config.model.parametrisation == "full":
            vals.append(float(v.max()))
            details[name] = v.tolist()
    if not vals:
        return _missing("stays_decomposable", statement, SOURCE, "< 0.05", "a full-parametrisation run")
    bad = [name for name, v in details.items() if max(v) >= 0.05]
    note = "per_seed lists the worst seed of each run"
    if bad:
        note += (f"; off the family at the end: {', '.join(bad)} — where the leak keeps growing on the Σ lr clock "
                 f"while the learning rate decays, it is not the random walk of minibatch noise: the family does "
                 f"not attract there (a flat or unstable direction, driven by the finite prompt pool); see "
                 f"probe/off_decomposable_relative and probe/projected_loss over time")
    return Claim("stays_decomposable", statement, f"{SOURCE}, decomposable dynamics", max(vals), "< 0.05",
                 bool(max(vals) < 0.05), tolerance="finite prompt sets leak O(1/√prompts) per step",
                 per_seed=vals, note=note, details=details)
