"""Pieces of the induction models that need no parameters: the selector's subsets and their names,
the token loss, the copier's windows, and the counts implementation's cell statistics and tables.
Shapes follow `models/induction.py` (E seeds, B sequences, L tokens, S states, M window)."""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F

from icldyn.errors import UsageError


def subsets(n_heads: int, max_degree: int) -> list[tuple[int, ...]]:
    """Non-empty subsets of heads (0-based) with at most `max_degree` members, by size then order."""
    return [s for k in range(1, max_degree + 1) for s in itertools.combinations(range(n_heads), k)]


def copier_span(config) -> int:
    """How many offsets 1..span the copier reads: M (paper), H − 1 + M (code: head h covers h+1..h+M)."""
    return config.n_heads - 1 + config.window if "window" in config.parts() else config.window


def code_subsets(n_heads: int, max_degree: int) -> list[tuple[int, ...]]:
    """fidelity code: subsets of the components (0 the own token, h+1 head h) with |S| ≤ max_degree,
    the empty one included, by size then order."""
    return [s for k in range(0, max_degree + 1) for s in itertools.combinations(range(n_heads + 1), k)]


def code_subset_name(subset) -> str:
    """Components named by offset (own token `0`, head h `h+1`): `1+2`, `0+1`; `none` for ∅."""
    return "+".join(str(c) for c in subset) if subset else "none"


def subset_name(subset) -> str:
    """`1+2` for heads {0, 1}: head h is initialised to prefer offset h + 1."""
    return "+".join(str(h + 1) for h in subset)


def token_loss(probs: torch.Tensor, target: torch.Tensor, kind: str = "paper", eps: float = 1e-8) -> torch.Tensor:
    """Per-seed loss (E,) of probability vectors probs (E, B, S) for targets (E or 1, B) long.

    paper: mean −log(ŷ_target + eps) (eps bounds the loss of a zero probability at −log eps);
    code:  mean cross-entropy of softmax(ŷ), ŷ used as logits — what the authors' code trained on.
    """
    target = target.expand(probs.shape[:-1])
    if kind == "paper":
        return -torch.log(probs.gather(-1, target[..., None])[..., 0] + eps).mean(-1)
    if kind == "code":
        return (torch.logsumexp(probs, -1) - probs.gather(-1, target[..., None])[..., 0]).mean(-1)
    raise UsageError(f"unknown loss {kind!r}; allowed: paper, code")


def windows(onehot: torch.Tensor, M: int) -> torch.Tensor:
    """onehot (..., T, S) → (..., T, M, S): entry [i, j−1] is token i−j, zero before the start."""
    padded = F.pad(onehot, (0, 0, M, 0))
    T = onehot.shape[-2]
    return torch.stack([padded[..., M - j: M - j + T, :] for j in range(1, M + 1)], dim=-2)


class _Cells:
    """Sufficient statistics of a token batch for the counts implementation.

    Window codes use symbol S for "before the start": code = Σ_j t_{i−j}·(S+1)^{j−1}; cell =
    code·S + x_i. Each sequence keeps only the cells it visits (at most L, about 14 at the
    default α), padded to the batch's largest number with count 0 (log-count −inf).
    """

    def __init__(self, x: torch.Tensor, S: int, M: int, dtype=torch.float32):
        L = x.shape[-1]
        padded = F.pad(x, (M, 0), value=S)
        code = sum(padded[..., M - j: M - j + L + 1] * (S + 1) ** (j - 1) for j in range(1, M + 1))
        cells = code[..., :L] * S + x                                   # (Ex, B, L)
        n_cells = S * (S + 1) ** M
        counts = torch.zeros(*x.shape[:-1], n_cells, dtype=dtype, device=x.device)
        counts.scatter_add_(-1, cells, torch.ones_like(cells, dtype=dtype))
        seen = counts > 0
        slot = seen.cumsum(-1) - 1                                      # rank of a visited cell
        width = int(slot[..., -1].max()) + 1
        # compact each sequence's visited cells into slots 0..; unvisited ones go to a spare slot
        slot = torch.where(seen, slot, width)
        cell_ids = torch.arange(n_cells, device=x.device).expand_as(slot)
        visited = torch.zeros(*x.shape[:-1], width + 1, dtype=torch.long, device=x.device)
        visited = visited.scatter_(-1, slot, cell_ids)[..., :width]
        padding = torch.arange(width, device=x.device) >= seen.sum(-1, keepdim=True)
        log_counts = counts.gather(-1, visited).log()
        self.log_counts = log_counts.masked_fill(padding, -torch.inf)  # (Ex, B, K)
        self.token = visited % S                                        # (Ex, B, K) the cell's own token
        self.table_index = code[..., L:] * n_cells + visited            # (Ex, B, K) into the (W·C) table


@functools.lru_cache(maxsize=16)
def cell_table(S: int, M: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every cell as (own token one-hot (C, S), window (C, M, S)) and every window (W, M, S)."""
    W = (S + 1) ** M
    codes = torch.arange(W, device=device)
    digits = torch.stack([(codes // (S + 1) ** (j - 1)) % (S + 1) for j in range(1, M + 1)], -1)  # (W, M)
    win = F.one_hot(digits, S + 1)[..., :S].to(dtype)                   # symbol S → zero vector
    own = torch.eye(S, dtype=dtype, device=device)
    cell_own = own.repeat(W, 1)                                         # cell = window·S + token
    cell_win = win.repeat_interleave(S, dim=0)
    return cell_own, cell_win, win
