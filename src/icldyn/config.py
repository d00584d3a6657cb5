"""Typed configs (pydantic), YAML round trip, `--set a.b=c` overrides and the config hash.

Every experiment subclasses `ExperimentConfig`, giving `task` and `model` their concrete
config types, so an override is type-checked against the field it names.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from icldyn.errors import UsageError
from icldyn.registry import closest


class Strict(BaseModel):
    """A config block: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageConfig(Strict):
    """One stage of staged training: only `params` (name prefixes) move, for `steps` steps."""

    params: list[str]
    steps: int = Field(gt=0)
    lr: Optional[float] = Field(default=None, gt=0)


class TrainConfig(Strict):
    optimizer: Literal["gd", "sgd", "adam", "adamw"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    steps: int = Field(default=1000, gt=0)
    batch_size: int = Field(default=1024, gt=0)
    momentum: float = Field(default=0.0, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(default=0.0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    # "population": exact expected loss (only where the task/model offer it, e.g. LSA on
    # Gaussian data); "sampled": fresh prompts every step, or from a fixed dataset.
    gradient: Literal["sampled", "population"] = "sampled"
    dataset_size: Optional[int] = Field(default=None, gt=0)
    n_records: int = Field(default=40, gt=1, description="log-spaced recording points")
    checkpoint_every: int = Field(default=500, gt=0, description="steps between resume checkpoints")
    eval_prompts: int = Field(default=100_000, gt=0, description="held-out prompts at the last step")
    eval_prompts_during: int = Field(default=4096, gt=0, description="held-out prompts at other records")
    stages: Optional[list[StageConfig]] = None
    # A hyperparameter ensemble: member i (seed seed+i) trains with the schedule's lr × lrs[i]/lr,
    # all members in one computation; needs n_seeds = len(lrs) (`--seeds`).
    lrs: Optional[list[float]] = Field(default=None, min_length=1,
                                       description="per-member learning rates of one ensemble")
    compile: bool = Field(default=False, description="torch.compile the loss; falls back to eager with a note")

    @field_validator("lrs")
    @classmethod
    def _positive_lrs(cls, lrs):
        if lrs is not None and min(lrs) <= 0:
            raise ValueError("train.lrs must all be > 0")
        return lrs

    @model_validator(mode="after")
    def _stages_cover_steps(self):
        if self.stages and sum(s.steps for s in self.stages) != self.steps:
            raise ValueError(
                f"train.stages: the stages' steps add up to {sum(s.steps for s in self.stages)}, "
                f"but train.steps is {self.steps}"
            )
        return self


class ExperimentConfig(Strict):
    """The resolved config of one run. Subclasses give `task` and `model` concrete types."""

    experiment: str
    preset: str = "quick"
    seed: int = Field(default=0, ge=0, description="first seed; seeds seed..seed+n_seeds-1")
    n_seeds: int = Field(default=1, gt=0)
    eval_seed: int = Field(default=10_000_019, ge=0, description="held-out prompts, shared by all seeds")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    task: Strict
    model: Strict
    train: TrainConfig = TrainConfig()

    # Seeds and device name runs, they do not change what a run *is*: they stay out of the hash,
    # and so does train.compile (how it is computed); train.lrs enters it only when set, so the
    # hashes of runs made before these keys existed do not change.
    _unhashed = {"seed", "n_seeds", "device"}
    _train_unhashed = {"compile"}
    _train_hashed_when_set = {"lrs"}

    def config_hash(self) -> str:
        payload = self.model_dump(mode="json", exclude=self._unhashed)
        train = payload.get("train") or {}
        for key in self._train_unhashed | {k for k in self._train_hashed_when_set if train.get(k) is None}:
            train.pop(key, None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    def run_name(self) -> str:
        return f"{self.config_hash()}-s{self.seed}-{self.seed + self.n_seeds - 1}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def parse_value(text: str) -> Any:
    """`--set` values are YAML scalars or flow lists: `1e-3`, `true`, `[1, 0.5]`, `adam`."""
    for number in (int, float):  # YAML 1.1 would read `1e-3` as a string
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _check_path(cls: type[BaseModel], path: list[str], full: str) -> None:
    """Raise a UsageError naming the valid keys if `path` is not a field path of `cls`."""
    fields = cls.model_fields
    head = path[0]
    if head not in fields:
        prefix = full[: len(full) - len(".".join(path))]
        valid = [f"{prefix}{f}" for f in fields if not f.startswith("_")]
        raise UsageError(
            f"unknown config key {full!r}{closest(prefix + head, valid)}; valid keys here: {', '.join(valid)}"
        )
    if len(path) > 1:
        sub = fields[head].annotation
        sub = getattr(sub, "__args__", (sub,))[0] if not isinstance(sub, type) else sub
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            _check_path(sub, path[1:], full)
        else:
            raise UsageError(f"config key {full!r}: {'.'.join(path[:1])} has no sub-keys")


def validation_message(err: ValidationError) -> str:
    """One sentence per problem: the dotted field, what is allowed, and what was given."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].replace("Value error, ", "")
        given = e.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    return "invalid config: " + "; ".join(parts)


def build(cls: type[ExperimentConfig], data: dict) -> ExperimentConfig:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise UsageError(validation_message(err)) from None


def apply_overrides(config: ExperimentConfig, overrides: dict[str, Any] | list[str] | None) -> ExperimentConfig:
    """Return a new config with `overrides` ({'a.b': value} or ['a.b=value']) applied and checked."""
    if not overrides:
        return config
    if isinstance(overrides, list):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise UsageError(f"--set takes key=value, got {item!r}")
            key, value = item.split("=", 1)
            pairs[key.strip()] = parse_value(value.strip())
        overrides = pairs
    cls = type(config)
    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        path = key.split(".")
        _check_path(cls, path, key)
        node = data
        for p in path[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
        node[path[-1]] = value
    return build(cls, data)


def load_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read config {path}: {err}") from None
