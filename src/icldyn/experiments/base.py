"""What an experiment is: presets, how to build its task and model, what to record, its claims.

An experiment composes tasks, models, estimators, probes and theory; it does not reimplement
them. Claims are computed from the stored run (or sweep) only, so `icldyn claims DIR` can
recompute them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from icldyn.config import ExperimentConfig, apply_overrides, build
from icldyn.errors import UsageError


@dataclass
class Claim:
    """A paper's sentence made checkable: measured vs expected, fixed in code before the run."""

    id: str
    statement: str
    source: str
    measured: Optional[float]
    expected: str
    passed: Optional[bool]
    tolerance: Optional[str] = None
    per_seed: list[float] = field(default_factory=list)
    note: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["measured"] = None if self.measured is None else float(self.measured)
        d["passed"] = None if self.passed is None else bool(self.passed)
        return d


def below(id, statement, source, values, bound, *, tolerance=None, agg="max", note=None, details=None) -> Claim:
    """Claim that a per-seed quantity is below `bound` (aggregate: the worst seed by default)."""
    vals = np.asarray(values, dtype=float).reshape(-1)
    if vals.size == 0 or not np.isfinite(vals).all():
        return Claim(id, statement, source, None, f"< {bound:.4g}", None, tolerance, vals.tolist(),
                     note or "could not be measured (missing or non-finite values)", details or {})
    m = float(getattr(np, agg)(vals))
    return Claim(id, statement, source, m, f"< {bound:.4g}", bool(m < bound), tolerance, vals.tolist(), note,
                 details or {})


def above(id, statement, source, values, bound, *, tolerance=None, agg="min", note=None, details=None) -> Claim:
    """Claim that a per-seed quantity is above `bound` (aggregate: the worst seed by default)."""
    vals = np.asarray(values, dtype=float).reshape(-1)
    if vals.size == 0 or not np.isfinite(vals).all():
        return Claim(id, statement, source, None, f"> {bound:.4g}", None, tolerance, vals.tolist(),
                     note or "could not be measured (missing or non-finite values)", details or {})
    m = float(getattr(np, agg)(vals))
    return Claim(id, statement, source, m, f"> {bound:.4g}", bool(m > bound), tolerance, vals.tolist(), note,
                 details or {})


class Experiment:
    """Subclass per experiment; register an instance in `experiments/__init__.py`."""

    name: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    config_class: ClassVar[type[ExperimentConfig]]
    presets: ClassVar[dict[str, dict]]  # preset name → config overrides of the defaults
    time_target: ClassVar[str] = ""

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

    def claims(self, run) -> list[Claim]:
        raise NotImplementedError

    def figures(self, run) -> list:
        return []


def run_views(run, single: str = "run") -> list[tuple[str, Any]]:
    """(name, run) pairs: the variants of a sweep directory, or (`single`, the run itself)."""
    return list(run.variants.items()) or [(single, run)]


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


def swept_values(run, key: str) -> list[tuple[Any, Any]]:
    """(value of `key`, sub-run) for every variant of a sweep directory, sorted by value."""
    pairs = []
    for sub in run.variants.values():
        node = sub.config
        for part in key.split("."):
            node = getattr(node, part)
        pairs.append((node, sub))
    return sorted(pairs, key=lambda p: p[0])
