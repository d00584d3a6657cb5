"""feature-convergence: one softmax attention head on K orthonormal features learns to attend to
the query's own feature, phase by phase (Huang, Cheng & Liang 2023, "In-Context Convergence of
Transformers"; spec `structured-features.md`).

One command trains, as variants of one sweep directory (`compare`):
- `balanced`  (p_k = 1/K), only Q trained, from Q(0) = 0;
- `imbalanced` (feature 0 dominant, p_0 = `task.p_dominant`), only Q trained;
- `full`: the imbalanced task with W^{KQ} and W^{PV} both trained (for comparison; W^{PV}'s
  label weight bounds its stable lr, so it runs at `full_lr` over a shorter horizon);
- `K=<K>` for every K of `scaling_K` (`scaling_source="training"`): the K-scaling's balanced runs.
`--set compare=[]` trains the config as given instead (one run). Setting `task.balance` or
`model.train` away from the defaults (balanced, q) while `compare` is the default does the same:
those settings are not overridden by the variants; with an explicit non-empty `compare` it is a
config error. Training is plain GD on large fresh batches (`train.batch_size` prompts every step; a
fixed training set, `train.dataset_size`, is supported by the trainer but its frozen sampling bias
moves a_k(t) by ~0.05 at 8192 prompts), with a linear warm-up so the early, fast phase is resolved
on the time = Σ lr clock. Records are log-spaced on that clock. Errors are plain held-out errors, not
conditioned on the prompt holding the query's feature: N = 20K puts the floor ½(1 − p_k)^N at
≤ 1.3·10⁻⁵, far below the thresholds.

after_training writes theory.parquet: the reduced score dynamics (theory/structured_features.py)
run by GD at the run's own learning-rate schedule, from s = 0, recorded at the run's record steps,
under the probes' names (`probe/feature_error/<k>`, `probe/same_feature_attention/<k>`,
`probe/attention_mass/<k>/<n>`, `probe/score/<k>/<n>`, `loss/test`). With
`scaling_source="theory"` the balanced Q run also writes the reduced gradient flow for each K in
`scaling_K` at N = K · `scaling_tokens_per_feature` (`scaling/K=<K>,N=<N>/{same_feature_attention,
feature_error}`).

Also written there, as constants for the figures: the closed form's crossing times of the balanced
large-N flow (`closed_form/K=<K>/{attention,error}`) and the error floors ½(1 − p_k)^N
(`error_floor/<k>`). The curve analysis (phase markers, crossing times, the K-scaling's points) is
`analysis/feature_convergence.py`; the claims `feature_convergence_claims.py`; the figures
`report/feature_convergence*.py`.

K-scaling (spec claim 5). `scaling_source="training"` (both presets) trains one balanced Q run per
K (variants `K=<K>`, `scaling_overrides`: d ≥ K, N = 20K, lr ∝ K so every feature keeps the clock
lr/K, steps to `scaling_horizon` × the closed form's time to ℓ < 10⁻³, batch `scaling_batch_size`)
and fits the exponents to the trained crossing times; each K's crossing times are also checked
against the reduced dynamics on that run's own clock. `scaling_source="theory"` fits the exponents
of the exact reduced flow instead, with a training check at the balanced run's K only. Both are
compared with the large-N closed form of the balanced flow (our derivation,
`theory.balanced_crossing_time`). The same runs come from `--set sweep.K=[...]` (shorthand for
`scaling_K=[...]` with `scaling_source=training`) and from the generic `--sweep task.K=[...]`: with
`follow_K` (default) a change of task.K moves task.d, task.n_points, train.lr and train.steps with it
as `scaling_overrides` does, unless they are set in the same command.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field, field_validator, model_validator

from icldyn.analysis.feature_convergence import (CLOSED_FORM, EPS_ERROR, ERROR_FLOOR, feature_views,
                                                 is_scaling_run, scaling_points)
from icldyn.claims import Claim
from icldyn.config import ExperimentConfig, Strict, TrainConfig
from icldyn.experiments.base import Experiment
from icldyn.experiments.feature_convergence_claims import evaluate as evaluate_claims
from icldyn.models.softmax_attention import SoftmaxAttentionConfig
from icldyn.probes import build_probes
from icldyn.models import ModelConfig
from icldyn.tasks import TaskConfig
from icldyn.tasks.structured_features import StructuredFeaturesConfig
from icldyn.theory import structured_features as theory
from icldyn.theory.structured_features import balanced_crossing_time
from icldyn.train.schedule import learning_rates, record_steps_in_time, time_at

DEFAULT_COMPARE = ("balanced", "imbalanced", "full")
# what a change of task.K moves along with it (follow_K), and the bookkeeping that detects the change
FOLLOW_KEYS = ("task.K", "task.d", "task.n_points", "train.lr", "train.steps")


class SweepShorthand(Strict):
    """`--set sweep.K=[...]`: shorthand for `--set scaling_K=[...] --set scaling_source=training`."""

    K: list[int] = Field(min_length=1, description="K values of the trained K-scaling")


class FeatureConvergenceConfig(ExperimentConfig):
    experiment: Literal["feature-convergence"] = "feature-convergence"
    task: TaskConfig = StructuredFeaturesConfig(d=5, K=5, n_points=100, balance="balanced")
    model: ModelConfig = SoftmaxAttentionConfig()
    train: TrainConfig = TrainConfig(optimizer="gd", lr=10.0, steps=500, warmup_steps=100, batch_size=4096,
                                     n_records=60, eval_prompts=100_000, eval_prompts_during=8192,
                                     checkpoint_every=200)
    compare: list[Literal["balanced", "imbalanced", "full"]] = Field(
        default=list(DEFAULT_COMPARE),
        description="variants trained by one command (each sets task.balance and model.train); [] trains "
                    "the config as given, e.g. --set compare=[] --set task.balance=imbalanced (with the "
                    "default compare, a non-default task.balance or model.train implies compare=[])")
    full_lr: float = Field(default=1.0, gt=0, description="lr of the `full` variant (W^PV is unstable above ~2)")
    full_steps: int = Field(default=500, gt=0)
    full_batch_size: int = Field(default=1024, gt=0, description="no tight claim rests on it: a smaller batch")
    theory_expectation: Literal["multinomial", "large_n"] = "multinomial"
    scaling_K: list[int] = Field(default=[3, 5, 8, 13, 20, 30], description="K values of the K-scaling; [] skips it")
    scaling_source: Literal["theory", "training"] = Field(
        default="training", description="training: one balanced run per K (variants K=<K>); theory: the "
                                        "reduced flow per K, with a training check at the run's K")
    scaling_tokens_per_feature: int = Field(default=20, gt=0, description="N = K · this in the K-scaling")
    scaling_batch_size: int = Field(default=256, gt=0, description="prompts per step of the K-scaling runs")
    scaling_eval_prompts: int = Field(default=2048, gt=0, description="held-out prompts of the K-scaling runs "
                                      "(their crossing times are read during training; they make no end-of-"
                                      "training claim)")
    scaling_n_records: int = Field(default=30, gt=1, description="records of the K-scaling runs")
    scaling_horizon: float = Field(default=1.3, ge=1.05, description="K-scaling runs (and follow_K) train to this × "
                                   "the closed form's time to ℓ < 10⁻³")
    follow_K: bool = Field(default=True, description="a change of task.K (--set or --sweep task.K=...) moves "
                           "task.d, task.n_points, train.lr and train.steps with it as the K-scaling does, "
                           "unless they are set in the same command")
    sweep: Optional[SweepShorthand] = Field(default=None, description="sweep.K=[...]: shorthand for "
                                            "scaling_K=[...] with scaling_source=training (read, then cleared)")
    K_reference: Optional[dict[str, Any]] = Field(default=None, description="bookkeeping of follow_K: the "
                                                  "K-dependent settings as last validated")

    # follow_K's bookkeeping and the sweep.K shorthand do not change what a run is: out of the hash
    _unhashed = {"seed", "n_seeds", "device", "follow_K", "sweep", "K_reference"}

    @model_validator(mode="before")
    @classmethod
    def _shorthand_and_follow_K(cls, data):
        if not isinstance(data, dict):
            return data
        data = dict(data)
        short = data.pop("sweep", None)
        if short is not None:
            values = short.get("K") if isinstance(short, dict) else getattr(short, "K", None)
            if values is not None:
                data["scaling_K"], data["scaling_source"] = values, "training"
        ref = data.get("K_reference")
        if isinstance(ref, dict) and data.get("follow_K", True) and set(FOLLOW_KEYS) <= set(ref):
            try:
                now = {key: _get(cls, data, key) for key in FOLLOW_KEYS}
                K = int(now["task.K"])
                if K != int(ref["task.K"]) and K >= 1 and int(ref["task.K"]) >= 1:
                    # an lr given along with K is kept, and the steps follow it
                    lr = float(now["train.lr"]) if now["train.lr"] != ref["train.lr"] else None
                    default = {key: cls.model_fields[key].default
                               for key in ("scaling_tokens_per_feature", "scaling_horizon")}
                    new = followed_settings(ref, K, int(_get(cls, data, "train.warmup_steps")),
                                            int(data.get("scaling_tokens_per_feature",
                                                         default["scaling_tokens_per_feature"])),
                                            float(data.get("scaling_horizon", default["scaling_horizon"])), lr)
                    for key, value in new.items():
                        if now[key] == ref[key]:  # not set along with K: it follows K
                            _set(cls, data, key, value)
            except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError):
                pass  # malformed values: field validation reports them
        return data

    @model_validator(mode="after")
    def _checks(self):
        if self.train.stages:
            raise ValueError("train.stages is not supported by feature-convergence (the reduced dynamics "
                             "follow one learning-rate schedule); leave it unset")
        own = self.task.balance != "balanced" or self.model.train != "q"
        if own and self.compare:
            if list(self.compare) != list(DEFAULT_COMPARE):
                raise ValueError(
                    f"task.balance={self.task.balance} and model.train={self.model.train} would be overridden by "
                    f"every variant of compare={list(self.compare)}: set compare=[] to train this config as "
                    f"given, or leave task.balance and model.train at balanced and q")
            # the config's own balance / training mode win over the default variants: one run as given
            self.__dict__["compare"] = []
        # bookkeeping (no validation: it records the validated values)
        self.__dict__["K_reference"] = k_settings(self)
        return self

    @field_validator("scaling_K")
    @classmethod
    def _scaling_values(cls, v):
        if v and (min(v) < 3 or len(set(v)) != len(v)):
            raise ValueError("distinct values ≥ 3 (at K = 2 balanced attention starts at ½)")
        return sorted(v)


def k_settings(config) -> dict:
    """The K-dependent settings of a validated config, by dotted key (FOLLOW_KEYS)."""
    return {"task.K": config.task.K, "task.d": config.task.d, "task.n_points": config.task.n_points,
            "train.lr": config.train.lr, "train.steps": config.train.steps}


def _get(cls, data, dotted: str):
    """A dotted value of raw config data (a dict whose blocks are dicts or validated models)."""
    head, key = dotted.split(".")
    block = data.get(head, cls.model_fields[head].default)
    if isinstance(block, BaseModel):
        return getattr(block, key)
    sub = cls.model_fields[head].default
    return block.get(key, type(sub).model_fields[key].default)


def _set(cls, data, dotted: str, value) -> None:
    head, key = dotted.split(".")
    block = data.get(head, cls.model_fields[head].default)
    block = block.model_dump() if isinstance(block, BaseModel) else dict(block)
    block[key] = value
    data[head] = block


def steps_to(horizon: float, lr: float, warmup: int) -> int:
    """Steps of a constant schedule with a linear warm-up whose Σ lr first reaches `horizon`."""
    warm_time = lr * (warmup + 1) / 2
    return warmup + max(int(math.ceil((horizon - warm_time) / lr)), 1)


def followed_settings(ref: dict, K: int, warmup: int, tokens_per_feature: int, horizon: float,
                      lr: float | None = None) -> dict:
    """The K-dependent settings at K from those at ref["task.K"]: d = max(K, d), N = K · tokens per
    feature, lr ∝ K (each feature moves on the clock lr·p_k = lr/K, kept), and the steps to
    `horizon` × the closed form's time to ℓ < EPS_ERROR."""
    lr = float(ref["train.lr"]) * K / int(ref["task.K"]) if lr is None else lr
    steps = steps_to(horizon * balanced_crossing_time(K, "error", EPS_ERROR), lr, warmup) if K >= 2 else ref[
        "train.steps"]
    return {"task.d": max(K, int(ref["task.d"])), "task.n_points": K * tokens_per_feature, "train.lr": lr,
            "train.steps": steps}


class FeatureConvergence(Experiment):
    name = "feature-convergence"
    title = "Softmax attention on structured features converges feature by feature, phase by phase"
    paper = "Huang, Cheng & Liang 2023"
    config_class = FeatureConvergenceConfig
    time_target = "2 min on a 2-core CPU"
    quick_seconds = 65
    presets = {
        "quick": {},
        "paper": {"n_seeds": 3, "train.steps": 2000, "train.warmup_steps": 200, "train.n_records": 80,
                  "train.batch_size": 16_384, "full_steps": 4000, "full_batch_size": 16_384,
                  "scaling_K": [3, 5, 9, 16, 32], "scaling_batch_size": 4096, "scaling_eval_prompts": 16_384,
                  "scaling_n_records": 60, "scaling_horizon": 2.0},
    }

    # -- runs -------------------------------------------------------------------------------------
    def variants(self, config):
        out = {}
        for name in config.compare:
            ov = {"compare": [], "task.balance": "imbalanced" if name != "balanced" else "balanced",
                  "model.train": "full" if name == "full" else "q"}
            if name == "full":
                ov.update({"train.lr": config.full_lr, "train.steps": config.full_steps,
                           "train.batch_size": config.full_batch_size})
            if name != "balanced" or config.scaling_source == "training":
                ov["scaling_K"] = []
            out[name] = ov
        if config.compare and config.scaling_source == "training":  # compare=[]: one run as given
            for K in config.scaling_K:
                out[f"K={K}"] = scaling_overrides(config, K)
        return out or None

    def record_steps(self, config):
        return run_records(config)

    def probes(self, config, task):
        return build_probes(config, task, ["feature_attention"])

    def after_training(self, run_dir, config, task, model, device):
        run_dir.write_theory(theory_frame(config))

    # -- claims and figures -----------------------------------------------------------------------
    def claims(self, run) -> list[Claim]:
        return evaluate_claims(run)

    def figures(self, run):
        from icldyn.report.feature_convergence import attention_figure, feature_error_figure
        from icldyn.report.feature_convergence_scaling import scaling_figure

        views = feature_views(run)
        main = [(label, r) for label, r in views if not is_scaling_run(label, run)]
        figs = []
        if main:
            figs += [feature_error_figure(run, main), attention_figure(run, main)]
        if scaling_points(run, views):
            figs.append(scaling_figure(run, views))
        return figs


def scaling_overrides(config, K: int) -> dict:
    """A balanced Q run at K features (`followed_settings` from the config's K), at the K-scaling's
    batch size, held-out prompts and records."""
    new = followed_settings(k_settings(config), K, config.train.warmup_steps, config.scaling_tokens_per_feature,
                            config.scaling_horizon)
    return {"compare": [], "scaling_K": [], "task.balance": "balanced", "model.train": "q", "task.K": K, **new,
            "train.batch_size": config.scaling_batch_size, "train.eval_prompts": config.scaling_eval_prompts,
            "train.eval_prompts_during": config.scaling_eval_prompts, "train.n_records": config.scaling_n_records}


def run_records(config) -> list[int]:
    """The record steps: log-spaced on the time = Σ lr clock (the warm-up squeezes early time into few
    steps), shared by the trainer and the reduced dynamics."""
    return record_steps_in_time(config.train, config.train.n_records)


# -- theory.parquet: the reduced dynamics on the run's clock, the closed form, the error floors ------
def theory_frame(config) -> pd.DataFrame:
    """Everything after_training writes to theory.parquet (empty where the reduced dynamics do not
    cover the model: query_in_softmax)."""
    if config.model.query_in_softmax:
        return pd.DataFrame(columns=["time", "name", "value"])
    frames = [reduced_dynamics_frame(config), constants_frame(config)]
    if (config.scaling_K and config.scaling_source == "theory" and config.task.balance == "balanced"
            and config.model.train == "q"):
        frames.append(scaling_frame(config))
    return pd.concat(frames, ignore_index=True)


def reduced_dynamics_frame(config) -> pd.DataFrame:
    """theory.parquet rows (time, name, value) of the reduced dynamics — GD on the scores from s = 0 at
    the run's lr schedule — at the run's record steps and times, under the probes' names."""
    p = torch.tensor(config.task.probabilities(), dtype=torch.float64)
    N, K = config.task.n_points, config.task.K
    records = run_records(config)
    gd = theory.gradient_descent(p, N, learning_rates(config.train), config.train.steps, records,
                                 expectation=config.theory_expectation)
    rows = []
    for t, s in zip(time_at(config.train, records), gd.scores):
        st = theory.score_stats(s, p, N, config.theory_expectation)
        rows.append((t, "loss/test", float(st.loss @ p)))
        for k in range(K):
            rows.append((t, f"probe/feature_error/{k}", float(st.loss[k])))
            rows.append((t, f"probe/same_feature_attention/{k}", float(st.attention[k, k])))
            for n in range(K):
                rows.append((t, f"probe/attention_mass/{k}/{n}", float(st.attention[k, n])))
                rows.append((t, f"probe/score/{k}/{n}", float(s[k, n])))
    return pd.DataFrame(rows, columns=["time", "name", "value"])


def constants_frame(config) -> pd.DataFrame:
    """Time-independent theory values the figures draw (one row each, time 0): the error floors
    ½(1 − p_k)^N, and for a balanced run the closed form's crossing times at its K (and at every K
    of a theory-source K-scaling)."""
    floors = theory.error_floor(config.task.probabilities(), config.task.n_points).tolist()
    rows = [(0.0, ERROR_FLOOR.format(k=k), f) for k, f in enumerate(floors)]
    if config.task.balance == "balanced":
        Ks = {config.task.K, *(config.scaling_K if config.scaling_source == "theory" else [])}
        for K in sorted(k for k in Ks if k >= 2):
            rows += [(0.0, CLOSED_FORM.format(K=K, what="attention"), balanced_crossing_time(K, "attention")),
                     (0.0, CLOSED_FORM.format(K=K, what="error"), balanced_crossing_time(K, "error", EPS_ERROR))]
    return pd.DataFrame(rows, columns=["time", "name", "value"])


def scaling_frame(config) -> pd.DataFrame:
    """The balanced reduced gradient flow for every K of `scaling_K` (N = K · tokens per feature)
    and for the run's own (K, N), feature 0 (all features are alike), on a log time grid."""
    pairs = {(K, K * config.scaling_tokens_per_feature) for K in config.scaling_K}
    pairs.add((config.task.K, config.task.n_points))
    rows = []
    for K, N in sorted(pairs):
        t_end = 1.5 * balanced_crossing_time(K, "error", EPS_ERROR)
        times = np.concatenate([[0.0], np.logspace(-2, math.log10(t_end), 160)])
        flow = theory.gradient_flow([1.0 / K] * K, N, times, expectation=config.theory_expectation,
                                    rtol=1e-6, atol=1e-10)  # crossing times move < 1e-4 relative vs 1e-7
        tag = f"scaling/K={K},N={N}"
        for i, t in enumerate(times):
            rows.append((t, f"{tag}/same_feature_attention", float(flow.same_feature_attention[i, 0])))
            rows.append((t, f"{tag}/feature_error", float(flow.feature_loss[i, 0])))
    return pd.DataFrame(rows, columns=["time", "name", "value"])
