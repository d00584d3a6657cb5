"""grokking: a one-layer transformer on modular addition memorises its training pairs, then —
much later, under weight decay — generalises (Power et al. 2022; Nanda et al. 2023), with the
spectral measures of seed 004 (Mainali & Teixeira 2025) recorded on every weight matrix and on the
per-head QK/OV products (spec `grokking-spectral.md`, Part B).

Model: the project's GPT with its switches (`tokens=True, readout="last", layernorm=False,
activation="relu"`): token embedding of the vocabulary p + 1, learned positions, one block
(4 heads, MLP 4·width), logits at the "=" position. Task: `modular-arithmetic` (the p² pairs
split once by `task.split_seed`, a `train_fraction` trained on, full batch; the rest is the
held-out set, `accuracy/test`, `loss/test`). AdamW, betas (0.9, 0.98), 10-step linear warm-up.

Presets:
  quick  p = 31, half the pairs, width 64, lr 1e-2, weight decay 2, 2,000 steps: memorises in
         ~10² steps, groks at ~5·10² (a setting found by a small search, 2 seeds per setting: at
         wd 1 the jump came at ~2,000 steps, at width 32 not within 2,500; Nanda's p = 113 at
         lr 1e-3 needs ~10⁴ epochs, far beyond a CPU's minutes);
  paper  Nanda's setting: p = 113, 30% of the pairs, width 128, lr 1e-3, wd 1, 20,000 epochs.
`control=True` (both presets) also trains the same config with weight decay 0 (a sweep of two runs,
"wd" and "no_wd"): the control must not grok within the same budget.

After training, the distances of every matrix to its final value (top-k subspace distance, k =
1, 2 and the final effective rank rounded; the row-space distance of the rank-deficient QK/OV
products) are computed from the checkpoints stored at every record (`probes.spectral.distance_rows`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from icldyn.analysis.checkpoint_spectra import write_checkpoint_distances
from icldyn.claims import Claim
from icldyn.config import ExperimentConfig, TrainConfig, apply_overrides
from icldyn.experiments.base import Experiment
from icldyn.models import ModelConfig
from icldyn.models.gpt import GPTConfig
from icldyn.probes import build_probes
from icldyn.tasks import TaskConfig
from icldyn.tasks.modular_arithmetic import ModularArithmeticConfig

RANK_DEFICIENT = ("*.qk.*", "*.ov.*")


class GrokkingConfig(ExperimentConfig):
    experiment: Literal["grokking"] = "grokking"
    task: TaskConfig = ModularArithmeticConfig(p=31, train_fraction=0.5)
    model: ModelConfig = GPTConfig(n_layers=1, n_heads=4, width=64, mlp_ratio=4, activation="relu",
                                   layernorm=False, tokens=True, readout="last", init_std=0.125)
    train: TrainConfig = TrainConfig(optimizer="adamw", lr=1e-2, betas=(0.9, 0.98), weight_decay=2.0,
                                     warmup_steps=10, steps=2000, batch_size=1_000_000, n_records=50,
                                     checkpoint_every=1_000_000, eval_prompts=1_000_000,
                                     eval_prompts_during=1_000_000)
    control: bool = Field(default=True, description="also train without weight decay (the control run)")
    spectral_k: int = Field(default=3, gt=0, description="top singular values recorded per matrix")
    log_records: int = Field(default=15, ge=0, description="log-spaced records added to the linear ones")


class Grokking(Experiment):
    name = "grokking"
    title = "Grokking on modular addition: memorisation, then a late jump in held-out accuracy, with spectra"
    paper = "Nanda et al. 2023; Mainali & Teixeira 2025 (spectral measures)"
    config_class = GrokkingConfig
    time_target = "2.5 min on a 2-core CPU"
    quick_seconds = 55
    presets = {
        "quick": {},
        "paper": {"task.p": 113, "task.train_fraction": 0.3, "model.width": 128, "model.init_std": 0.088,
                  "train.lr": 1e-3, "train.weight_decay": 1.0, "train.steps": 20_000, "train.n_records": 100},
    }

    def config(self, preset: str = "quick", overrides=None, *, seeds=None, device=None):
        """Full batch over the task's training split: dataset_size is the split's size."""
        cfg = super().config(preset, overrides, seeds=seeds, device=device)
        n = cfg.task.n_train
        return apply_overrides(cfg, {"train.dataset_size": n, "train.batch_size": min(cfg.train.batch_size, n)})

    def variants(self, config):
        if not config.control:
            return None
        return {"wd": {"control": False},
                "no_wd": {"control": False, "train.weight_decay": 0.0}}

    def record_steps(self, config):
        """n_records linearly spaced steps (the events need even resolution late) plus log-spaced early ones."""
        steps = config.train.steps
        linear = np.linspace(0, steps, config.train.n_records).round()
        logs = np.unique(np.geomspace(1, steps, config.log_records).round()) if config.log_records else []
        return sorted({int(s) for s in (*linear, *logs)})

    def probes(self, config, task):
        return build_probes(config, task, ["grokking", ("matrix_spectral", {"k": config.spectral_k,
                                                                             "marginal": (1, 2)})])

    def after_training(self, run_dir, config, task, model, device):
        seeds = list(range(config.seed, config.seed + config.n_seeds))
        write_checkpoint_distances(run_dir, model, seeds, None, rank_deficient=RANK_DEFICIENT)

    def claims(self, run) -> list[Claim]:
        from icldyn.experiments.grokking_claims import CLAIMS

        return CLAIMS.evaluate(run)

    def figures(self, run):
        from icldyn.report.grokking import all_figures

        return all_figures(run)
