"""Distribution shifts of prompts, registered per task family (issue 20).

A *family* (one module per task family, registered here by the task's name) knows how to draw a
task's evaluation prompts under a shift, batched, for each number of in-context examples of a
grid, and how to score a prediction on them. A *shift* is one entry of its family's registry
(one line each): a name, an optional parameter (`NAME=value`) and the transform.

    family = family_of(task)
    shift, value = parse_shift(task, "skewed=3")
    for m, batch in family.prompts(task, shift, value, grid, n_prompts, seed): ...

`none` (the unshifted prompts) is every family's reference shift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from icldyn.errors import UsageError
from icldyn.registry import Registry, closest
from icldyn.tasks.base import Batch

NONE = "none"


@dataclass(frozen=True)
class Param:
    """A shift's one parameter: `kind` (int or float), bounds (`low` exclusive when `low_open`),
    `default` when `NAME` is given without `=value` (None: the value is required)."""

    field: str
    kind: type = float
    low: float | None = None
    high: Any = None            # a number, or high(task) when the bound depends on the task
    low_open: bool = False
    default: Any = None

    def bound_text(self, high=None) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '≥'} {self.low:g}")
        if high is not None:
            parts.append(f"≤ {high:g}")
        return " and ".join(parts) or "any number"

    def parse(self, shift: str, text: str | None, task=None) -> Any:
        """The value of `text` (None: the default), or a UsageError naming the field and bound."""
        default = self.default(task) if callable(self.default) else self.default
        high = self.high(task) if callable(self.high) else self.high
        if text is None:
            if default is None:
                raise UsageError(f"shift {shift!r} needs a value: --shift {shift}={self.field.upper()} "
                                 f"({self.field}: {'an integer' if self.kind is int else 'a number'} "
                                 f"{self.bound_text(high)})")
            return default
        try:
            value = self.kind(text) if self.kind is float else int(text, 10)
        except ValueError:
            value = None
        ok = value is not None and math.isfinite(value)
        ok = ok and (self.low is None or (value > self.low if self.low_open else value >= self.low))
        ok = ok and (high is None or value <= high)
        if not ok:
            what = "an integer" if self.kind is int else "a number"
            raise UsageError(f"shift {shift!r}: {self.field} must be {what} {self.bound_text(high)} (got {text!r})")
        return value


@dataclass(frozen=True)
class Shift:
    """One shift of a family: `apply` is the family's transform (its signature is the family's)."""

    name: str
    doc: str
    apply: Callable | None = None
    param: Param | None = None

    def label(self, value) -> str:
        """`name` or `name=value`: the shift's condition value in curves.parquet."""
        return self.name if self.param is None else f"{self.name}={value:g}"


class Family:
    """The shifts of one task family and how its prompts are drawn and scored (subclasses)."""

    task: str
    x_name = "n_examples"
    metric = "mse"
    family_shifts: tuple[Shift, ...] = ()  # registered after "none", in this order

    def __init__(self):
        self.shifts: Registry[Shift] = Registry(f"shift of the {self.task} task")
        self.shifts.register(NONE, Shift(NONE, "the task's own prompts (the reference)"))
        for shift in self.family_shifts:
            self.register(shift)

    def register(self, shift: Shift) -> Shift:
        return self.shifts.register(shift.name, shift)

    def grid(self, trained, shift: Shift, value) -> list[int]:
        """Numbers of in-context examples to evaluate at."""
        raise NotImplementedError

    def prompts(self, task, shift: Shift, value, grid: Sequence[int], n_prompts: int, seed: int,
                device="cpu") -> Iterator[tuple[int, Batch]]:
        """(m, prompts with m in-context examples under the shift, E = 1) for m in `grid`."""
        raise NotImplementedError

    def score(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-prompt loss (E, B) of predictions of the query (model's or estimator's output)."""
        raise NotImplementedError


FAMILIES: Registry[Family] = Registry("task family with shifts")


def family_of(task) -> Family:
    if task.name not in FAMILIES:
        raise UsageError(f"the {task.name} task has no registered shifts; tasks with shifts: "
                         f"{', '.join(FAMILIES)}")
    return FAMILIES[task.name]


def parse_shift(task, text: str) -> tuple[Shift, Any]:
    """`NAME` or `NAME=value` → (shift, value), with one-sentence errors for an unknown name (the
    allowed ones listed) or a bad value (the field and its bound)."""
    family = family_of(task)
    name, eq, raw = text.partition("=")
    name = name.strip()
    if name not in family.shifts:
        raise UsageError(f"unknown shift {name!r} for the {task.name} task{closest(name, family.shifts)}; "
                         f"allowed: {', '.join(family.shifts)}")
    shift = family.shifts[name]
    if shift.param is None:
        if eq:
            raise UsageError(f"shift {name!r} takes no value (got {text!r})")
        return shift, None
    return shift, shift.param.parse(name, raw.strip() if eq else None, task)


def shift_names(task_name: str) -> list[str]:
    return list(FAMILIES[task_name].shifts)


from icldyn.shifts.linear_regression import LinearRegressionShifts  # noqa: E402
from icldyn.shifts.ngram import NgramShifts  # noqa: E402
from icldyn.shifts.classification import ClassificationShifts  # noqa: E402

FAMILIES.register("linear-regression", LinearRegressionShifts())
FAMILIES.register("ngram-markov", NgramShifts("ngram-markov"))
FAMILIES.register("ngram-markov-split", NgramShifts("ngram-markov-split"))
FAMILIES.register("binary-classification", ClassificationShifts())

__all__ = ["FAMILIES", "Family", "NONE", "Param", "Shift", "family_of", "parse_shift", "shift_names"]
