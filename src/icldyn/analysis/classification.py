"""classification-icl: post-hoc evaluations of the trained classifier and the readers its claims use.

Evaluations (written to curves.parquet by the experiment, general schema plus the condition
columns `alpha_test`, `split`, `order`):
  S₁ sweep          predictor model, x_name S1, split ood, at the training α and l
  context length    predictors model and the five per-prompt learners, x_name n_examples, split
                    unseen (in-domain tasks never trained on), one block per α′
  pruning           the stored final checkpoint with a fraction R of W_O's rows zeroed, x_name
                    prune_rate, order smallest | random | largest (by row norm), split unseen | ood
Every value is a 0–1 error (metric `error`) with its binomial stderr over the held-out prompts;
pruning adds metric `margin`, the mean margin z·F of the pruned model over the unpruned one's (per
seed, stderr over prompts). sign(F) is blind to a common rescaling of the large rows' sum, which is
what magnitude pruning of near-copy rows does; the margin shows the theory's Ω(R) loss of F itself.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from icldyn.estimators import make_estimator
from icldyn.models import build_model
from icldyn.store import RunDir, load_checkpoint

COLUMNS = ["predictor", "x_name", "x", "metric", "value", "stderr", "seed", "alpha_test", "split", "order"]
LEARNERS = ("logistic", "linear_svm", "rbf_svm", "nn_1", "nn_3")
ORDERS = ("smallest", "random", "largest")
RANDOM_DRAWS = 4


def _rows(predictor, x_name, x, wrong: torch.Tensor, seeds, alpha_test=float("nan"), split="", order=""):
    """One row per seed from a (E, B) wrong-answer indicator (E = 1: seed −1, a seed-free learner)."""
    out = []
    for e in range(wrong.shape[0]):
        p = float(wrong[e].double().mean())
        se = math.sqrt(max(p * (1 - p), 1e-12) / wrong.shape[1])
        seed = seeds[e] if wrong.shape[0] == len(seeds) and predictor != "learner" else -1
        out.append((predictor, x_name, float(x), "error", p, se, seed, alpha_test, split, order))
    return out


@torch.no_grad()
def model_wrong(model, batch) -> torch.Tensor:
    """(E, B): sign(F) differs from the query's label."""
    return torch.sign(model(batch)[..., -1]) != batch.y[..., -1]


def evaluation_curves(config, task, model, device, learners=LEARNERS) -> pd.DataFrame:
    """The S₁ sweep and the error-vs-context-length curves (module doc)."""
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    n, seed0, alpha = config.curve_prompts, config.eval_seed + 2, float(config.task.alpha)
    rows = []
    for s1 in config.s1_values:
        b = task.eval_batch(n, seed0, split="ood", s1=s1, device=device)
        rows += _rows("model", "S1", s1, model_wrong(model, b), seeds, alpha, "ood")
    for split in ("train", "unseen"):
        if task.pairs[split]:
            b = task.eval_batch(n, seed0 + 1, split=split, device=device)
            rows += _rows("model", "n_examples", config.task.context_length, model_wrong(model, b), seeds, alpha,
                          f"{split}_at_alpha")
    if not task.pairs["unseen"]:
        return pd.DataFrame(rows, columns=COLUMNS)
    for alpha_test in config.alpha_tests:
        for k in config.n_examples:
            b = task.eval_batch(n, seed0 + 2, n_points=k + 1, split="unseen", alpha=alpha_test, device=device)
            rows += _rows("model", "n_examples", k, model_wrong(model, b), seeds, alpha_test, "unseen")
            truth = b.y[..., -1]
            for name in learners:
                wrong = torch.sign(make_estimator(name, task)(b)) != truth
                rows += [(name, *r[1:]) for r in _rows("learner", "n_examples", k, wrong, seeds, alpha_test,
                                                       "unseen")]
    return pd.DataFrame(rows, columns=COLUMNS)


# -- pruning ------------------------------------------------------------------------------------------
def load_final_model(run_dir: RunDir, config, task, device):
    """The model of the run's last checkpoint (parameters by module name, leading seed axis)."""
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    model = build_model(config.model, task, seeds).to(device)
    tensors, _ = load_checkpoint(run_dir.checkpoint_path(run_dir.checkpoint_steps()[-1]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors[f"param/{name}"].to(p))
    return model


def prune_mask(norms: torch.Tensor, rate: float, order: str, generator=None) -> torch.Tensor:
    """(E, m) keep-mask removing round(rate·m) rows per seed: the smallest or largest norms, or random."""
    E, m = norms.shape
    k = int(round(rate * m))
    if order == "random":
        rank = torch.stack([torch.randperm(m, generator=generator) for _ in range(E)]).to(norms.device)
    else:
        rank = norms.argsort(-1, descending=order == "largest").argsort(-1)
    return (rank >= k).to(norms.dtype)


@torch.no_grad()
def pruning_curves(run_dir: RunDir, config, task, device) -> pd.DataFrame:
    """Error vs pruning rate for the three orders, on unseen in-domain tasks and on OOD tasks."""
    model = load_final_model(run_dir, config, task, device)
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    w_o = model.w_o.detach().clone()
    norms = w_o.norm(dim=-1)
    g = torch.Generator().manual_seed(config.seed)
    rows = []
    splits = [s for s in ("unseen", "ood") if task.pairs[s]]
    for split in splits:
        b = task.eval_batch(config.curve_prompts, config.eval_seed + 5, split=split, device=device)
        model.w_o.copy_(w_o)                              # the unpruned model's margin is the reference
        base = query_margin(model, b).double().mean(1)
        for order in ORDERS:
            for rate in config.prune_rates:
                draws = RANDOM_DRAWS if order == "random" else 1
                margins = []
                for _ in range(draws):
                    model.w_o.copy_(w_o * prune_mask(norms, rate, order, g)[..., None])
                    margins.append(query_margin(model, b))
                margins = torch.cat(margins, 1)
                rows += _rows("model", "prune_rate", rate, margins <= 0, seeds, float(config.task.alpha), split, order)
                rows += _margin_rows(rate, margins, base, seeds, float(config.task.alpha), split, order)
    model.w_o.copy_(w_o)
    return pd.DataFrame(rows, columns=COLUMNS)


@torch.no_grad()
def query_margin(model, batch) -> torch.Tensor:
    """(E, B): z·F, the query label times the model's output (wrong ⇔ ≤ 0, as sign(F) ≠ z)."""
    return batch.y[..., -1] * model(batch)[..., -1]


def _margin_rows(rate, margins: torch.Tensor, base: torch.Tensor, seeds, alpha_test, split, order) -> list[tuple]:
    """One `margin` row per seed: mean z·F over the prompts relative to the unpruned model's mean
    `base` (E,), with the stderr of that ratio over prompts."""
    mean, se = margins.double().mean(1), margins.double().std(1) / math.sqrt(margins.shape[1])
    return [("model", "prune_rate", float(rate), "margin", float(mean[e] / base[e]), float(se[e] / abs(base[e])),
             seeds[e], alpha_test, split, order) for e in range(margins.shape[0])]


# -- readers ------------------------------------------------------------------------------------------
def curve(run, predictor: str, x_name: str, metric: str = "error", **conditions) -> pd.DataFrame:
    """Rows of one curve (x, value, stderr, seed), sorted by x; conditions pick alpha_test/split/order."""
    c = run.curves
    if c.empty or "predictor" not in c.columns:
        return pd.DataFrame(columns=["x", "value", "stderr", "seed"])
    sel = (c["predictor"] == predictor) & (c["x_name"] == x_name) & (c["metric"] == metric)
    for key, value in conditions.items():
        sel &= np.isclose(c[key], value) if isinstance(value, float) else c[key] == value
    return c[sel].sort_values(["x", "seed"])[["x", "value", "stderr", "seed"]].reset_index(drop=True)


def seed_mean(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean value and root-mean-square stderr over seeds, by x."""
    g = rows.groupby("x")
    return pd.DataFrame({"value": g["value"].mean(), "stderr": np.sqrt(g["stderr"].apply(lambda s: (s ** 2).mean()))})


def per_seed_at(rows: pd.DataFrame, x: float) -> np.ndarray:
    """The per-seed values at x (S,)."""
    return rows[np.isclose(rows["x"], x)].sort_values("seed")["value"].to_numpy()


def steps_to_error(steps: np.ndarray, errors: np.ndarray, threshold: float) -> float:
    """The first step at which the error is ≤ threshold (linear interpolation between records);
    NaN when it never is."""
    hit = np.nonzero(errors <= threshold)[0]
    if hit.size == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(steps[0])
    s0, s1, e0, e1 = steps[i - 1], steps[i], errors[i - 1], errors[i]
    return float(s0 + (e0 - threshold) / max(e0 - e1, 1e-12) * (s1 - s0))


def wo_groups(norms: np.ndarray, init_norms: np.ndarray) -> dict:
    """Split W_O rows (m,) at the largest ratio between consecutive sorted norms: the small group's
    share, the gap ratio, and the small rows' largest relative change from initialisation."""
    order = np.argsort(norms)
    s = norms[order]
    ratios = s[1:] / np.maximum(s[:-1], 1e-30)
    cut = int(np.argmax(ratios)) + 1
    small = order[:cut]
    change = np.abs(norms[small] - init_norms[small]) / np.maximum(init_norms[small], 1e-30)
    return {"small_share": cut / len(norms), "gap_ratio": float(ratios[cut - 1]), "small": small.tolist(),
            "small_change": float(change.max()) if len(small) else float("nan")}
