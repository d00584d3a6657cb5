"""`icldyn bench`: performance cases, each returning a dict of figures; a table and optional JSON.

A case is a function (quick: bool) -> dict registered in CASES; figures are measured, never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from icldyn.bench.core import best_of, matmul_peak
from icldyn.registry import Registry

CASES: Registry = Registry("benchmark case")


@CASES.register("lsa_step")
def lsa_step(quick: bool = False) -> dict:
    """One sampled-prompt Adam step of a one-layer LSA: d = 10, N = 40, batch 1024, one seed."""
    from icldyn.experiments import EXPERIMENTS
    from icldyn.train.trainer import Trainer

    exp = EXPERIMENTS["linreg-lsa"]
    cfg = exp.config("quick", {"task.d": 10, "task.n_points": 40, "task.covariance": "isotropic",
                               "train.gradient": "sampled", "train.optimizer": "adam", "train.lr": 1e-3,
                               "train.batch_size": 1024, "sampled_check": False})
    task = exp.build_task(cfg)
    trainer = Trainer(cfg, task, exp.build_model(cfg, task, [0]))
    steps = 20 if quick else 100

    def run():
        for k in range(steps):
            loss = trainer.train_loss(k)
            trainer.optimizer.zero_grad()
            loss.sum().backward()
            trainer.optimizer.step()

    secs = best_of(run, 1 if quick else 3) / steps
    sample = best_of(lambda: task.sample([0], 0, 1024), 5 if quick else 20)
    return {"steps_per_s": 1 / secs, "prompts_per_s": 1024 / secs, "sampling_fraction": sample / secs}


@CASES.register("prefix_estimators")
def prefix_estimators(quick: bool = False) -> dict:
    """Per-prefix OLS/ridge (batch 1024, N = 40, d = 20) vs one lstsq per prompt and prefix."""
    from icldyn.bench.estimators import bench_prefix_estimators

    return bench_prefix_estimators(batch=256 if quick else 1024, repeats=1 if quick else 3)


@CASES.register("induction_epoch")
def induction_epoch(quick: bool = False) -> dict:
    """One full-batch GD epoch of the induction-head models at the paper's main config (9,000
    training sequences, L = 100, S = 3, H = 3, D = 2, one seed) and generating the 10,000-sequence
    dataset, next to the authors' code on a 2-core CPU (1.3 s per epoch, 215 s for the dataset)."""
    from icldyn.models.induction import (InductionFull, InductionFullConfig, InductionSimplified,
                                         InductionSimplifiedConfig)
    from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramMarkovTask

    task = NgramMarkovTask(NgramMarkovConfig())
    dataset_s = best_of(lambda: task.sample([0], 0, 10_000, stream="fixed"), 1 if quick else 3, warmup=0)
    batch = task.sample([0], 0, 10_000, stream="fixed").select(slice(0, 9000))
    out = {}
    for label, model in (("simplified", InductionSimplified(InductionSimplifiedConfig(), task.config, [0])),
                         ("full", InductionFull(InductionFullConfig(), task.config, [0]))):
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        epochs = 10 if quick else 50

        def run():
            for _ in range(epochs):
                opt.zero_grad()
                model.loss(model(batch), batch).sum().backward()
                opt.step()

        out[f"{label}_epoch_ms"] = best_of(run, 1 if quick else 3) / epochs * 1e3
    out.update({"dataset_s": dataset_s, "epoch_speedup_vs_authors": 1300 / out["simplified_epoch_ms"],
                "dataset_speedup_vs_authors": 215 / dataset_s,
                "paper_preset_50k_epochs_min": 50_000 * out["simplified_epoch_ms"] / 1e3 / 60})
    return out


def run_benchmarks(quick: bool = False, json_path: Path | None = None, console=None, cases=None) -> dict:
    from rich.table import Table

    results = {"machine": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                           "matmul_peak_gflops": matmul_peak(1024 if quick else 2048)}}
    for name in cases or list(CASES):
        results[name] = CASES[name](quick)
    if console is not None:
        table = Table(title="icldyn bench", header_style="bold")
        for col in ("case", "figure", "value"):
            table.add_column(col)
        for case, figures in results.items():
            for key, value in figures.items():
                shown = f"{value:.4g}" if isinstance(value, float) else str(value)
                table.add_row(case, key, shown)
        console.print(table)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
    return results
