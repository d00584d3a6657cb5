"""In-context n-gram Markov chains (Chen, Sheen, Wang & Yang 2024; Edelman et al. 2024).

Vocabulary [S]. Each sequence draws its OWN transition law π: for every configuration z of the
tokens at the parent offsets (`parents`, e.g. {1, 2}: x_t depends on x_{t−1}, x_{t−2}) a row
π(·|z) ~ Dirichlet(α·1). The first max(parents) tokens are uniform; then
x_t ~ π(·| x_{t−p}, p ∈ parents). A sequence has L + 1 tokens.

Batch layout (token task, see `tasks/base.py` for the seed axis):
  x  (E, B, L) long   tokens x_1..x_L (the context)
  y  (E, B)    long   the next token x_{L+1} (the target)
  extras["pi"]    (E, B, S^k, S)  each sequence's π; row z = Σ_k x_{t−parents[k]}·S^k
                                  (k from 0, parents sorted ascending) — for the oracle
  extras["alpha"] float           the Dirichlet α these prompts were drawn with

Sampling is vectorised over the batch: one Dirichlet draw for all rows of all sequences and one
categorical draw per position for the whole batch (L + 1 steps of batched ops, never a loop over
sequences). It runs on numpy's PCG64 seeded by `icldyn.seeding.stream_seed`, so a batch is a
pure function of (seed, stream, step) — torch's Gamma/Dirichlet samplers take no generator.

`ngram-markov-split` (`NgramSplitTask`) is the same chain with the paper's fixed dataset: one draw of
train_size + val_size sequences per seed, split by index into a training set and a validation set.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from icldyn.config import Strict
from icldyn.errors import UsageError
from icldyn.seeding import stream_seed
from icldyn.tasks.base import Batch, Task


class NgramMarkovConfig(Strict):
    name: Literal["ngram-markov"] = "ngram-markov"
    n_states: int = Field(default=3, ge=2, description="S: vocabulary size")
    parents: list[int] = Field(default=[1, 2], min_length=1, description="parent offsets (≥ 1)")
    alpha: float = Field(default=0.1, gt=0, description="Dirichlet(α·1) prior of each row of π")
    n_points: int = Field(default=100, ge=1, description="L: context length (the target is x_{L+1})")

    @field_validator("parents")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if min(v) < 1:
            raise ValueError(f"task.parents must be offsets ≥ 1 (got {v})")
        if len(set(v)) != len(v):
            raise ValueError(f"task.parents must not repeat an offset (got {v})")
        return sorted(v)

    @model_validator(mode="after")
    def _fits(self):
        if self.n_states ** len(self.parents) > 10**6:
            raise ValueError(f"task.parents: S^{len(self.parents)} parent configurations is too many "
                             f"(n_states={self.n_states})")
        return self


def dirichlet_rows(rng: np.random.Generator, alpha: float, shape: tuple[int, ...]) -> np.ndarray:
    """Dirichlet(α·1) over the last axis of `shape`, float64.

    Gamma(α) = Gamma(α+1)·U^{1/α}, drawn in log space: for small α a plain Gamma(α) draw
    underflows to 0 often enough to leave all-zero rows; the log form never does.
    """
    log_g = np.log(rng.standard_gamma(alpha + 1.0, size=shape)) + np.log(rng.random(shape)) / alpha
    log_g -= log_g.max(-1, keepdims=True)
    g = np.exp(log_g)
    return g / g.sum(-1, keepdims=True)


def config_index(x: np.ndarray, t, parents: Sequence[int], S: int):
    """Row index z = Σ_k x[..., t − parents[k]]·S^k of π for position t (numpy or torch)."""
    z = 0
    for k, p in enumerate(parents):
        z = z + x[..., t - p] * S**k
    return z


class NgramMarkovTask(Task):
    name = "ngram-markov"
    estimators = ("unigram", "ngram_bayes", "gih", "oracle")
    loss_kind = "ce"

    def __init__(self, config: NgramMarkovConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)

    # -- sampling -----------------------------------------------------------------------------
    def _rngs(self, seed: int, step: int, stream: str) -> tuple[np.random.Generator, np.random.Generator]:
        """(π generator, token generator) for one seed at one step of a stream."""
        if stream in ("eval", "fixed"):
            keys = [(stream, 0), (stream, 1)]
        elif stream == "train":
            keys = [("task", step), ("data", step)]
        else:
            raise UsageError(f"unknown sampling stream {stream!r}; allowed: train, eval, fixed")
        return tuple(np.random.Generator(np.random.PCG64(stream_seed(seed, s, k))) for s, k in keys)

    def draw(self, rng_pi: np.random.Generator, rng_x: np.random.Generator, batch_size: int, L: int,
             alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """tokens (B, L+1) int64 and π (B, S^k, S) float64 for B sequences."""
        S, parents = self.config.n_states, self.config.parents
        m = max(parents)
        if L + 1 <= m:
            raise UsageError(f"task.n_points must be ≥ {m} (the largest parent offset); got {L}")
        pi = dirichlet_rows(rng_pi, alpha, (batch_size, S ** len(parents), S))
        cdf = np.cumsum(pi, axis=-1)
        u = rng_x.random((batch_size, L + 1))
        x = np.empty((batch_size, L + 1), dtype=np.int64)
        x[:, :m] = np.minimum((u[:, :m] * S).astype(np.int64), S - 1)
        rows = np.arange(batch_size)
        for t in range(m, L + 1):
            c = cdf[rows, config_index(x, t, parents, S)]                 # (B, S)
            # token = number of cdf entries ≤ u; the clip guards rounding in the last entry
            x[:, t] = np.minimum((u[:, t, None] >= c).sum(-1), S - 1)
        return x, pi

    def sample(self, seeds: Sequence[int], step: int, batch_size: int, *, n_points: int | None = None,
               device="cpu", stream: str = "train", alpha: float | None = None) -> Batch:
        """Shapes in the module doc. `n_points` overrides L, `alpha` the prior (evaluation)."""
        L = n_points or self.config.n_points
        alpha = float(alpha if alpha is not None else self.config.alpha)
        if alpha <= 0:
            raise UsageError(f"alpha must be > 0 (got {alpha})")
        xs, pis = [], []
        for s in seeds:
            x, pi = self.draw(*self._rngs(s, step, stream), batch_size, L, alpha)
            xs.append(x)
            pis.append(pi)
        tokens = torch.from_numpy(np.stack(xs)).to(device)
        pi = torch.from_numpy(np.stack(pis)).to(device=device, dtype=self.dtype)
        return Batch(tokens[..., :L], tokens[..., L], {"pi": pi, "alpha": alpha})

    def eval_batch(self, n_prompts: int, eval_seed: int, *, n_points: int | None = None, device="cpu",
                   alpha: float | None = None) -> Batch:
        return self.sample([eval_seed], 0, n_prompts, n_points=n_points, device=device, stream="eval",
                           alpha=alpha)


# -- the paper's fixed dataset and its validation split ---------------------------------------------
class NgramSplitConfig(NgramMarkovConfig):
    """`ngram-markov` with the paper's split of one fixed draw: the first `train_size` sequences train,
    the last `val_size` validate (Chen, Sheen, Wang & Yang 2024: 9,000 + 1,000)."""

    name: Literal["ngram-markov-split"] = "ngram-markov-split"
    train_size: int | None = Field(default=9000, gt=0, description="the fixed training set (None: fresh sequences)")
    val_size: int = Field(default=1000, gt=0, description="the held-out tail of the fixed draw")


class NgramSplitTask(NgramMarkovTask):
    """`ngram-markov` with the paper's split of one fixed draw (`NgramSplitConfig`).

    stream "fixed" with batch_size = train_size: the first train_size sequences of a draw of
    train_size + val_size; stream "val": the last val_size. Without a fixed training set
    (train_size None: fresh sequences every step) "val" is val_size sequences of the unused
    fixed stream. Every other request is the plain `ngram-markov` stream. Shapes as above.
    """

    name = "ngram-markov-split"

    def __init__(self, config: NgramSplitConfig, dtype: torch.dtype = torch.float32):
        super().__init__(config, dtype)
        self.train_size, self.val_size = config.train_size, config.val_size
        self._drawn: dict = {}

    def _split(self, seeds, device) -> Batch:
        key = (tuple(seeds), str(device))
        if key not in self._drawn:
            n = self.train_size + self.val_size
            self._drawn = {key: super().sample(seeds, 0, n, device=device, stream="fixed")}
        return self._drawn[key]

    def sample(self, seeds, step, batch_size, *, n_points=None, device="cpu", stream="train", alpha=None) -> Batch:
        plain = n_points is None and alpha is None and self.train_size is not None
        if stream == "fixed" and plain and batch_size == self.train_size:
            return _contiguous(self._split(seeds, device).select(slice(0, self.train_size)))
        if stream == "val":
            if self.train_size is None:  # fresh training sequences: the fixed stream is unused
                return super().sample(seeds, 0, self.val_size, n_points=n_points, device=device,
                                      stream="fixed", alpha=alpha)
            if not plain:
                raise UsageError("the validation split is part of the fixed dataset: it has the training "
                                 "length and prior (use eval_batch for other n_points or alpha)")
            return _contiguous(self._split(seeds, device).select(slice(self.train_size, None)))
        return super().sample(seeds, step, batch_size, n_points=n_points, device=device, stream=stream,
                              alpha=alpha)


def _contiguous(batch: Batch) -> Batch:
    batch.x, batch.y = batch.x.contiguous(), batch.y.contiguous()
    return batch
