"""Shifts of n-gram Markov prompts (induction-ngram's generalisation): another Dirichlet prior α
of the transition rows, and other context lengths L than trained on.

    none        the task's prompts at the grid of lengths
    alpha=a     rows of π ~ Dirichlet(a·1) instead of the training α
    length=L    context lengths up to L

The grid of lengths is the experiment's `generalisation_lengths` when its config has them, else
L/2, L, 2L of the training length. The score is the cross-entropy −log p(x_{L+1}) of the next token.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from icldyn.shifts import Family, Param, Shift
from icldyn.tasks.base import Batch

PROB_FLOOR = 1e-8  # a predicted probability of exactly 0 would make the loss infinite

SHIFTS = (
    Shift("alpha", "transition rows ~ Dirichlet(α·1), another prior than trained on", None,
          Param("alpha", float, 0, 1e3, low_open=True, default=1.0)),
    Shift("length", "context lengths up to L", None, Param("L", int, 1, 100_000)),
)


class NgramShifts(Family):
    metric = "cross_entropy"
    family_shifts = SHIFTS

    def __init__(self, task_name: str = "ngram-markov"):
        self.task = task_name
        super().__init__()

    def grid(self, trained, shift: Shift, value) -> list[int]:
        L = trained.config.task.n_points
        lengths = list(getattr(trained.config, "generalisation_lengths", None) or [max(1, L // 2), L, 2 * L])
        if shift.name == "length":
            lengths = [m for m in lengths if m < value] + [value]
        return sorted(set(lengths))

    def prompts(self, task, shift: Shift, value, grid: Sequence[int], n_prompts: int, seed: int,
                device="cpu") -> Iterator[tuple[int, Batch]]:
        alpha = value if shift.name == "alpha" else None
        for L in grid:
            yield L, task.eval_batch(n_prompts, seed, n_points=L, alpha=alpha, device=device)

    def score(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """−log p(target): pred (E, B, S) probabilities, batch.y (E', B) tokens → (E, B)."""
        target = batch.y.long().expand(pred.shape[:-1])
        p = torch.gather(pred.double(), -1, target[..., None])[..., 0]
        return -p.clamp(min=PROB_FLOOR).log()
