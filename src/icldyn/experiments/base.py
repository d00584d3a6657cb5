"""What an experiment is: presets, how to build its task and model, what to record, its claims.

An experiment composes tasks, models, estimators, probes and theory; it does not reimplement
them. Claims are computed from the stored run (or sweep) only, so `icldyn claims DIR` can
recompute them.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from icldyn.config import ExperimentConfig, apply_overrides, build
from icldyn.errors import UsageError


class Experiment:
    """Subclass per experiment; register an instance in `experiments/__init__.py`."""

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    config_class: ClassVar[type[ExperimentConfig]]
    presets: ClassVar[dict[str, dict]]  # preset name → config overrides of the defaults
    time_target: ClassVar[str] = ""
    # the quick preset's wall time measured on a 2-core CPU at one thread: `icldyn reproduce` starts
    # the longest first, so that its workers finish together
    quick_seconds: ClassVar[float] = 60.0

    def config(self, preset: str = "quick", overrides=None, *, seeds: int | None = None,
               device: str | None = None) -> ExperimentConfig:
        if preset not in self.presets:
            raise UsageError(f"unknown preset {preset!r} for {self.name}; allowed: {', '.join(self.presets)}")
        base = build(self.config_class, {"experiment": self.name, "preset": preset})
        cfg = apply_overrides(base, self.presets[preset])
        extra = {}
        if seeds is not None:
            extra["n_seeds"] = seeds
        if device is not None:
            extra["device"] = device
        cfg = apply_overrides(cfg, extra)
        return apply_overrides(cfg, overrides)

    # -- building blocks -------------------------------------------------------------------------
    def build_task(self, config):
        from icldyn.tasks import build_task

        return build_task(config.task, self.dtype(config))

    def build_model(self, config, task, seeds):
        """The registered model `config.model` for `task`, one member per seed."""
        from icldyn.models import build_model

        return build_model(config.model, task, seeds, self.dtype(config))

    def dtype(self, config) -> torch.dtype:
        return torch.float32

    def probes(self, config, task) -> list:
        """Callables RecordContext → {metric name: (E,) tensor}, run at every record step."""
        return []

    def record_steps(self, config) -> list[int] | None:
        """The steps to record at; None: `train.n_records` log-spaced steps (the default)."""
        return None

    def variants(self, config) -> dict[str, dict] | None:
        """Several runs from one command ({name: overrides}), stored as a sweep; None: one run."""
        return None

    def after_training(self, run_dir, config, task, model, device) -> None:
        """Write curves.parquet / theory.parquet from the trained model (optional)."""

    def claims(self, run) -> list:
        raise NotImplementedError

    def figures(self, run) -> list:
        return []


def sweep_variants(grid: dict[str, list]) -> dict[str, dict]:
    """The product of config values as named variants: {"train.lr=0.1,task.K=5": {...}, ...}.

    A sweep directory holds one run directory per variant (DESIGN.md: seeds, ensembles, sweeps).
    """
    import itertools

    keys = list(grid)
    out = {}
    for values in itertools.product(*(grid[k] for k in keys)):
        name = ",".join(f"{k}={_short(v)}" for k, v in zip(keys, values))
        out[name] = dict(zip(keys, values))
    return out


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v).replace(" ", "")
