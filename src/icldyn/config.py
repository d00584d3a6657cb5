"""Typed configs (pydantic), YAML round trip, `--set a.b=c` overrides and the config hash.

Every experiment subclasses `ExperimentConfig`, giving `task` and `model` their types: a
discriminated union of the registered task (model) configs, selected by the block's `name`
(`tasks.TaskConfig`, `models.ModelConfig`), with the experiment's own default. An override is
type-checked against the field it names, in the union member the block's `name` selects.

This module is the bottom layer: it imports neither tasks/ nor models/, it reads unions off the
field annotations.
"""

from __future__ import annotations

import copy
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from icldyn.errors import UsageError
from icldyn.registry import closest


class Strict(BaseModel):
    """A config block: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def resolved_defaults(self) -> dict[str, Any]:
        """Fields holding the value a rule derived from the block's other fields (a validator
        fills them so config.yaml holds every value used). `apply_overrides` lets such a field
        follow the fields it comes from: a block that overrides `task.d` gets λ of the new d."""
        return {}


class StageConfig(Strict):
    """One stage of staged training: only `params` (name prefixes) move, for `steps` steps."""

    params: list[str]
    steps: int = Field(gt=0)
    lr: Optional[float] = Field(default=None, gt=0)


class TrainConfig(Strict):
    # options added after runs were stored enter the config hash only when they leave their default
    unhashed_at_default: ClassVar[tuple[str, ...]] = ("fused_optimizer", "shared_data")

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
    # torch's fused optimizer kernel: one pass over all parameters instead of ~10 ops per tensor
    # (the for-loop is torch's CPU default); it rounds differently, so it enters the hash when set
    fused_optimizer: bool = Field(default=False, description="torch's fused Adam/AdamW/SGD kernel")
    # every seed of the ensemble trains on the first seed's prompts (seeds differ in their init
    # only): one sampler call instead of one per seed
    shared_data: bool = Field(default=False, description="all seeds train on the same prompts "
                                                         "(the first seed's stream); seeds differ in init only")

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
    """The resolved config of one run. Subclasses declare `task: TaskConfig = <default>` and
    `model: ModelConfig = <default>` (the unions of tasks/ and models/)."""

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
        # a block's options added later enter the hash only when they leave their default, so the
        # runs made before they existed keep their names (`unhashed_at_default` on the block's class)
        for key in getattr(type(self), "unhashed_at_default", ()):  # the experiment's own later options
            if key in payload and payload[key] == type(self).model_fields[key].default:
                payload.pop(key)
        for block in ("task", "model", "train"):
            cls, data = type(getattr(self, block)), payload.get(block) or {}
            for key in getattr(cls, "unhashed_at_default", ()):
                if key in data and data[key] == cls.model_fields[key].default:
                    data.pop(key)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]

    def run_name(self) -> str:
        return f"{self.config_hash()}-s{self.seed}-{self.seed + self.n_seeds - 1}"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def config_union(registry):
    """Annotated[Union[every config class of `registry`], discriminator "name"]: the type of a
    block whose `name` selects its class. `registry` maps name → (config class, ...); each config
    class has `name: Literal[<its registered name>]`."""
    classes = []
    for name, (config_class, *_) in registry.items():
        field = config_class.model_fields.get("name")
        if field is None or typing.get_args(field.annotation) != (name,):
            raise TypeError(f"{config_class.__name__}.name must be Literal[{name!r}] (its {registry.kind} name)")
        classes.append(config_class)
    return Annotated[Union[tuple(classes)], Field(discriminator="name")]


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


def _union_members(annotation, discriminator: str | None) -> dict[str, type[BaseModel]] | None:
    """{discriminator value: member class} of a discriminated union of config blocks, else None."""
    if discriminator is None or typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return None
    members = {}
    for member in typing.get_args(annotation):
        if not (isinstance(member, type) and issubclass(member, BaseModel)) or discriminator not in member.model_fields:
            return None
        for tag in typing.get_args(member.model_fields[discriminator].annotation):
            members[tag] = member
    return members


def _sub_model(cls: type[BaseModel], head: str, value: Any) -> type[BaseModel] | None:
    """The config class of field `head` of `cls` whose current value (dumped) is `value`: the
    field's own class, the union member the value's discriminator selects, or None (no sub-keys)."""
    info = cls.model_fields[head]
    members = _union_members(info.annotation, info.discriminator)
    if members is not None:
        tag = value.get(info.discriminator) if isinstance(value, dict) else None
        return members.get(tag)
    sub = info.annotation
    sub = getattr(sub, "__args__", (sub,))[0] if not isinstance(sub, type) else sub
    return sub if isinstance(sub, type) and issubclass(sub, BaseModel) else None


def _closest_key(key: str, valid: list[str]) -> str:
    """' (did you mean X?)': a key differing only in case first (`task.k` → `task.K`), else the closest."""
    same = [v for v in valid if v.lower() == key.lower()]
    return f" (did you mean {same[0]!r}?)" if same else closest(key, valid)


def _check_path(cls: type[BaseModel], path: list[str], full: str, data: dict | None = None) -> None:
    """Raise a UsageError naming the valid keys if `path` is not a field path of `cls`.

    `data` is the current (dumped) value of the block: in a union field it says which member's
    keys are valid (the member its `name` selects)."""
    fields = cls.model_fields
    head = path[0]
    prefix = full[: len(full) - len(".".join(path))]
    if head not in fields:
        valid = [f"{prefix}{f}" for f in fields if not f.startswith("_")]
        tag = (data or {}).get("name")
        here = f" of {prefix[:-1]} {tag!r}" if prefix and isinstance(tag, str) else " here"
        raise UsageError(
            f"unknown config key {full!r}{_closest_key(prefix + head, valid)}; valid keys{here}: {', '.join(valid)}"
        )
    if len(path) > 1:
        value = (data or {}).get(head)
        sub = _sub_model(cls, head, value)
        info = fields[head]
        if sub is None and _union_members(info.annotation, info.discriminator) is not None:
            members = _union_members(info.annotation, info.discriminator)
            tag = value.get(info.discriminator) if isinstance(value, dict) else None
            raise UsageError(f"config key {full!r}: {prefix}{head}.{info.discriminator} is {tag!r}, which is not "
                             f"one of {', '.join(members)}")
        if sub is None:
            raise UsageError(f"config key {full!r}: {prefix}{head} has no sub-keys")
        _check_path(sub, path[1:], full, value if isinstance(value, dict) else None)


def _switch(cls: type[BaseModel], path: list[str], full: str, data: dict, value: Any) -> bool:
    """If `path` names the discriminator of a union field (`task.name`): check `value` is a member
    and, when it selects another member, reset the block to that member's defaults in `data`.
    Returns whether `path` was such a key."""
    for i, head in enumerate(path[:-1]):
        info = cls.model_fields[head]
        node = data.get(head)
        if i == len(path) - 2:
            members = _union_members(info.annotation, info.discriminator)
            if members is None or path[-1] != info.discriminator:
                return False
            if not isinstance(value, str) or value not in members:
                given = value if isinstance(value, str) else str(value)
                raise UsageError(f"config key {full!r}: unknown {head} {value!r}{closest(given, members)}; "
                                 f"known: {', '.join(sorted(members))}")
            if not isinstance(node, dict) or node.get(info.discriminator) != value:
                data[head] = {info.discriminator: value}  # the new member's defaults
            return True
        cls = _sub_model(cls, head, node)
        if cls is None or not isinstance(node, dict):
            return False
        data = node
    return False


def _drop_resolved(config: BaseModel, data: dict, keep: set[str], prefix: str = "") -> None:
    """Remove from `data` (the dump of `config`) every field a block's rule derived, so validation
    derives it again from the new values; not a field named in `keep` (the overridden keys), nor
    anything in a block that `keep` replaces whole."""
    for name in type(config).model_fields:
        value = getattr(config, name)
        path = prefix + name
        if isinstance(value, Strict) and isinstance(data.get(name), dict) and path not in keep:
            for key in value.resolved_defaults():
                if f"{path}.{key}" not in keep:
                    data[name].pop(key, None)
            _drop_resolved(value, data[name], keep, path + ".")


def _shown_loc(cls: type[BaseModel] | None, loc: tuple) -> str:
    """The dotted field of an error's loc, without validator names and without the union member
    tag pydantic inserts after a union field (`task.linear-regression.d` → `task.d`)."""
    parts = []
    loc = [p for p in loc if not str(p).startswith("function-")]
    i = 0
    while i < len(loc):
        part = loc[i]
        parts.append(str(part))
        i += 1
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            cls = None
            continue
        info = cls.model_fields[part]
        members = _union_members(info.annotation, info.discriminator)
        if members is not None and i < len(loc) and loc[i] in members:
            cls = members[loc[i]]
            i += 1
        else:
            cls = _sub_model(cls, part, None)
    return ".".join(parts)


def validation_message(err: ValidationError, cls: type[BaseModel] | None = None) -> str:
    """One sentence per problem: the dotted field, what is allowed, and what was given."""
    parts = []
    for e in err.errors():
        loc = _shown_loc(cls, e["loc"])
        msg = e["msg"].replace("Value error, ", "")
        given = e.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        parts.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    return "invalid config: " + "; ".join(parts)


def build(cls: type[ExperimentConfig], data: dict) -> ExperimentConfig:
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise UsageError(validation_message(err, cls)) from None


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
    _drop_resolved(config, data, set(overrides))
    # a union member switch (`task.name=...`) first: the block's other keys are then checked
    # against (and set on) the member it selects, whatever order they were given in
    for key, value in sorted(overrides.items(), key=lambda kv: kv[0].split(".")[-1] != "name"):
        path = key.split(".")
        _check_path(cls, path, key, data)
        if _switch(cls, path, key, data, value):
            continue
        node = data
        for p in path[:-1]:
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
        node[path[-1]] = value
    return build(cls, data)


def _config_class(experiment: Any) -> type[ExperimentConfig] | None:
    """The ExperimentConfig subclass whose `experiment` default is `experiment` (among those imported)."""
    todo, seen = list(ExperimentConfig.__subclasses__()), set()
    while todo:
        sub = todo.pop()
        if sub in seen:
            continue
        seen.add(sub)
        todo.extend(sub.__subclasses__())
        if sub.model_fields["experiment"].default == experiment:
            return sub
    return None


def _retire(cls: type[BaseModel], data: dict, prefix: str, notes: list[str]) -> dict:
    out = {}
    for key, value in data.items():
        if key not in cls.model_fields:
            notes.append(f"dropped the retired config key {prefix}{key} (was {value!r}): "
                         f"{cls.__name__} no longer has it")
            continue
        sub = _sub_model(cls, key, value)
        if sub is not None and isinstance(value, dict):
            value = _retire(sub, value, f"{prefix}{key}.", notes)
        elif sub is not None and isinstance(value, list):
            value = [_retire(sub, v, f"{prefix}{key}[{i}].", notes) if isinstance(v, dict) else v
                     for i, v in enumerate(value)]
        out[key] = value
    return out


def upgrade_config_dict(data: Any, cls: type[ExperimentConfig] | None = None) -> tuple[Any, list[str]]:
    """An old config.yaml's dict made loadable: keys its config class no longer has are dropped,
    found recursively (in a union block, against the member its `name` selects), one note each.

    `cls` defaults to the config class of `data["experiment"]` (the experiments must be imported).
    Returns (a new dict, notes); `data` is not changed. Unknown experiments, unknown union members
    and values that are not dicts are left as they are, for validation to report."""
    if not isinstance(data, dict):
        return data, []
    cls = cls or _config_class(data.get("experiment"))
    if cls is None:
        return copy.deepcopy(data), []
    notes: list[str] = []
    return _retire(cls, copy.deepcopy(data), "", notes), notes


def load_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read config {path}: {err}") from None
