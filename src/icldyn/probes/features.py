"""Probes of a softmax attention head on structured features, by query feature k.

- `probe/feature_error/<k>`: ℓ_k = ½E(ŷ − y)² over the held-out prompts whose query has feature k
  (plain sampled error, not conditioned on the prompt containing feature k: the experiment picks
  N so that the floor ½(1 − p_k)^N is far below its thresholds);
- `probe/same_feature_attention/<k>`: a_k, the attention mass on the context tokens of the
  query's own feature (mean over the same prompts);
- `probe/attention_mass/<k>/<n>`: the mass on the tokens of feature n (so a_k = mass k/k; for
  large K only n ∈ {0, k}, the dominant feature and the own one);
- `probe/score/<k>/<n>`: s_{k,n} = v_nᵀ Q v_k, read off the parameters (A_k = s_{k,k},
  B_{k,n} = s_{k,n} in Huang, Cheng & Liang's notation);
- `probe/value_scale` (model.train = "full" only): W^{PV}'s label-to-label entry, which the
  Q-only model keeps at 1.
Held-out prompts are processed in chunks, so the large final evaluation batch fits in memory.
"""

from __future__ import annotations

import torch

CHUNK = 8192


@torch.no_grad()
def per_feature_statistics(model, batch, K: int, chunk: int = CHUNK) -> dict[str, torch.Tensor]:
    """Means over the prompts of each query feature: error (E, K) ℓ_k, mass (E, K, K) [k, n] the
    attention on feature-n tokens, count (K,) prompts per query feature. batch: (E'=1, B, N+1, d)."""
    sums_err = sums_mass = None
    counts = None
    for start in range(0, batch.x.shape[1], chunk):
        part = batch.select(slice(start, start + chunk))
        query = part.extras["feature"][..., -1]                                  # (1, b)
        pred, cache = model.run_with_cache(part, "blocks.0.attn.hook_pattern")   # one forward pass
        err = 0.5 * (pred[..., 0] - part.y[..., -1]).pow(2).double()             # (E, b)
        attn = cache["blocks.0.attn.hook_pattern"].double()                      # (E, b, N)
        E = err.shape[0]
        token = part.extras["feature"][..., :-1].expand(E, -1, -1)               # (E, b, N)
        mass = torch.zeros(*attn.shape[:2], K, dtype=attn.dtype, device=attn.device)
        mass.scatter_add_(-1, token, attn)                                       # (E, b, K)
        onehot = torch.nn.functional.one_hot(query.expand(E, -1), K).double()   # (E, b, K)
        e = torch.einsum("eb,ebk->ek", err, onehot)
        m = torch.einsum("ebn,ebk->ekn", mass, onehot)
        c = onehot[0].sum(0)
        sums_err = e if sums_err is None else sums_err + e
        sums_mass = m if sums_mass is None else sums_mass + m
        counts = c if counts is None else counts + c
    # 0/0 = NaN marks a feature no held-out query has (cf. `mean_by_query_feature`)
    return {"error": sums_err / counts, "mass": sums_mass / counts[:, None], "count": counts}


def feature_probe(config, task, all_masses: bool | None = None):
    """The probes of the module doc, at every record step, on the trainer's held-out prompts.
    all_masses=False keeps K² metrics per record down to the masses on features k and 0 (default:
    all masses while K ≤ 8)."""
    K = task.config.K
    all_masses = K <= 8 if all_masses is None else all_masses
    V = task.features

    def probe(ctx) -> dict[str, torch.Tensor]:
        model = ctx.model
        stats = per_feature_statistics(model, ctx.eval_batch, K)
        scores = model.scores(V.to(ctx.eval_batch.x.device)).detach().double()   # (E, K, K)
        out = {}
        for k in range(K):
            out[f"probe/feature_error/{k}"] = stats["error"][:, k]
            out[f"probe/same_feature_attention/{k}"] = stats["mass"][:, k, k]
            for n in range(K):
                if all_masses or n in (0, k):
                    out[f"probe/attention_mass/{k}/{n}"] = stats["mass"][:, k, n]
                out[f"probe/score/{k}/{n}"] = scores[:, k, n]
        if getattr(model.config, "train", "q") == "full":
            out["probe/value_scale"] = model.w_pv[:, model.d, model.d].detach().double()
        return out

    return probe
