"""In-context binary classification on relevant/irrelevant patterns (Li, Wang, Lu, Cui & Chen 2024).

Patterns: M₁ in-domain-relevant (IDR) μ_0..μ_{M₁−1} = e_0..e_{M₁−1} and M₂ in-domain-irrelevant
(IDI) ν_k = e_{M₁+k}, orthonormal in R^d. An input is x = β·μ_j + κ·ν_k, κ ~ U[−κ_max, κ_max],
k uniform. A task is an ordered pair (a, b) of distinct relevant patterns: label +1 on μ_a, −1 on
μ_b, a fair coin on any other relevant pattern. A prompt draws a task; each of its l context
examples has pattern a with probability α/2, b with α/2 and each other pattern with
(1 − α)/(M − 2); the query has pattern a or b (fair coin) and the task's label.

Training tasks: the ordered pairs (j, j + o mod M₁), o = 1, 2, … taken in that order, the first
`n_train_tasks` of them (default 3·M₁: o ∈ {1, 2, 3}, every pattern 3 times + and 3 times −).
Splits: "train" (the training tasks), "unseen" (the other in-domain tasks), "ood": relevant
patterns μ′_j = (S₁/2)(μ_{2j} + μ_{2j+1}), j = 0..M₁′−1 (coefficient sum S₁), tasks all their
ordered pairs, irrelevant patterns a fixed seeded rotation of the IDI basis (their span).

Batch: x (E, B, l+1, d), y (E, B, l+1) in ±1, the last point the query (`tasks/base.py`);
extras `pattern` (E, B, l+1) long (each point's relevant pattern, within its split's set) and
`pair` (E, B, 2) long (the task's (a, b)).
"""

from __future__ import annotations

import itertools
from typing import Literal, Optional, Sequence

import torch
from pydantic import Field, model_validator

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.seeding import generator
from icldyn.tasks.base import Batch, Task

SPLITS = ("train", "unseen", "ood")


class BinaryClassificationConfig(Strict):
    name: Literal["binary-classification"] = "binary-classification"
    n_relevant: int = Field(default=6, ge=2, description="M₁: in-domain-relevant patterns (≥ 2; ≥ 3 when α < 1)")
    n_irrelevant: int = Field(default=24, ge=1, description="M₂: in-domain-irrelevant patterns")
    d: int = Field(default=30, gt=0, description="d_X ≥ M₁ + M₂")
    context_length: int = Field(default=20, ge=1, description="l: context examples per prompt")
    alpha: float = Field(default=0.8, gt=0, le=1, description="fraction of task-relevant context examples")
    kappa: float = Field(default=0.4, ge=0, description="bound of |κ|, the irrelevant pattern's weight")
    beta: float = Field(default=1.0, gt=0, description="norm of the relevant pattern")
    n_train_tasks: Optional[int] = Field(default=None, gt=0, description="None: 3·M₁ (offsets 1, 2, 3)")
    ood_relevant: int = Field(default=3, ge=2, description="M₁′: out-of-domain relevant patterns")
    ood_s1: float = Field(default=1.0, gt=0, description="S₁, the coefficient sum of an OOD pattern")
    ood_seed: int = Field(default=0, ge=0, description="seed of the OOD irrelevant patterns' rotation")

    @model_validator(mode="after")
    def _check(self):
        M1, M2 = self.n_relevant, self.n_irrelevant
        if self.d < M1 + M2:
            raise ValueError(f"task.d must be at least n_relevant + n_irrelevant = {M1 + M2} (got {self.d})")
        if self.alpha < 1 and M1 < 3:
            raise ValueError(f"task.n_relevant must be ≥ 3 when task.alpha < 1 (got {M1}): out-of-task "
                             f"examples need a third relevant pattern")
        if self.n_train_tasks is not None and self.n_train_tasks > M1 * (M1 - 1):
            raise ValueError(f"task.n_train_tasks must be at most M₁(M₁ − 1) = {M1 * (M1 - 1)} tasks "
                             f"(got {self.n_train_tasks})")
        if 2 * self.ood_relevant > M1:
            raise ValueError(f"task.ood_relevant must be at most n_relevant / 2 = {M1 // 2} (got {self.ood_relevant})")
        if self.alpha < 1 and self.ood_relevant < 3:
            raise ValueError(f"task.ood_relevant must be ≥ 3 when task.alpha < 1 (got {self.ood_relevant})")
        return self

    @property
    def n_points(self) -> int:
        """l + 1: context examples and the query."""
        return self.context_length + 1


def all_pairs(M: int) -> list[tuple[int, int]]:
    """The M(M − 1) ordered pairs (j, j + o mod M), o = 1..M−1 outer, j inner."""
    return [(j, (j + o) % M) for o in range(1, M) for j in range(M)]


def train_pairs(config: BinaryClassificationConfig) -> list[tuple[int, int]]:
    n = config.n_train_tasks or min(3 * config.n_relevant, config.n_relevant * (config.n_relevant - 1))
    return all_pairs(config.n_relevant)[:n]


class BinaryClassificationTask(Task):
    name = "binary-classification"
    estimators = ("logistic", "linear_svm", "rbf_svm", "nn_1", "nn_3")
    loss_kind = "hinge"

    def __init__(self, config: BinaryClassificationConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        c = config
        eye = torch.eye(c.d, dtype=torch.float64)
        self.relevant = c.beta * eye[: c.n_relevant]                        # (M₁, d)
        self.irrelevant = eye[c.n_relevant: c.n_relevant + c.n_irrelevant]  # (M₂, d)
        g = generator(c.ood_seed, "task", 0)
        q, r = torch.linalg.qr(torch.randn(c.n_irrelevant, c.n_irrelevant, generator=g, dtype=torch.float64))
        self.ood_irrelevant = (q * torch.sign(torch.diagonal(r))) @ self.irrelevant  # rows in span(IDI)
        self.pairs = {"train": train_pairs(c)}
        self.pairs["unseen"] = [p for p in all_pairs(c.n_relevant) if p not in self.pairs["train"]]
        self.pairs["ood"] = list(itertools.permutations(range(c.ood_relevant), 2))

    def ood_relevant(self, s1: float) -> torch.Tensor:
        """μ′_j = (S₁/2)(μ_{2j} + μ_{2j+1}) · β: (M₁′, d)."""
        c = self.config
        return 0.5 * s1 * (self.relevant[0: 2 * c.ood_relevant: 2] + self.relevant[1: 2 * c.ood_relevant: 2])

    def patterns(self, split: str, s1: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(relevant (M, d), irrelevant (M₂, d)) of a split, float64."""
        if split == "ood":
            return self.ood_relevant(self.config.ood_s1 if s1 is None else s1), self.ood_irrelevant
        return self.relevant, self.irrelevant

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "data", alpha: float | None = None, split: str = "train",
               s1: float | None = None) -> Batch:
        """Prompts for each seed at `step` (shapes in the module doc); `n_points` = l + 1."""
        if split not in SPLITS:
            raise UsageError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        if not self.pairs[split]:
            raise UsageError(f"task split {split!r} has no tasks (task.n_train_tasks covers every task)")
        T = n_points or self.config.n_points
        alpha = self.config.alpha if alpha is None else alpha
        parts = [self._one(s, step, batch_size, T, stream, alpha, split, s1, device) for s in seeds]
        x, y, pattern, pair = (torch.stack(t) for t in zip(*parts))
        return Batch(x.to(self.dtype), y.to(self.dtype), {"pattern": pattern, "pair": pair})

    def _one(self, seed, step, B, T, stream, alpha, split, s1, device):
        g = generator(seed, stream, step)
        relevant, irrelevant = self.patterns(split, s1)
        M, M2 = relevant.shape[0], irrelevant.shape[0]
        pairs = torch.tensor(self.pairs[split], dtype=torch.long)
        pair = pairs[torch.randint(len(pairs), (B,), generator=g)]                    # (B, 2)
        a, b = pair[:, :1], pair[:, 1:]
        u = torch.rand(B, T, generator=g, dtype=torch.float64)
        other = torch.randint(max(M - 2, 1), (B, T), generator=g)
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        other = other + (other >= lo).long()
        other = other + (other >= hi).long()                                            # skips a and b
        coin = torch.randint(2, (B, T), generator=g).double() * 2 - 1
        pattern = torch.where(u < alpha / 2, a, torch.where(u < alpha, b, other))
        label = torch.where(pattern == a, 1.0, torch.where(pattern == b, -1.0, coin))
        # the query: a or b with its task label
        pattern[:, -1] = torch.where(coin[:, -1] > 0, a[:, 0], b[:, 0])
        label[:, -1] = coin[:, -1]
        kappa = (torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 1) * self.config.kappa
        k = torch.randint(M2, (B, T), generator=g)
        x = relevant[pattern] + kappa[..., None] * irrelevant[k]
        return x.to(device), label.to(device), pattern.to(device), pair.to(device)

    def eval_batch(self, n_prompts: int, eval_seed: int, *, n_points: int | None = None, device="cpu",
                   **options) -> Batch:
        """Held-out prompts shared by all seeds (E = 1); options: alpha, split, s1 (see `sample`)."""
        return self.sample([eval_seed], 0, n_prompts, n_points=n_points, device=device, stream="eval", **options)
