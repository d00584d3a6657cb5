"""What a probe is: a callable run at every record step that returns per-seed metrics.

A probe factory takes the resolved experiment config, the task and its own keyword parameters,
`factory(config, task, **params) -> Probe`, and is registered by name in `probes/__init__.py`;
an experiment lists the probes it records as names (and parameters), never as code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch


@dataclass
class RecordContext:
    """What a probe sees at a record step."""

    step: int
    time: float
    model: torch.nn.Module
    task: object
    eval_batch: object  # tasks.base.Batch: held-out prompts shared by every seed
    final: bool
    seeds: Sequence[int]
    cache: dict = field(default_factory=dict)  # probes may keep state across records here


# RecordContext → {metric name ("probe/<name>/..."): (E,) tensor}
Probe = Callable[[RecordContext], dict[str, torch.Tensor]]
ProbeFactory = Callable[..., Probe]
