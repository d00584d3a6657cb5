"""A sweep spec (YAML or flags) checked and expanded into members, each one run directory.

A spec names an experiment, a preset, fixed overrides, a grid (their product) and/or a list of
points, and seeds:

    experiment: linreg-lsa
    preset: quick
    seeds: 2                       # every member trains seeds 0..1 together (one ensemble)
    overrides: {train.steps: 200}
    grid: {train.lr: [0.01, 0.03], task.d: [3, 5]}
    points: [{train.lr: 0.1, task.d: 8}]
    resources: {cpus: 1, gpus: 0}  # what each member asks of Ray or Slurm
    retries: 2                     # a failed member is tried again this many times ...
    backoff: 1.0                   # ... after backoff·2^attempt seconds

The sweep directory is the one `icldyn run --sweep` writes (`<hash>-s<first>-<last>-sweep<digest>/`
with `sweep.yaml` and `variants/<key=value,...>/`): a grid-only spec lands in the same directory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icldyn.config import apply_overrides
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS
from icldyn.experiments.base import sweep_variants


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpus: float = Field(1, gt=0)
    gpus: float = Field(0, ge=0)


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment: str
    preset: str = "quick"
    seeds: int | None = Field(None, ge=1)
    device: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list] = Field(default_factory=dict)
    points: list[dict[str, Any]] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(2, ge=0)
    backoff: float = Field(1.0, ge=0)


@dataclass
class Member:
    """One config of the sweep: its variant name, overrides, resolved config and run directory."""

    name: str
    overrides: dict
    config: Any
    path: Path

    @property
    def label(self) -> str:
        return f"{self.config.experiment}:{self.name}"


@dataclass
class SweepPlan:
    spec: SweepSpec
    config: Any          # the base config (preset + fixed overrides + seeds)
    path: Path           # the sweep directory
    members: list[Member]

    def sweep_yaml(self) -> str:
        swept = dict(self.spec.grid)
        for point in self.spec.points:
            for k, v in point.items():
                swept.setdefault(k, [])
                if v not in swept[k]:
                    swept[k] = [*swept[k], v]
        return yaml.safe_dump({"variants": {m.name: m.overrides for m in self.members}, "swept": swept,
                               "points": self.spec.points}, sort_keys=False)


def load_spec(source: str | Path | dict) -> SweepSpec:
    """Read and check a spec (a YAML file or a dict); one sentence naming the field on bad input."""
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise UsageError(f"sweep spec {path} does not exist (give a YAML file or an experiment name)")
        try:
            source = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise UsageError(f"sweep spec {path} is not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(source, dict):
            raise UsageError(f"sweep spec {path} must be a mapping with at least `experiment:`")
    try:
        return SweepSpec.model_validate(source)
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(p) for p in e["loc"]) or "spec"
        allowed = ", ".join(SweepSpec.model_fields) if e["type"] == "extra_forbidden" else None
        raise UsageError(f"sweep spec field {field!r}: {e['msg']}"
                         + (f" (allowed fields: {allowed})" if allowed else "")) from None


def plan(spec: SweepSpec, out: str | Path = "runs") -> SweepPlan:
    """Check every key and value of the spec against the experiment's config; expand the members."""
    if spec.experiment not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {spec.experiment!r}; known: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[spec.experiment]
    config = exp.config(spec.preset, spec.overrides or None, seeds=spec.seeds, device=spec.device)
    if not spec.grid and not spec.points:
        raise UsageError("a sweep needs a non-empty `grid` (key: list of values) or `points` ([{key: value}, ...])")
    for key, values in spec.grid.items():
        if not values:
            raise UsageError(f"grid key {key!r} has an empty list of values; give at least one, e.g. {key}: [1, 2]")
    variants = sweep_variants(spec.grid) if spec.grid else {}
    for point in spec.points:
        if not point:
            raise UsageError("a sweep point is empty; give it at least one key: value")
        variants.update(sweep_variants({k: [v] for k, v in point.items()}))
    members = []
    for name, ov in variants.items():
        cfg = apply_overrides(config, ov)  # checks the key and the value's type
        members.append(Member(name, ov, cfg, Path()))
    top = Path(out) / spec.experiment / f"{config.run_name()}-sweep{_digest(spec)}"
    for m in members:
        m.path = top / "variants" / m.name
    return SweepPlan(spec, config, top, members)


def _digest(spec: SweepSpec) -> str:
    """The grid's digest as `icldyn run --sweep` computes it; points (if any) are hashed with it."""
    key = spec.grid if not spec.points else {"grid": spec.grid, "points": spec.points}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:6]
