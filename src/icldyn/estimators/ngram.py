"""In-context estimators of the next token of an n-gram Markov chain (the `ngram-markov` task).

Each takes a token batch — x (E, B, L) long, y (E, B), extras["pi"] — and returns a probability
vector for x_{L+1}: (E, B, S). Positions are 1..L; position i "matches" the query on a set of
offsets O when x_{i−s} = x_{L+1−s} for every s ∈ O; a position whose history starts before the
sequence does not match. All are vectorised over seeds, prompts and positions.

  unigram      uniform attention over the L positions: the in-context token frequencies,
               unsmoothed by default (`smoothing` adds a pseudo-count to every token)
  ngram_bayes  the Bayes posterior predictive with the true parents: (c_s + α)/(n + Sα), c the
               next-token counts over positions matching on the parents, α the prompts' prior
  gih          the generalized induction head Σ_i softmax_i(a·1{i matches on O}) x_i, with
               O = S* (default: the task's parents — pass `subset=` S* from
               `theory.induction.best_subset` where they differ) and a = ∞ by default: the
               empirical next-token law over matching positions; with no matching position
               every logit is equal, so it is uniform attention over all L positions (the
               unigram frequencies) — the a → ∞ limit of the formula
  oracle       the true conditional π(·| x_{L+1−p}, p ∈ parents) of each prompt (extras["pi"])
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from icldyn.errors import UsageError
from icldyn.estimators.base import Estimator


def _check(batch, name: str) -> None:
    x = batch.x
    if x.dim() != 3 or x.dtype != torch.long or tuple(batch.y.shape) != tuple(x.shape[:2]):
        raise UsageError(f"estimator {name!r} needs tokens x (E, B, L) long and targets y (E, B); "
                         f"got x {tuple(x.shape)} {x.dtype} and y {tuple(batch.y.shape)}")


def _dtype(batch) -> torch.dtype:
    pi = batch.extras.get("pi")
    return pi.dtype if torch.is_tensor(pi) else torch.float32


def history_match(x: torch.Tensor, offsets: Sequence[int]) -> torch.Tensor:
    """match[..., i−1] for positions i = 1..L: x_{i−s} = x_{L+1−s} for all s ∈ offsets. (E, B, L) bool."""
    L = x.shape[-1]
    if max(offsets) > L:
        raise UsageError(f"history offsets {list(offsets)} reach before a context of length L = {L}")
    match = torch.ones_like(x, dtype=torch.bool)
    for s in offsets:
        before = F.pad(x, (s, 0), value=-1)[..., :L]                      # x_{i−s}, −1 before the start
        match &= before == x[..., L - s, None]
    return match


def next_token_counts(x: torch.Tensor, mask: torch.Tensor, S: int, dtype) -> torch.Tensor:
    """Σ_i mask_i e_{x_i}: (E, B, S)."""
    out = torch.zeros(*x.shape[:-1], S, dtype=dtype, device=x.device)
    return out.scatter_add_(-1, x, mask.to(dtype))


class _TokenEstimator(Estimator):
    """A token-task estimator: `__call__(batch) -> (E, B, S)`."""

    def __init__(self, task):
        self.task = task
        self.S = task.config.n_states
        self.parents = list(task.config.parents)

    def __call__(self, batch) -> torch.Tensor:
        _check(batch, self.name)
        return self.predict_tokens(batch)

    def predict_tokens(self, batch) -> torch.Tensor:
        raise NotImplementedError


class InContextUnigram(_TokenEstimator):
    """(n_s + smoothing) / (L + S·smoothing); smoothing = 0 is uniform attention."""

    name = "unigram"

    def __init__(self, task, smoothing: float = 0.0):
        super().__init__(task)
        self.smoothing = float(smoothing)

    def predict_tokens(self, batch) -> torch.Tensor:
        x = batch.x
        counts = next_token_counts(x, torch.ones_like(x, dtype=torch.bool), self.S, _dtype(batch))
        return (counts + self.smoothing) / (x.shape[-1] + self.S * self.smoothing)


class InContextNgram(_TokenEstimator):
    """Dirichlet posterior predictive (c + α)/(n + Sα) over positions matching on the parents."""

    name = "ngram_bayes"

    def __init__(self, task, parents: Sequence[int] | None = None, alpha: float | None = None):
        super().__init__(task)
        self.parents = sorted(parents) if parents is not None else self.parents
        self.alpha = alpha

    def predict_tokens(self, batch) -> torch.Tensor:
        alpha = self.alpha if self.alpha is not None else batch.extras.get("alpha", self.task.config.alpha)
        counts = next_token_counts(batch.x, history_match(batch.x, self.parents), self.S, _dtype(batch))
        return (counts + alpha) / (counts.sum(-1, keepdim=True) + self.S * alpha)


class GeneralizedInductionHead(_TokenEstimator):
    """Σ_i softmax_i(a·1{match_i}) x_i over positions matching on `subset` (module doc)."""

    name = "gih"

    def __init__(self, task, subset: Sequence[int] | None = None, a: float = math.inf):
        super().__init__(task)
        self.subset = sorted(subset) if subset is not None else self.parents
        self.a = float(a)

    def predict_tokens(self, batch) -> torch.Tensor:
        x, dt = batch.x, _dtype(batch)
        L = x.shape[-1]
        matched = next_token_counts(x, history_match(x, self.subset), self.S, dt)           # (E, B, S)
        every = next_token_counts(x, torch.ones_like(x, dtype=torch.bool), self.S, dt)
        # weights e^a on matches and 1 elsewhere, divided through by e^a so that a = ∞ is exact
        r = math.exp(-self.a)
        num = matched + r * (every - matched)
        den = num.sum(-1, keepdim=True)
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(dt).tiny), every / L)


class TrueConditional(_TokenEstimator):
    """π(·| x_{L+1−p}, p ∈ parents) from extras["pi"] (E, B, S^k, S)."""

    name = "oracle"

    def predict_tokens(self, batch) -> torch.Tensor:
        pi = batch.extras.get("pi")
        if not torch.is_tensor(pi):
            raise UsageError("estimator 'oracle' needs the prompts' transition laws in batch.extras['pi']")
        x, L = batch.x, batch.x.shape[-1]
        z = sum(x[..., L - p] * self.S**k for k, p in enumerate(self.parents))               # (E, B)
        pi = pi.expand(*x.shape[:2], *pi.shape[2:])
        return pi.gather(2, z[..., None, None].expand(*z.shape, 1, self.S))[:, :, 0]


def _factory(cls, name: str, **defaults) -> Callable[..., Estimator]:
    """(task, **params) -> cls(task, **defaults, **params), named `name`."""
    def make(task, **params) -> Estimator:
        try:
            est = cls(task, **{**defaults, **params})
        except TypeError as err:
            raise UsageError(f"estimator {name!r}: {err}") from None
        est.name = name
        return est
    make.__doc__ = cls.__doc__
    return make


NGRAM_ESTIMATORS: dict[str, Callable[..., Estimator]] = {
    "unigram": _factory(InContextUnigram, "unigram"),
    "ngram_bayes": _factory(InContextNgram, "ngram_bayes"),
    "gih": _factory(GeneralizedInductionHead, "gih"),
    "oracle": _factory(TrueConditional, "oracle"),
}
