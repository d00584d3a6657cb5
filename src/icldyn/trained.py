"""A stored run's trained model, rebuilt from its directory: the one loader that post-hoc tools
(`icldyn evaluate`, `icldyn diagnose`) use to get a model back at any stored checkpoint.

It sits beside the runner (it needs the experiments' registry to rebuild task and model) and
below the API and the post-hoc commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from icldyn import store
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS, config_from_dict


@dataclass
class Trained:
    """A run's experiment, config, task and model (one member per seed, parameters of `step`)."""

    run: store.Run
    experiment: Any
    config: Any
    task: Any
    model: torch.nn.Module
    seeds: list[int]
    step: int


def load_run(path: str | Path) -> store.Run:
    """The run directory at `path` with its config typed by its experiment."""
    return store.load_run(path, config_from_dict)


def load_trained(run: store.Run | str | Path, step: int | None = None) -> Trained:
    """Rebuild the task and model of a stored (non-sweep) run and load the checkpoint of `step`
    (default: the last one). Raises UsageError with one sentence when it cannot."""
    run = run if isinstance(run, store.Run) else load_run(run)
    config = run.config
    if (run.path / "variants").is_dir():
        names = sorted(p.name for p in (run.path / "variants").iterdir())
        raise UsageError(f"{run.path} is a sweep directory; pass one of its variants: "
                         f"{', '.join(f'variants/{n}' for n in names[:6])}")
    steps = run.checkpoint_steps
    if not steps:
        raise UsageError(f"{run.path} has no checkpoints to load a trained model from")
    step = steps[-1] if step is None else int(step)
    if step not in steps:
        raise UsageError(f"step must be one of the stored checkpoints {steps} (got {step})")
    exp = EXPERIMENTS[config.experiment]
    task = exp.build_task(config)
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    model = exp.build_model(config, task, seeds)
    params = run.checkpoint(step)
    missing = [n for n, _ in model.named_parameters() if n not in params]
    if missing:
        raise UsageError(f"the checkpoint of step {step} in {run.path} lacks parameters {missing[:3]}; "
                         "it was written by another version of the model")
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name].to(p.dtype))
    model.eval()
    return Trained(run, exp, config, task, model, seeds, step)
