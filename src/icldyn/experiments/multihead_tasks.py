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

What the quick preset shows, and how the claims read it (thresholds fixed here, from theory):
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
- emergence_specialises_heads: the emergence phase is located on min_h r_h (`emergence_window`); the
  loss must fall over it by ≥ half the gap between the best single-head and the best one-head-per-task
  loss (what the allocation is worth), and the phase detector must see the loss dropping over ≥ half of it.
- allocation_one_task_per_head: at the peak of min_h r_h, r_h ≥ 0.9 for every head, the heads cover all
  tasks, and the loss there is within 10% of the best one-head-per-task loss (the allocated stationary point).
- optimal_among_multihead: final loss / global optimum in [1 − 3 stderr, c].
- pairing_beats_allocation (finite-L finding, ours): final loss / one-head-per-task optimum ≤ (1 + g)/2,
  g = global / one-head-per-task optimum: at least halfway from the allocated to the global optimum.
- debiased_heads_pair_up: measured on the main run, where training produced it from the all-positive init
  (cancellation |Σ_h μ_i^h|/Σ_h|μ_i^h| = 1 at init, < 0.1 at the end). With one task, two heads started alike
  stay at the single-head optimum over this training time; the one-task run therefore starts paired and
  tests debiased_matches_centred_gd (loss ≤ 1.1 × centred GD's closed form).
- noise_spreads_attention: σ is chosen so that theory predicts a visible effect: the optimal centred-GD
  step shrinks by (L + d₀)/(L + d₀ + σ²d₀) = 0.84 at σ = 2 (L = 80, d₀ = 4); at the spec's example σ = 0.5 it
  is 0.99, too small to test, and the claim reports None below a predicted 10%. The measure is the score
  scale √Var_l(s_l), noisy / clean at the same Σ lr, < 0.9. (The best one-head-per-task model does not
  shrink its score with noise — ω* 0.490 at σ = 0, 0.504 at σ = 2 —; the effect is the trained paired heads'.)
- stays_decomposable: off-family part / norm < 0.05 at the end of every run on fresh prompts (the exact
  invariance is tested on a symmetrised batch in tests/test_multihead.py).
- paired_allocation_h_2i: with H = 2I (the main I) the two readings agree — training from the same
  all-positive init ends with one task per head (r_h ≥ 0.9) and each task held by an opposite-sign pair,
  at a loss within 10% of I × centred GD's closed form (the debiased limit per task). So the allocation is
  the limit when there are heads to spare for the pairs; with H = I it is a stage.

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
from icldyn.analysis.runs import views as run_views
from icldyn.claims import Claim
from icldyn.experiments.base import Experiment
from icldyn.models.multihead_attention import MultiheadAttentionConfig
from icldyn.probes import build_probes
from icldyn.analysis.phases import detect_drops, detect_plateaus, first_crossing
from icldyn.models import ModelConfig
from icldyn.tasks import TaskConfig
from icldyn.tasks.multitask_regression import MultitaskRegressionConfig
from icldyn.theory import multihead as mh

SOURCE = "Chen, Sheen, Wang & Yang 2024 (arXiv 2402.19442)"
SOURCE_FOLLOWUP = "He, Pan, Chen & Yang 2025 (arXiv 2503.12734)"
SPECIALISED = 0.9          # r_h above this: the head keeps one task
CONVERGED_SLOPE = 0.3      # |d ln loss / d ln t| below this at the end: no drop in progress (analysis.phases)


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
        out += optimality_claims(main)
        out.append(separation_claim(views))
        out += attention_claims(main, noisy)
        out += debiased_claims(views, main)
        out.append(paired_allocation_claim(views))
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


def specialisation(run, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step, time, min over heads of r_h) for one seed, t > 0."""
    H = run.config.model.n_heads
    m = run.metrics
    m = m[(m["seed"] == seed) & (m["time"] > 0) & m["name"].isin([f"probe/head_specialisation/{h}" for h in range(H)])]
    g = m.groupby(["step", "time"])["value"].min().reset_index().sort_values("time")
    return g["step"].to_numpy(), g["time"].to_numpy(), g["value"].to_numpy()


def emergence_window(t: np.ndarray, r: np.ndarray, n_tasks: int) -> tuple[float, float] | None:
    """The emergence phase of min_h r_h (T,): from its last upward crossing of 1/I + (1 − 1/I)/4 before its
    peak to its first crossing of 95% of the way from 1/I to the peak; None when the peak is below
    SPECIALISED or r never sat near 1/I before it."""
    k = int(np.argmax(r))
    base = 1 / n_tasks
    if r[k] < SPECIALISED:
        return None
    below = np.flatnonzero(r[:k + 1] <= base + 0.25 * (1 - base))
    if not below.size:
        return None
    j = below[-1]
    start = first_crossing(t[j:k + 1], r[j:k + 1], base + 0.25 * (1 - base), "up")
    end = first_crossing(t[j:k + 1], r[j:k + 1], base + 0.95 * (r[k] - base), "up")
    return float(start), float(end)


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
    drop, with no fast fall in progress at the end — the log-log slope over the last half-decade of
    time below 0.3, the drop threshold of `analysis.phases`. (Not the plateau threshold 0.1: here the
    limit is approached like an infimum, the paired heads' ω → 0, so the loss creeps rather than rests.)"""
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
        "converged": bool(slope < CONVERGED_SLOPE),
    }


def _missing(id, statement, source, expected, what) -> Claim:
    return Claim(id, statement, source, None, expected, None, note=f"not measured: {what} is not in this run")


def phase_claims(run) -> list[Claim]:
    s1 = ("The loss shows three phases: a slow warm-up (a plateau at the initial loss), fast drops (the emergence), "
          "then convergence (the loss at rest)")
    s2 = ("Emergence: each head picks a task while the loss drops. The emergence phase is where min_h r_h "
          "(r_h = max_i|ω_iμ_i|/Σ_i|ω_iμ_i|) rises from ≈1/I (its last upward crossing of 1/I + (1 − 1/I)/4) "
          "to ≈1 (95% of the way from 1/I to its peak, the peak ≥ 0.9); measured: the loss's fall over that "
          "phase as a fraction of the gap between the best shared (single-head) model and the best "
          "one-head-per-task model, which is what allocating the tasks is worth")
    e1 = ("warm-up ≥ 0.5 decades within 10% of the initial loss; a drop losing ≥ 50%; then a final "
          f"log-log slope < {CONVERGED_SLOPE}")
    e2 = "≥ 0.5, with the loss detected as dropping over ≥ half the phase (in ln t)"
    if run is None:
        return [_missing("phases_three", s1, SOURCE, e1, "a multi-head run"),
                _missing("emergence_specialises_heads", s2, SOURCE, e2, "a multi-head run")]
    I = run.config.task.n_tasks
    single = theory_value(run, "optimum/single_head/loss")
    alloc = theory_value(run, "optimum/one_head_per_task/loss")
    gap = single - alloc
    per_seed, frac, details1, details2 = [], [], {}, {}
    ok, inside = [], []
    for seed in run.seeds:
        t, loss = curve(run, "loss/test", seed, same_prompts=True)
        ph = loss_phases(t, loss)
        em = ph["emergence"]
        ok.append(ph["warmup"] is not None and em is not None and em[3] >= 0.5 and ph["converged"])
        per_seed.append(em[2] if em else float("nan"))
        details1[f"seed {seed}"] = ph
        _, tr, r = specialisation(run, seed)
        win = emergence_window(tr, r, I)
        d = {"one_over_I": 1.0 / I, "r_peak": float(r.max()), "t_peak": float(tr[np.argmax(r)]),
             "r_final": float(r[-1]), "emergence_window": win, "optimum_single_head": single,
             "optimum_one_head_per_task": alloc}
        if win is None or not np.isfinite(gap):
            frac.append(float("nan") if not np.isfinite(gap) else 0.0)
            inside.append(False)
        else:
            a, b = win
            la, lb = at_time(t, loss, a), at_time(t, loss, b)
            frac.append(float((la - lb) / gap))
            # share of the phase (in ln t) during which the phase detector sees the loss dropping
            covered = sum(max(0.0, np.log(min(b, dr[1]) / max(a, dr[0]))) for dr in ph["drops"]) / np.log(b / a)
            inside.append(bool(covered >= 0.5))
            d.update(loss_at_start=la, loss_at_end=lb, share_of_phase_in_a_loss_drop=float(covered),
                     r_at_first_drop_midpoint=at_time(tr, r, ph["drops"][0][2]) if ph["drops"] else None)
        details2[f"seed {seed}"] = d
    c1 = Claim("phases_three", s1, f"{SOURCE}, abstract (three-phase dynamics)",
               float(np.nanmedian(per_seed)) if np.isfinite(per_seed).any() else None, e1,
               bool(all(ok)), tolerance="phase detection thresholds of analysis/phases.py", per_seed=per_seed,
               note="measured: time (Σ lr) of the first drop's midpoint", details=details1)
    frac = np.asarray(frac, float)
    valid = bool(np.isfinite(frac).all())
    note = ("a first, faster drop comes before the emergence: both heads learn the same shared (single-head) "
            "solution while r_h stays ≈ 1/I (r at its midpoint in details), and the loss rests at the best "
            "single-head loss until the symmetry between the heads breaks")
    c2 = Claim("emergence_specialises_heads", s2, f"{SOURCE}, emergence phase",
               float(frac.min()) if valid else None, e2,
               bool(frac.min() >= 0.5 and all(inside)) if valid else None,
               tolerance="half the single-head → one-head-per-task gap", per_seed=frac.tolist(),
               note=note if valid else "the numerical optima are not in this run", details=details2)
    return [c1, c2]


# -- allocation (claim 2) ----------------------------------------------------------------------------
def allocation(run, seed: int, step: int | None = None) -> np.ndarray:
    """Signed ω_iμ_i per head and task (H, I) at `step` (default: the last record)."""
    omega, mu = semi_singular(run, seed, step)
    return omega * mu


def allocation_claims(run) -> list[Claim]:
    s1 = ("At the end of the emergence each head keeps one task and every task has a head: at the peak of "
          "min_h r_h every head has r_h ≥ 0.9, the heads' dominant tasks cover all I tasks, and the model sits "
          "at the best one-head-per-task model (loss there / that optimum)")
    s2 = ("With H ≥ I every task is covered at the end: each task's held-out loss is below half the zero "
          "predictor's (min over tasks of 1 − loss_i/loss_i(zero))")
    e1 = "in [0.9, 1.1], with min_h r_h ≥ 0.9 and all tasks covered"
    if run is None:
        return [_missing("allocation_one_task_per_head", s1, SOURCE, e1, "a multi-head run"),
                _missing("allocation_covers_tasks", s2, SOURCE, "> 0.5", "a multi-head run")]
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    alloc = theory_value(run, "optimum/one_head_per_task/loss")
    ratios, details, oks = [], {"optimum_one_head_per_task": alloc}, []
    for s in run.seeds:
        steps, tr, r = specialisation(run, s)
        k = int(np.argmax(r))
        p = np.abs(allocation(run, s, int(steps[k])))
        covered = sorted(set(np.argmax(p, axis=1).tolist()))
        t, loss = curve(run, "loss/test", s, same_prompts=True)
        ratio = at_time(t, loss, tr[k]) / alloc
        on = tr[r >= SPECIALISED]
        ratios.append(float(ratio))
        oks.append(bool(r[k] >= SPECIALISED and len(covered) == min(H, I) == I and 0.9 <= ratio <= 1.1))
        omega, mu = semi_singular(run, s, int(steps[k]))
        details[f"seed {s}"] = {"t_peak": float(tr[k]), "r_peak": float(r[k]), "tasks_of_heads": covered,
                                "decades_with_all_heads_on_one_task":
                                    float(np.log10(on[-1] / on[0])) if on.size else 0.0,
                                "r_final": float(r[-1]), "omega_at_peak": omega.round(4).tolist(),
                                "mu_at_peak": mu.round(4).tolist(),
                                "omega_final": semi_singular(run, s)[0].round(4).tolist(),
                                "mu_final": semi_singular(run, s)[1].round(4).tolist()}
    ratios = np.asarray(ratios)
    valid = bool(np.isfinite(ratios).all())
    c1 = Claim("allocation_one_task_per_head", s1, f"{SOURCE}, task allocation",
               float(ratios[np.argmax(np.abs(ratios - 1))]) if valid else None, e1,
               bool(all(oks)) if valid else None, tolerance="10% of the optimum",
               per_seed=ratios.tolist(),
               note=("the allocation is a stage, not the end: later the heads pair up with opposite signs on the "
                     "other task (debiased_heads_pair_up) and the loss falls below this optimum "
                     "(pairing_beats_allocation); rows of the matrices are heads, columns tasks"),
               details=details)
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


# -- optimality (claim 3) and the finite-L pairing ---------------------------------------------------------
def optimality_claims(run) -> list[Claim]:
    s1 = ("The trained model's final loss is within a constant factor of the best H-head model: at most the "
          "factor by which the paper's limit, one head per task, exceeds the numerical optimum of the "
          "decomposable family (ratio trained / optimum)")
    s2 = ("Finite L (our reconstruction): after the allocation the heads pair up into debiased GD and the loss "
          "falls below the best one-head-per-task model's, at least halfway to the global optimum "
          "(final loss / best one-head-per-task loss)")
    e1 = "in [1 − 3·stderr, c], c = best one-head-per-task / global optimum"
    e2 = "≤ (1 + g)/2, g = global / one-head-per-task optimum"
    if run is None:
        return [_missing("optimal_among_multihead", s1, SOURCE, e1, "a multi-head run"),
                _missing("pairing_beats_allocation", s2, SOURCE_FOLLOWUP, e2, "a multi-head run")]
    glob, glob_se = theory_value(run, "optimum/global/loss"), theory_value(run, "optimum/global/stderr")
    per = theory_value(run, "optimum/one_head_per_task/loss")
    single = theory_value(run, "optimum/single_head/loss")
    if not (np.isfinite(glob) and np.isfinite(per)):
        what = "the numerical optima (H·I > optimum_max_params)"
        return [_missing("optimal_among_multihead", s1, SOURCE, e1, what),
                _missing("pairing_beats_allocation", s2, SOURCE_FOLLOWUP, e2, what)]
    loss = run.final("loss/test").to_numpy()
    c, g = per / glob, glob / per
    ratio = loss / glob
    lo = 1 - 3 * glob_se / glob
    details = {"loss_test": loss.tolist(), "optimum_global": glob, "optimum_global_stderr": glob_se,
               "optimum_one_head_per_task": per, "optimum_single_head": single,
               "constant_factor_c": c, "ratio_to_one_head_per_task": (loss / per).tolist(),
               "ratio_to_single_head_optimum": (loss / single).tolist(),
               "optimum_prompts": run.config.optimum_prompts}
    first = Claim("optimal_among_multihead", s1, f"{SOURCE}, optimality of the limit (up to a constant factor)",
                  float(ratio.max()), f"in [{lo:.3f}, {c:.3f}] (c = best one-head-per-task / global optimum)",
                  bool((ratio >= lo).all() and (ratio <= c).all()), tolerance="3 Monte-Carlo stderr below",
                  per_seed=ratio.tolist(), details=details)
    bound = (1 + g) / 2
    pr = loss / per
    second = Claim("pairing_beats_allocation", s2,
                   f"our reconstruction (finite L); debiased heads: {SOURCE_FOLLOWUP}", float(pr.max()),
                   f"≤ {bound:.3f} = (1 + g)/2, g = {g:.3f} (global / one-head-per-task optimum)",
                   bool((pr <= bound).all()), tolerance="halfway from the allocated to the global optimum",
                   per_seed=pr.tolist(),
                   note=("with L finite the softmax's first-order term carries a bias μ·ȳ per head; heads of "
                         "opposite signs cancel it (debiased GD), which one head per task cannot; the global "
                         "optimum is such a pairing (an infimum as ω → 0)"),
                   details={**details, "optimum_global_omega": _optimum_matrix(run, "global", "omega"),
                            "optimum_global_mu": _optimum_matrix(run, "global", "mu")})
    return [first, second]


def _optimum_matrix(run, tag, sym):
    H, I = run.config.model.n_heads, run.config.task.n_tasks
    return [[theory_value(run, f"optimum/{tag}/{sym}/{h}/{i}") for i in range(I)] for h in range(H)]


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
NOISE_EFFECT = 0.9     # the noise claim needs σ large enough that theory predicts ≥ 10% less step


def noise_step_factor(d0: int, n_points: int, noise_std: float) -> float:
    """How much label noise σ shrinks the optimal centred-GD step (the debiased heads' limit):
    η*(σ)/η*(0) = (L + d₀)/(L + d₀ + σ²d₀) (`theory.multihead.centred_gd_step`)."""
    return mh.centred_gd_step(d0, n_points, noise_std) / mh.centred_gd_step(d0, n_points, 0.0)


def attention_claims(main, noisy) -> list[Claim]:
    s1 = ("Trained attention scores are O(1) (spread-out attention): the typical score √Var_l(x_lᵀW x_q), "
          "mean over heads")
    s2 = ("Label noise pushes toward more spread-out attention: score scale with noise / without, at the same "
          "training time (Σ lr), for a σ at which theory predicts a ≥ 10% smaller optimal in-context step")
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
    expected = f"< {NOISE_EFFECT} (at least 10% smaller scores with noise)"
    if main is None or noisy is None:
        out.append(_missing("noise_spreads_attention", s2, SOURCE, expected, "a run with label noise"))
        return out
    tc = noisy.config.task
    factor = noise_step_factor(tc.d0, tc.test_points, tc.noise_std)
    H = noisy.config.model.n_heads
    ratios, details = [], {"noise_std": tc.noise_std, "theory_step_factor": factor}
    for s in noisy.seeds:
        # the clean run's score scale at the noisy run's final time (records are log-spaced in Σ lr)
        t_end = float(noisy.metrics[noisy.metrics["seed"] == s]["time"].max())
        a = np.mean([float(noisy.final(f"probe/score_scale/{h}").get(s, np.nan)) for h in range(H)])
        clean = []
        for h in range(main.config.model.n_heads):
            t, v = curve(main, f"probe/score_scale/{h}", s)
            clean.append(at_time(t, v, t_end) if t_end < t[-1] else float(v[-1]))
        b = float(np.mean(clean))
        ratios.append(a / b)
        details[f"seed {s}"] = {"time": t_end, "score_scale_noisy": a, "score_scale_clean": b,
                                "fitted_step_ratio_centred_gd": float(
                                    noisy.final("probe/fitted_step/centred_gd").get(s, np.nan)
                                    / main.final("probe/fitted_step/centred_gd").get(s, np.nan))
                                if len(main.final("probe/fitted_step/centred_gd")) else None}
    ratios = np.asarray(ratios)
    if factor > NOISE_EFFECT:
        out.append(Claim("noise_spreads_attention", s2, f"{SOURCE}, attention regime with noise",
                         float(ratios.max()), expected, None, per_seed=ratios.tolist(), details=details,
                         note=f"not tested: at σ = {tc.noise_std:g} theory predicts only a {1 - factor:.1%} smaller "
                              f"step (needs σ²d₀ ≥ (L + d₀)/9)"))
        return out
    note = ("the best one-head-per-task model keeps its score as σ grows (its ω* rises slightly, our numerics); "
            "the spreading is seen in the trained, paired (debiased) heads")
    out.append(Claim("noise_spreads_attention", s2, f"{SOURCE}, attention regime with noise", float(ratios.max()),
                     expected, bool(ratios.max() < NOISE_EFFECT), tolerance="10%", per_seed=ratios.tolist(),
                     note=note, details=details))
    return out


# -- debiased GD (claim 6) -----------------------------------------------------------------------------
def cancellation(run, seed: int, step: int | None = None) -> np.ndarray:
    """Per task |Σ_h μ_i^h| / Σ_h |μ_i^h| (I,): 1 when every head's output has one sign, 0 for exact pairs."""
    _, mu = semi_singular(run, seed, step)
    return np.abs(mu.sum(0)) / np.maximum(np.abs(mu).sum(0), np.finfo(float).tiny)


def debiased_claims(views: dict, main=None) -> list[Claim]:
    s1 = ("Training pairs the heads with opposite signs (debiased GD): from the all-positive init "
          "(|Σ_h μ_i^h| / Σ_h |μ_i^h| = 1 on every task), at the end every task's heads cancel their bias, "
          "|Σ_h μ_i^h| / Σ_h |μ_i^h| ≈ 0, while every head still takes a positive step ω_i^hμ_i^h on it "
          "(multi-head run, max over tasks)")
    s2 = ("With one task and several heads the model matches one-step GD on centred data (debiased GD): "
          "held-out loss / centred GD's population loss")
    e1 = "< 0.1 with ω_i^hμ_i^h > 0 for all h, i, from an init > 0.9"
    e2 = "≤ 1.10 (the pair reaches debiased GD only as ω → 0)"
    alt = next((r for r in views.values() if r.config.task.n_tasks == 1 and r.config.model.n_heads >= 2
                and r.config.head_signs == "alternating"), None)
    control = next((r for r in views.values() if r.config.task.n_tasks == 1 and r.config.model.n_heads >= 2
                    and r.config.head_signs == "positive"), None)
    out = []
    if main is None:
        out.append(_missing("debiased_heads_pair_up", s1, SOURCE_FOLLOWUP, e1, "a multi-head run"))
    else:
        vals, details = [], {}
        ok = True
        for s in main.seeds:
            first = int(main.metrics[main.metrics["seed"] == s]["step"].min())
            c0, c1 = cancellation(main, s, first), cancellation(main, s)
            omega, mu = semi_singular(main, s)
            pos = bool((omega * mu > 0).all())
            ok &= bool(c1.max() < 0.1 and pos and c0.min() > 0.9)
            vals.append(float(c1.max()))
            details[f"seed {s}"] = {"cancellation_init": c0.round(4).tolist(), "cancellation_final": c1.round(4).tolist(),
                                    "positive_steps": pos, "omega": omega.round(4).tolist(), "mu": mu.round(4).tolist()}
        for tag, r in (("one_task_alternating_init", alt), ("one_task_same_sign_init", control)):
            if r is not None:
                details[tag] = {"cancellation_final": [float(cancellation(r, s)[0]) for s in r.seeds],
                                "loss_test": r.final("loss/test").tolist()}
        note = ("with two tasks the allocation breaks the symmetry between the heads and the pairing follows it; "
                "with one task, two heads started alike stay together at the single-head optimum over this "
                "training time (one_task_same_sign_init), so the one-task runs start paired (alternating init)")
        out.append(Claim("debiased_heads_pair_up", s1, f"{SOURCE_FOLLOWUP}, debiased-GD heads", float(max(vals)), e1,
                         bool(ok), per_seed=vals, note=note, details=details))
    if alt is None:
        out.append(_missing("debiased_matches_centred_gd", s2, SOURCE_FOLLOWUP, e2,
                            "a one-task run with mixed head signs"))
        return out
    run = alt
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
               "cancellation_final": [float(cancellation(run, s)[0]) for s in run.seeds],
               "optimum_two_heads": theory_value(run, "optimum/global/loss"),
               "optimum_one_head": theory_value(run, "optimum/single_head/loss")}
    if control is not None:
        details["same_sign_init_ratio_to_centred_gd"] = (control.final("loss/test") / cgd).tolist()
    out.append(Claim("debiased_matches_centred_gd", s2, f"{SOURCE_FOLLOWUP}, debiased GD", float(ratio.max()), e2,
                     bool(ratio.max() <= 1.10), tolerance="10%", per_seed=ratio.tolist(),
                     note=(f"on this zero-mean data centring costs one example: centred GD {cgd:.4f} vs one-step GD "
                           f"{gd:.4f} (population), so the multi-head model cannot beat plain GD here"),
                     details=details))
    return out


# -- H = 2I: allocation and pairing together ---------------------------------------------------------------
def paired_allocation_claim(views: dict) -> Claim:
    statement = ("With H = 2I heads the limit keeps one task per head and pairs them: at the end every head has "
                 "r_h ≥ 0.9, every task is held by ≥ 2 heads whose outputs cancel their bias (|Σ_h μ_i^h| / "
                 "Σ_h |μ_i^h| < 0.1), and the loss approaches debiased GD on every task (final loss / I × centred "
                 "GD's closed form)")
    expected = "≤ 1.10, with r_h ≥ 0.9 for all h and every task paired"
    run = next((r for r in views.values() if r.config.task.n_tasks >= 2 and r.config.task.noise_std == 0
                and r.config.model.n_heads >= 2 * r.config.task.n_tasks and r.config.head_signs == "positive"), None)
    if run is None:
        return _missing("paired_allocation_h_2i", statement, SOURCE, expected, "a run with H ≥ 2I")
    I = run.config.task.n_tasks
    cgd = theory_value(run, "theory/centred_gd_loss")
    loss = run.final("loss/test")
    ratios, ok, details = [], True, {"centred_gd_closed_form": cgd}
    for s in run.seeds:
        r_final = np.array([float(run.final(f"probe/head_specialisation/{h}").get(s, np.nan))
                            for h in range(run.config.model.n_heads)])
        p = np.abs(allocation(run, s))
        holders = [int((np.argmax(p, axis=1) == i).sum()) for i in range(I)]
        c = cancellation(run, s)
        ratio = float(loss.get(s, np.nan) / cgd)
        ratios.append(ratio)
        ok &= bool(r_final.min() >= SPECIALISED and min(holders) >= 2 and c.max() < 0.1 and ratio <= 1.10)
        omega, mu = semi_singular(run, s)
        details[f"seed {s}"] = {"r_final": r_final.round(4).tolist(), "heads_per_task": holders,
                                "cancellation": c.round(4).tolist(), "omega": omega.round(3).tolist(),
                                "mu": mu.round(3).tolist()}
    ratios = np.asarray(ratios)
    valid = bool(np.isfinite(ratios).all())
    return Claim("paired_allocation_h_2i", statement, f"{SOURCE}, task allocation; {SOURCE_FOLLOWUP}, debiased heads",
                 float(ratios.max()) if valid else None, expected, bool(ok) if valid else None, tolerance="10%",
                 per_seed=ratios.tolist(),
                 note=("with H = I the heads must choose between one task each and opposite-sign pairs (the pairs "
                       "win, see pairing_beats_allocation); with H = 2I both hold together"), details=details)


# -- decomposability (the paper's invariance) -------------------------------------------------------------
DECOMPOSABLE_BOUND = 0.05


def decomposability_claim(views: dict) -> Claim:
    statement = ("Training the full matrices W, U from a decomposable init stays decomposable: the part of (W, U) "
                 "outside the family, relative to its norm (every run of this command trained on fresh prompts, "
                 "worst seed, last record)")
    vals, details, pooled = [], {}, []
    for name, r in views.items():
        v = r.final("probe/off_decomposable_relative")
        if not len(v) or r.config.model.parametrisation != "full":
            continue
        if r.config.train.dataset_size is not None:
            pooled.append(name)
            continue
        vals.append(float(v.max()))
        details[name] = v.tolist()
    e = f"< {DECOMPOSABLE_BOUND}"
    if not vals:
        return _missing("stays_decomposable", statement, SOURCE, e, "a full-parametrisation run on fresh prompts")
    note = ("per_seed lists the worst seed of each run; on fresh prompts the off-family gradient has mean 0 "
            "(the population gradient at a decomposable point is in the family; tests/test_multihead.py shows "
            "it exactly on a symmetrised batch), so only minibatch noise leaks, as a random walk")
    if pooled:
        note += (f"; not counted: {', '.join(pooled)} trained on a finite prompt pool, whose off-family gradient "
                 f"has a non-zero mean (the pool is not symmetric), so the leak there drifts")
    bad = [n for n, v in details.items() if max(v) >= DECOMPOSABLE_BOUND]
    if bad:
        note += f"; off the family at the end: {', '.join(bad)}"
    return Claim("stays_decomposable", statement, f"{SOURCE}, decomposable dynamics", max(vals), e,
                 bool(max(vals) < DECOMPOSABLE_BOUND), tolerance="minibatch noise, fresh prompts",
                 per_seed=vals, note=note, details=details)
