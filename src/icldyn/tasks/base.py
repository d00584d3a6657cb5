"""What every task produces and offers: a `Batch` of prompts with a leading seed axis.

Shapes: `x` (E, B, T, d) inputs and `y` (E, B, T) labels, E the seeds of an ensemble (1 for
the shared held-out prompts), B prompts, T points per prompt. In the regression layout the
last point is the query: a model that predicts one value per prompt predicts y[..., -1] from
the T−1 examples before it; a causal model predicts every y[..., t] from the t examples
before it (teacher forcing), i.e. with t = 0..T−1 in-context examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Sequence

import torch


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        return self.x.shape[2]

    def to(self, device) -> "Batch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        moved = {k: v.to(device) if torch.is_tensor(v) else v for k, v in moved.items()}
        moved["extras"] = {k: v.to(device) if torch.is_tensor(v) else v for k, v in self.extras.items()}
        return replace(self, **moved)

    def select(self, index: slice) -> "Batch":
        """The prompts `index` along the batch axis (for evaluating in chunks)."""
        ex = {k: v[:, index] if torch.is_tensor(v) and v.dim() > 1 else v for k, v in self.extras.items()}
        return Batch(self.x[:, index], self.y[:, index], ex)


class Task:
    """A task family. Subclasses set `name`, `config_class`, `estimators` and implement `sample`."""

    name: str
    estimators: tuple[str, ...] = ()
    loss_kind: str = "mse"  # "mse": ½·mean squared error; "ce": cross-entropy

    def __init__(self, config, dtype: torch.dtype = torch.float32):
        self.config = config
        self.dtype = dtype

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu") -> Batch:
        """Prompts for each seed at `step`: a pure function of (seed, step). Shapes in the module doc."""
        raise NotImplementedError

    def eval_batch(self, n_prompts: int, eval_seed: int, *, n_points: int | None = None, device="cpu") -> Batch:
        """Held-out prompts shared by all seeds (E = 1)."""
        return self.sample([eval_seed], step=0, batch_size=n_prompts, n_points=n_points, device=device, stream="eval")
