"""The local learning coefficient (LLC, singular learning theory) of a trained model, by SGLD.

λ̂(w*) = nβ · (E_w[L_n(w)] − L_n(w*)), the expectation over the tempered posterior localised at
w*: p(w) ∝ exp(−nβ L_n(w) − γ/2 ‖w − w*‖²) (Lau et al. 2023), sampled by SGLD with the optimizer
of the reference library (`devinterp.optim.SGMCMC.sgld`, imported only when an LLC is asked for;
the extra `icldyn[diagnose]`). devinterp 2's own driver (`devinterp.slt.llc`) is built for
language models (token ids, a HuggingFace dataset, a zarr store per call); our prompts are float
tensors of many shapes, so we drive its optimizer ourselves and reduce the draws as its
`compute_llc` does, except that burn-in steps are left out of the mean (Lau et al.).

L_n is the model's own training loss (`model.loss`: ½·MSE for regression, cross-entropy for
tokens) on a fixed set of n prompts. Chains and seeds run at once: an ensemble model of S·C
members, member s·C + c a copy of seed s's parameters for chain c. The per-member losses are
summed before the backward pass, so each member gets exactly its own gradient and SGLD (elementwise)
moves each chain independently — C chains for S seeds in one forward pass per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from icldyn.errors import UsageError

EXTRA_HINT = "the LLC needs devinterp: pip install 'icldyn[diagnose]'"


class LLCSettings(BaseModel):
    """SGLD settings of an LLC estimate (written to diagnose/diagnose.yaml beside the results)."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(default=3e-4, gt=0, description="SGLD step size ε")
    n_beta: float | None = Field(default=None, gt=0, description="inverse temperature nβ; default b/ln b "
                                 "(b = batch size, devinterp's default_nbeta)")
    localization: float = Field(default=100.0, ge=0, description="γ, the pull towards w*")
    chains: int = Field(default=4, gt=0)
    draws: int = Field(default=200, gt=0, description="SGLD steps whose loss enters the mean")
    burnin: int = Field(default=100, ge=0, description="SGLD steps before the draws (not in the mean)")
    n_prompts: int = Field(default=1024, gt=1, description="n, the fixed prompts of L_n")
    batch_size: int | None = Field(default=None, gt=1, description="prompts per SGLD gradient; "
                                   "default n (full-batch gradients)")
    prompt_seed: int = Field(default=20_201, description="eval-stream seed of the fixed prompts")
    seed: int = Field(default=0, description="seed of the SGLD noise and minibatches")

    def batch(self) -> int:
        return min(self.batch_size or self.n_prompts, self.n_prompts)

    def nbeta(self) -> float:
        b = self.batch()
        return float(self.n_beta) if self.n_beta is not None else b / float(np.log(b))


@dataclass
class LLCResult:
    """llc (M,), its chains (M, C), the loss at w* (M,) and the chains' loss traces
    (M, C, burnin + draws), for M models (seeds)."""

    llc: np.ndarray
    llc_chains: np.ndarray
    init_loss: np.ndarray
    traces: np.ndarray

    @property
    def llc_std(self) -> np.ndarray:
        """Spread of the estimate over chains (std over chains, ddof 0 as devinterp's)."""
        return self.llc_chains.std(axis=1)


def sgld_factory():
    """devinterp's SGLD optimizer factory; UsageError naming the extra when it is missing."""
    try:
        from devinterp.optim import SGMCMC
    except ImportError as err:  # optional extra
        raise UsageError(EXTRA_HINT) from err
    return SGMCMC.sgld


def sample_llc(model: torch.nn.Module, loss: Callable[[torch.Tensor | None], torch.Tensor], n_models: int,
               settings: LLCSettings) -> LLCResult:
    """SGLD chains around the current parameters of `model`, an ensemble of n_models · C members
    (member m·C + c: model m, chain c; every parameter has that leading axis).

    `loss(index)` is the per-member loss (n_models · C,) on the prompts `index` (a LongTensor of
    prompt indices, or None for all n). The model's parameters are restored afterwards."""
    sgld = sgld_factory()
    C, nb = settings.chains, settings.nbeta()
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    gen = torch.Generator(device=params[0].device).manual_seed(settings.seed)
    cpu_gen = torch.Generator().manual_seed(settings.seed + 1)
    with torch.no_grad():
        init = loss(None).detach()  # (M·C,) L_n(w*) on all n prompts
    opt = sgld(params, lr=settings.lr, nbeta=nb, localization=settings.localization)
    steps, b = settings.burnin + settings.draws, settings.batch()
    trace = torch.empty(steps, init.shape[0], dtype=torch.float64)
    try:
        for i in range(steps):
            index = None if b == settings.n_prompts else torch.randperm(settings.n_prompts, generator=cpu_gen)[:b]
            opt.zero_grad(set_to_none=True)
            value = loss(index)
            if not torch.isfinite(value).all():
                # a diverged chain (step too large for this point) is kept as NaN, never as a number:
                # its trace stops here and the estimate of that checkpoint is NaN
                trace[i:] = float("nan")
                break
            value.sum().backward()
            opt.step(noise_generator=gen)
            trace[i] = value.detach().to(torch.float64).cpu()
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    traces = trace.T.reshape(n_models, C, steps).numpy()
    init_m = init.to(torch.float64).cpu().reshape(n_models, C).numpy()
    chains = nb * (traces[:, :, settings.burnin:].mean(axis=2) - init_m)
    return LLCResult(chains.mean(axis=1), chains, init_m[:, 0], traces)


def replicate(params: dict[str, torch.Tensor], chains: int) -> dict[str, torch.Tensor]:
    """Each member's parameters repeated `chains` times along the leading axis: (S, ...) → (S·C, ...)."""
    return {k: v.repeat_interleave(chains, dim=0) for k, v in params.items()}


def model_llc(build: Callable[[int], torch.nn.Module], params: dict[str, torch.Tensor], batch,
              settings: LLCSettings) -> LLCResult:
    """LLC of every seed of an ensemble at `params` ({name: (S, ...)}), on the fixed prompts `batch`
    (E = 1, n prompts). `build(members)` builds an untrained model with that many members."""
    S = next(iter(params.values())).shape[0]
    model = build(S * settings.chains)
    rep = replicate(params, settings.chains)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(rep[name].to(p.dtype))
    model.train()

    def loss(index):
        b = batch if index is None else batch.select(index)
        return model.loss(model(b), b)

    return sample_llc(model, loss, S, settings)


def llc_probe(config, task, *, every: int = 1, **settings):
    """Records `probe/llc` and `probe/llc_std` (E,) at every `every`-th record step (and the last),
    with LLCSettings(**settings) (defaults smaller than `icldyn diagnose`'s: 100 draws, 50 burn-in).
    The prompts are the task's, from the eval stream of `prompt_seed`, drawn once."""
    from icldyn.models import build_model

    s = LLCSettings(**{"draws": 100, "burnin": 50, **settings})
    sgld_factory()  # the optional extra, before training starts

    def probe(ctx) -> dict[str, torch.Tensor]:
        count = ctx.cache["llc_records"] = ctx.cache.get("llc_records", -1) + 1
        if count % every and not ctx.final:
            return {}
        params = dict(ctx.model.named_parameters())
        p0 = next(iter(params.values()))
        if "llc_prompts" not in ctx.cache:
            ctx.cache["llc_prompts"] = task.eval_batch(s.n_prompts, s.prompt_seed, device=p0.device)
        build = lambda m: build_model(config.model, task, list(range(m)), p0.dtype).to(p0.device)  # noqa: E731
        with torch.enable_grad():
            res = model_llc(build, {k: v.detach() for k, v in params.items()}, ctx.cache["llc_prompts"], s)
        return {"probe/llc": torch.as_tensor(res.llc), "probe/llc_std": torch.as_tensor(res.llc_std)}

    return probe
