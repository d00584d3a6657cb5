"""Shifts of in-context binary classification prompts (Li et al. 2024): out-of-domain patterns.

    none        the training tasks' prompts
    ood=S1      relevant patterns μ′ with coefficient sum S₁ and rotated irrelevant patterns (the
                task's "ood" split; default the config's ood_s1)
    unseen      the in-domain tasks not trained on
    alpha=a     a fraction a of the context examples task-relevant (the rest other patterns)

The score is the 0–1 error of sign(score) at the query, at the trained context length.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from icldyn.shifts import Family, Param, Shift
from icldyn.tasks.base import Batch


def _ood_default(task):
    return task.config.ood_s1 if task is not None else 1.0


SHIFTS = (
    Shift("ood", "out-of-domain patterns with coefficient sum S₁", None,
          Param("S1", float, 0, 1e3, low_open=True, default=_ood_default)),
    Shift("unseen", "in-domain tasks not trained on"),
    Shift("alpha", "fraction of task-relevant context examples", None, Param("alpha", float, 0, 1, low_open=True)),
)


class ClassificationShifts(Family):
    task = "binary-classification"
    metric = "error"
    family_shifts = SHIFTS

    def grid(self, trained, shift: Shift, value) -> list[int]:
        return [trained.config.task.n_points - 1]

    def prompts(self, task, shift: Shift, value, grid: Sequence[int], n_prompts: int, seed: int,
                device="cpu") -> Iterator[tuple[int, Batch]]:
        options = {"ood": {"split": "ood", "s1": value}, "unseen": {"split": "unseen"},
                   "alpha": {"alpha": value}}.get(shift.name, {})
        for m in grid:
            yield m, task.eval_batch(n_prompts, seed, n_points=m + 1, device=device, **options)

    def score(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """0–1 error of sign(score) at the query: pred (E, B, 1) or (E, B) → (E, B)."""
        if pred.dim() == batch.y.dim():
            pred = pred[..., -1]
        return (torch.sign(pred.double()) != batch.y[..., -1].double()).double()
