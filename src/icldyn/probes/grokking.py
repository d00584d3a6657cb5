"""Grokking probes of a token model on modular arithmetic (Nanda et al. 2023): accuracies on the
task's fixed train and test splits, the total squared weight norm, and the Fourier spectrum of
the number tokens' embedding.

Fourier: for the embedding rows of the numbers 0..p−1, W_E (E, p, w), the DFT along the number
axis F_k = Σ_a W_E[a] e^{−2πi k a/p}; frequency j ∈ {0, …, ⌊p/2⌋} gathers the power of k = j and
k = p − j (equal for a real table): P_j = Σ_w |F_j|² (+ |F_{p−j}|² for 0 < j < p/2). By Parseval
Σ_j P_j = p ‖W_E‖_F². The top-5 share is (the five largest P_j) / Σ_j P_j: 5/(⌊p/2⌋+1) for a
table spread evenly over frequencies, 1 for one built from five frequencies.

Metric names:
    accuracy/train, accuracy/test     argmax accuracy on the training and test splits
    probe/weight_norm                 Σ over every parameter of its squared entries
    probe/fourier_top5                the top-5 share above
    probe/fourier/<j>                 P_j / Σ P, j = 0..⌊p/2⌋ (final record only)
"""

from __future__ import annotations

import torch

EMBED = "embed"  # the token GPT's embedding table (E, V, w)


def frequency_power(table: torch.Tensor, p: int) -> torch.Tensor:
    """(E, V ≥ p, w) → (E, ⌊p/2⌋ + 1): the Fourier power per frequency of rows 0..p−1 (module doc)."""
    F = torch.fft.fft(table[:, :p].double(), dim=1)                           # (E, p, w)
    power = F.abs().pow(2).sum(-1)                                            # (E, p)
    half = p // 2
    out = power[:, : half + 1].clone()
    mirror = torch.arange(1, (p + 1) // 2)                                    # 0 < j < p/2
    out[:, mirror] += power[:, p - mirror]
    return out


def top_share(power: torch.Tensor, k: int = 5) -> torch.Tensor:
    """(E, J) → (E,): the share of the k largest entries in the total."""
    return power.topk(min(k, power.shape[-1]), dim=-1).values.sum(-1) / power.sum(-1).clamp_min(1e-300)


@torch.no_grad()
def accuracy(model, batch) -> torch.Tensor:
    """(E,) argmax accuracy of the model's logits (E, B, V) against batch.y (E', B)."""
    pred = model(batch).argmax(-1)
    return (pred == batch.y).double().mean(-1)


def grokking_probe(config, task):
    """Registered as `grokking`: the metrics of the module doc."""
    p = config.task.p

    @torch.no_grad()
    def probe(ctx) -> dict[str, torch.Tensor]:
        model = ctx.model
        train = ctx.cache.get("train_split")
        if train is None:
            train = ctx.cache["train_split"] = task.train_batch(device=next(model.parameters()).device)
        out = {"accuracy/train": accuracy(model, train), "accuracy/test": accuracy(model, ctx.eval_batch)}
        out["probe/weight_norm"] = sum(q.detach().double().pow(2).flatten(1).sum(1) for q in model.parameters())
        power = frequency_power(getattr(model, EMBED).detach(), p)
        out["probe/fourier_top5"] = top_share(power, 5)
        if ctx.final:
            share = power / power.sum(-1, keepdim=True)
            out.update({f"probe/fourier/{j}": share[:, j] for j in range(share.shape[-1])})
        return out

    return probe
