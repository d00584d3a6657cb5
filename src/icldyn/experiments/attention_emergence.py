"""attention-emergence: sudden in-context learning in attention-only transformers, with the
spectral measures of seed 004 (Mainali & Teixeira 2025; spec `grokking-spectral.md`, Part B,
"Sudden ICL emergence in attention-only transformers").

Task: the in-context bigram chain of `ngram-markov` (parents [1]: each sequence draws its own
transition law π ~ Dirichlet(α) row by row; fresh sequences every step) — the n-gram option of the
spec; predicting x_{L+1} beyond the in-context unigram needs an induction-style circuit (find the
earlier occurrences of x_L, copy what followed). Model: the project's GPT with its switches
(`tokens=True, readout="last", mlp=False, layernorm=False`): attention only, learned positions,
1 head, logits at the last position. Adam, constant lr.

Layers 1–4 are the variants of one sweep directory (`layers=<n>`, one worker per core). The
1-layer model cannot compose a previous-token head with an induction head: it is the control.

Baselines (theory.parquet, static rows): the held-out cross-entropy of the context-free predictor
— the in-context unigram (n_s + c)/(L + S·c), the best c of `SMOOTHING` on the same held-out
prompts (`baseline/unigram`, `baseline/unigram_smoothing`) — of the Bayes bigram posterior with the
true parents (`baseline/ngram_bayes`) and of the true conditional (`baseline/oracle`).

Presets:
  quick  S = 5, α = 0.1, L = 32; width 32, init 0.02, Adam lr 3e-3, batch 64, 2,000 steps
         (a probe of this setting: 2 layers plateau at held-out CE ≈ 0.93 to step ~10³, then drop
         to ≈ 0.63 by 2,000; 1 layer stays at ≈ 0.92). Measured with 3 seeds (2026-12-06): the
         3- and 4-layer models emerge for every seed, the 2-layer model for seeds 0 and 1 only
         (seed 2's plateau lasts longer: gain 0.075 at 2,000 steps, 0.125 at 3,000);
  paper  the same task at L = 64, width 64, 6,000 steps, more records and held-out prompts.

After training, the distances of every recorded matrix to its final value (top-k subspace
distance, k = 1, 2 and the final effective rank rounded; the row-space distance of the per-head
QK/OV products) are computed from the checkpoints stored at every record (`distance_rows`).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, field_validator

from icldyn.analysis.checkpoint_spectra import write_checkpoint_distances
from icldyn.claims import Claim
from icldyn.config import ExperimentConfig, TrainConfig, apply_overrides
from icldyn.experiments.base import Experiment
from icldyn.models import ModelConfig
from icldyn.models.gpt import GPTConfig
from icldyn.probes import build_probes
from icldyn.tasks import TaskConfig
from icldyn.tasks.ngram_markov import NgramMarkovConfig

SPECTRAL = ("blocks.*.attn.qk.*", "blocks.*.attn.ov.*", "blocks.*.attn.w_*", "embed")
RANK_DEFICIENT = ("*.qk.*", "*.ov.*")
SMOOTHING = (0.01, 0.03, 0.1, 0.3, 1.0)
BASELINES = ("ngram_bayes", "oracle")


class AttentionEmergenceConfig(ExperimentConfig):
    experiment: Literal["attention-emergence"] = "attention-emergence"
    task: TaskConfig = NgramMarkovConfig(n_states=5, parents=[1], alpha=0.1, n_points=32)
    model: ModelConfig = GPTConfig(n_layers=2, n_heads=1, width=32, mlp=False, layernorm=False, tokens=True,
                                   readout="last", init_std=0.02)
    train: TrainConfig = TrainConfig(optimizer="adam", lr=3e-3, steps=2000, batch_size=64, n_records=40,
                                     checkpoint_every=1_000_000, eval_prompts=4096, eval_prompts_during=2048)
    layers: list[int] = Field(default=[1, 2, 3, 4], min_length=1,
                              description="numbers of attention layers, one run each (a sweep of variants)")
    spectral_k: int = Field(default=3, gt=0, description="top singular values recorded per matrix")
    log_records: int = Field(default=12, ge=0, description="log-spaced records added to the linear ones")
    baseline_prompts: int = Field(default=8192, gt=0, description="held-out prompts of the baselines")

    @field_validator("layers")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if min(v) < 1 or len(set(v)) != len(v):
            raise ValueError("layers must be distinct numbers ≥ 1")
        return sorted(v)


class AttentionEmergence(Experiment):
    name = "attention-emergence"
    title = "Sudden ICL emergence in attention-only transformers (1–4 layers), with QK/OV spectra"
    paper = "Mainali & Teixeira 2025 (seed 004); Olsson et al. 2022 (induction heads)"
    config_class = AttentionEmergenceConfig
    time_target = "2.5 min on a 2-core CPU"
    quick_seconds = 56
    presets = {
        "quick": {},
        "paper": {"task.n_points": 64, "model.width": 64, "train.steps": 6000, "train.n_records": 80,
                  "train.eval_prompts": 16_384, "log_records": 20, "baseline_prompts": 32_768},
    }

    def config(self, preset: str = "quick", overrides=None, *, seeds=None, device=None):
        """A single run (`layers` of one entry) trains that many layers: model.n_layers follows it."""
        cfg = super().config(preset, overrides, seeds=seeds, device=device)
        if len(cfg.layers) == 1 and cfg.model.n_layers != cfg.layers[0]:
            cfg = apply_overrides(cfg, {"model.n_layers": cfg.layers[0]})
        return cfg

    def variants(self, config):
        if len(config.layers) == 1:
            return None
        return {f"layers={n}": {"layers": [n], "model.n_layers": n} for n in config.layers}

    def record_steps(self, config):
        """n_records linearly spaced steps (the window needs even resolution) plus log-spaced early ones."""
        steps = config.train.steps
        linear = np.linspace(0, steps, config.train.n_records).round()
        logs = np.unique(np.geomspace(1, steps, config.log_records).round()) if config.log_records else []
        return sorted({int(s) for s in (*linear, *logs)})

    def probes(self, config, task):
        return build_probes(config, task, [("matrix_spectral", {"names": list(SPECTRAL), "k": config.spectral_k,
                                                                "marginal": (1, 2)})])

    def after_training(self, run_dir, config, task, model, device):
        run_dir.write_theory(baseline_frame(config, task, device))
        seeds = list(range(config.seed, config.seed + config.n_seeds))
        write_checkpoint_distances(run_dir, model, seeds, SPECTRAL, rank_deficient=RANK_DEFICIENT)

    def claims(self, run) -> list[Claim]:
        from icldyn.experiments.attention_emergence_claims import CLAIMS

        return CLAIMS.evaluate(run)

    def figures(self, run):
        from icldyn.report.attention_emergence import all_figures

        return all_figures(run)


@torch.no_grad()
def baseline_frame(config, task, device) -> pd.DataFrame:
    """theory.parquet rows (time 0): the held-out cross-entropy of the context-free predictor
    (`baseline/unigram`, the best smoothing of `SMOOTHING`, `baseline/unigram_smoothing`) and of
    the Bayes bigram and true-conditional predictors, on `baseline_prompts` held-out prompts."""
    from icldyn.estimators.ngram import NGRAM_ESTIMATORS

    b = task.eval_batch(config.baseline_prompts, config.eval_seed + 1, device=device)
    ce = lambda p: float(-torch.log(p.gather(-1, b.y[..., None]).clamp_min(1e-30)).mean())  # noqa: E731
    uni = {c: ce(NGRAM_ESTIMATORS["unigram"](task, smoothing=c)(b)) for c in SMOOTHING}
    best = min(uni, key=uni.get)
    rows = [(0.0, "baseline/unigram", uni[best]), (0.0, "baseline/unigram_smoothing", best),
            (0.0, "baseline/uniform", math.log(config.task.n_states))]
    rows += [(0.0, f"baseline/{n}", ce(NGRAM_ESTIMATORS[n](task)(b))) for n in BASELINES]
    return pd.DataFrame(rows, columns=["time", "name", "value"])
