"""Error against the number of in-context examples, for a trained model and for estimators, on the
same held-out prompts: the rows of curves.parquet (general schema, x_name = "n_examples",
metric = "mse": the plain squared error at the query, not halved, not divided by d).

Estimators give every prefix at once (position n is predicted from the n points before it). A model
is evaluated either the same way, in one causal pass (`prefixes=None`, a decoder), or only at the
query on prompts cut to m examples for each m of `prefixes` (a model that predicts the query alone,
like the LSA).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from icldyn.estimators import ESTIMATORS
from icldyn.tasks.base import Batch

X_NAME, METRIC = "n_examples", "mse"
COLUMNS = ["predictor", "x_name", "x", "metric", "value", "stderr", "seed"]
NO_SEED = -1  # estimators and theory: the same for every seed


def curve_frame(rows: list[tuple]) -> pd.DataFrame:
    """(predictor, n_examples, mse, stderr, seed) tuples → a curves.parquet frame."""
    frame = pd.DataFrame(rows, columns=["predictor", "x", "value", "stderr", "seed"])
    frame.insert(1, "x_name", X_NAME)
    frame.insert(3, "metric", METRIC)
    return frame[COLUMNS]


def _rows(name: str, err: torch.Tensor, seed: int, xs: Sequence[int] | None = None) -> list[tuple]:
    """Mean and standard error over prompts of squared errors err (B, X), one row per column."""
    mean, se = err.mean(0), err.std(0) / err.shape[0] ** 0.5
    xs = range(err.shape[1]) if xs is None else xs
    return [(name, int(n), float(mean[k]), float(se[k]), seed) for k, n in enumerate(xs)]


@torch.no_grad()
def estimator_rows(task, batch: Batch, names: Sequence[str]) -> list[tuple]:
    """Every estimator's squared error at every prefix length 0..T−1 of `batch` (E = 1 prompts)."""
    rows = []
    for name in names:
        err = (ESTIMATORS[name](task)(batch) - batch.y).pow(2)[0]  # (B, T)
        rows += _rows(name, err, NO_SEED)
    return rows


def _cut(batch: Batch, m: int) -> Batch:
    """The first m examples of each prompt followed by its query (the last point)."""
    return Batch(torch.cat([batch.x[..., :m, :], batch.x[..., -1:, :]], -2),
                 torch.cat([batch.y[..., :m], batch.y[..., -1:]], -1))


def _in_chunks(model, batch: Batch, chunk: int) -> torch.Tensor:
    """model(batch) (E, B, P) evaluated `chunk` prompts at a time."""
    return torch.cat([model(batch.select(slice(s, s + chunk))) for s in range(0, batch.x.shape[1], chunk)], 1)


@torch.no_grad()
def model_rows(model, batch: Batch, name: str, seeds: Sequence[int], prefixes: Sequence[int] | None = None,
               chunk: int = 4096) -> list[tuple]:
    """The model's squared error per seed: at every prefix (one causal pass, `prefixes=None`) or at
    the query of prompts cut to m examples, for each m in `prefixes`."""
    if prefixes is None:
        err = (_in_chunks(model, batch, chunk) - batch.y).pow(2)  # (E, B, T)
    else:
        err = torch.stack([(_in_chunks(model, b, chunk)[..., -1] - b.y[..., -1]).pow(2)
                           for b in (_cut(batch, m) for m in prefixes)], -1)  # (E, B, len(prefixes))
    rows = []
    for i, s in enumerate(seeds):
        rows += _rows(name, err[i], s, prefixes)
    return rows


def error_curves(model, task, batch: Batch, *, name: str, seeds: Sequence[int], estimators: Sequence[str],
                 prefixes: Sequence[int] | None = None, chunk: int = 4096) -> pd.DataFrame:
    """curves.parquet rows: the estimators at every prefix, then the model (see `model_rows`)."""
    return curve_frame(estimator_rows(task, batch, estimators)
                       + model_rows(model, batch, name, seeds, prefixes, chunk))
