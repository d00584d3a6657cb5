"""Which history the generalized induction head should match: the modified χ² mutual information.

For a subset S of offsets, z = (x_{t−s})_{s∈S} and x = x_t under μ^π, the stationary law of the
n-gram chain with transition law π (Chen, Sheen, Wang & Yang 2024):

  Ĩ(S)    = E_{π∼prior} Σ_z μ(z)² (Σ_x μ(x|z)²/μ(x) − 1) = E Σ_{z,x} μ(z,x)²/μ(x) − Σ_z μ(z)²
  I_χ²(S) = E_{π∼prior} Σ_z μ(z)  (Σ_x μ(x|z)²/μ(x) − 1)     (the standard χ² mutual information)

The square on μ(z) penalises larger S (more histories, each seen less often in context).
S* = argmax_{|S| ≤ D} Ĩ(S). Expectations are Monte-Carlo over π drawn from the Dirichlet prior,
with standard errors; every subset is scored on the same draws, so their differences are paired.

π layout (as in `tasks/ngram_markov.py`): (N, S^k, S), row z = Σ_k x_{t−parents[k]}·S^k with
parents sorted ascending. The chain's state is the last m = max(parents) tokens,
state = Σ_{j=1..m} x_{t−j}·S^{j−1}; its stationary law is found by the GTH state reduction,
which subtracts nothing and so stays accurate for the nearly reducible chains that a small α
draws often.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import numpy as np
import torch


def sample_prior(n_states: int, parents: Sequence[int], alpha: float, n_draws: int, seed: int = 0) -> torch.Tensor:
    """π (N, S^k, S) float64 with rows iid Dirichlet(α·1)."""
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.full(n_states, alpha), size=(n_draws, n_states ** len(parents)))
    return torch.from_numpy(pi)


def _digits(codes: torch.Tensor, base: int, n: int) -> torch.Tensor:
    """(…,) integer codes → (…, n) base-`base` digits, least significant first."""
    return torch.stack([(codes // base**j) % base for j in range(n)], -1)


def transition_matrix(pi: torch.Tensor, parents: Sequence[int]) -> torch.Tensor:
    """The chain on states (x_{t−1}, …, x_{t−m}): P (N, S^m, S^m)."""
    N, _, S = pi.shape
    parents = sorted(parents)
    m = max(parents)
    states = torch.arange(S**m)
    tokens = _digits(states, S, m)                                     # [:, j−1] = x_{t−j}
    z = sum(tokens[:, p - 1] * S**k for k, p in enumerate(parents))     # (S^m,)
    P = torch.zeros(N, S**m, S**m, dtype=pi.dtype)
    for x in range(S):
        # next state (x, x_{t−1}, …, x_{t−m+1})
        nxt = x + S * (states % S ** (m - 1)) if m > 1 else torch.full_like(states, x)
        P[:, states, nxt] += pi[:, z, x]
    return P


def stationary(P: torch.Tensor) -> torch.Tensor:
    """Stationary laws (N, n) of row-stochastic P (N, n, n) by GTH (Grassmann–Taksar–Heyman)."""
    P = P.clone()
    n = P.shape[-1]
    for k in range(n - 1, 0, -1):
        # exit rate to states < k; 0 only if π has exact zeros that close off state k, and then
        # the clamp puts the mass on the closed class, one of the chain's stationary laws
        leave = P[:, k, :k].sum(-1, keepdim=True).clamp_min(torch.finfo(P.dtype).tiny)
        P[:, :k, k] /= leave
        P[:, :k, :k] += P[:, :k, k, None] * P[:, k, None, :k]
    mu = torch.zeros(P.shape[:-1], dtype=P.dtype)
    mu[:, 0] = 1.0
    for k in range(1, n):
        mu[:, k] = (mu[:, :k] * P[:, :k, k]).sum(-1)
    return mu / mu.sum(-1, keepdim=True)


def window_law(pi: torch.Tensor, parents: Sequence[int], width: int) -> torch.Tensor:
    """Stationary joint law of (x_t, x_{t−1}, …, x_{t−width}): (N, S^{width+1}), index Σ_j x_{t−j} S^j."""
    N, _, S = pi.shape
    parents = sorted(parents)
    m = max(parents)
    width = max(width, m)
    configs = _digits(torch.arange(S ** (width + 1)), S, width + 1)     # [:, j] = x_{t−j}
    mu = stationary(transition_matrix(pi, parents))
    # the oldest m tokens (offsets width … width−m+1) are a stationary state
    state = sum(configs[:, width - m + j] * S ** (j - 1) for j in range(1, m + 1))
    law = mu[:, state]
    for o in range(width - m, -1, -1):                                  # then each newer token
        z = sum(configs[:, o + p] * S**k for k, p in enumerate(parents))
        law = law * pi[:, z, configs[:, o]]
    return law


def _joint(law: torch.Tensor, S: int, subset: Sequence[int]) -> torch.Tensor:
    """μ(z, x) (N, S^|subset|, S) from a window law (N, S^{w+1})."""
    w = round(np.log(law.shape[1]) / np.log(S)) - 1                     # law.shape[1] = S^{w+1}
    configs = _digits(torch.arange(law.shape[1]), S, w + 1)
    z = sum(configs[:, s] * S**k for k, s in enumerate(subset))
    marginalise = torch.nn.functional.one_hot(z * S + configs[:, 0], S ** (len(subset) + 1)).to(law.dtype)
    return (law @ marginalise).view(law.shape[0], S ** len(subset), S)


def information(pi: torch.Tensor, parents: Sequence[int], subset: Sequence[int],
                kind: str = "modified", law: torch.Tensor | None = None) -> torch.Tensor:
    """Per-draw information of x_t carried by the tokens at `subset` offsets: (N,).

    kind: "modified" (Ĩ, weight μ(z)²) or "chi2" (the standard χ² mutual information, weight μ(z)).
    law: a `window_law` of these draws at least max(subset) wide, to share between subsets.
    """
    S = pi.shape[-1]
    law = window_law(pi, parents, max(subset)) if law is None else law
    joint = _joint(law, S, subset)                                       # (N, Z, S)
    mu_z, mu_x = joint.sum(-1), joint.sum(-2)                            # (N, Z), (N, S)
    ratio = joint.pow(2) / mu_x[:, None, :].clamp_min(1e-300)
    if kind == "modified":
        return ratio.sum((-1, -2)) - mu_z.pow(2).sum(-1)
    if kind == "chi2":
        return (ratio.sum(-1) / mu_z.clamp_min(1e-300)).sum(-1) - 1.0
    raise ValueError(f"kind must be 'modified' or 'chi2' (got {kind!r})")


def subset_name(subset: Sequence[int]) -> str:
    return "+".join(str(s) for s in subset)


def offset_subsets(window: int, max_degree: int) -> list[tuple[int, ...]]:
    """Non-empty subsets of offsets 1..window with at most max_degree members, by size then order."""
    return [s for k in range(1, max_degree + 1) for s in itertools.combinations(range(1, window + 1), k)]


def information_draws(n_states: int = 3, parents: Sequence[int] = (1, 2), alpha: float = 0.1, window: int = 3,
                      max_degree: int = 2, n_draws: int = 4000, seed: int = 0,
                      kind: str = "modified") -> dict[str, torch.Tensor]:
    """Subset name → per-draw values (N,) of Ĩ (or I_χ²), all subsets on the same draws of π."""
    pi = sample_prior(n_states, parents, alpha, n_draws, seed)
    law = window_law(pi, parents, window)
    return {subset_name(s): information(pi, parents, s, kind, law) for s in offset_subsets(window, max_degree)}


def information_table(n_states: int = 3, parents: Sequence[int] = (1, 2), alpha: float = 0.1, window: int = 3,
                      max_degree: int = 2, n_draws: int = 4000, seed: int = 0,
                      kind: str = "modified") -> dict[str, tuple[float, float]]:
    """Subset name → (Monte-Carlo mean, its standard error) of Ĩ (or I_χ²) over the prior."""
    draws = information_draws(n_states, parents, alpha, window, max_degree, n_draws, seed, kind)
    return {name: (float(v.mean()), float(v.std() / np.sqrt(n_draws))) for name, v in draws.items()}


def best_subset(n_states: int = 3, parents: Sequence[int] = (1, 2), alpha: float = 0.1, window: int = 3,
                max_degree: int = 2, n_draws: int = 4000, seed: int = 0) -> tuple[tuple[int, ...], dict]:
    """S* = argmax Ĩ(S) over subsets of offsets 1..window with |S| ≤ max_degree, and the Ĩ table."""
    table = information_table(n_states, parents, alpha, window, max_degree, n_draws, seed)
    best = max(table, key=lambda name: table[name][0])
    return tuple(int(s) for s in best.split("+")), table


@functools.lru_cache(maxsize=8)
def selection_summary(n_states: int, parents: tuple, alpha: float, window: int, max_degree: int,
                      n_draws: int) -> dict:
    """Ĩ and I_χ² per subset (mean, stderr), S*, the runner-up and the paired z-score of S*'s margin
    Ĩ(S*) − Ĩ(runner-up) (every subset is scored on the same draws of π, seed 0)."""
    args = dict(n_states=n_states, parents=list(parents), alpha=alpha, window=window, max_degree=max_degree,
                n_draws=n_draws, seed=0)
    draws = information_draws(**args)
    chi2 = information_draws(**{**args, "kind": "chi2"})
    means = {k: float(v.mean()) for k, v in draws.items()}
    best = max(means, key=means.get)
    runner = max((k for k in means if k != best), key=means.get, default=best)
    diff = draws[best] - draws[runner]
    z = float(diff.mean() / (diff.std() / math.sqrt(len(diff)))) if runner != best else math.inf
    se = lambda v: float(v.std() / math.sqrt(len(v)))  # noqa: E731
    return {"modified": {k: (float(v.mean()), se(v)) for k, v in draws.items()},
            "chi2": {k: (float(v.mean()), se(v)) for k, v in chi2.items()},
            "s_star": tuple(int(s) for s in best.split("+")), "runner_up": runner, "margin_z": z}
