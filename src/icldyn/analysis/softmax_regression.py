"""Post-hoc analysis of softmax-regression runs (a sweep over d, or one run): read from the store only."""

from __future__ import annotations

import numpy as np
import pandas as pd

from icldyn.analysis.runs import final_values, metric_curve, swept_values, theory_constant, views

ALIGN = "probe/alignment/gd_one_step"


def by_d(run) -> list[tuple[int, object]]:
    """(d, sub-run) in increasing d: the variants of a sweep, or the run itself."""
    if run.variants:
        return [(int(d), r) for d, r in swept_values(run, "task.d")]
    return [(int(run.config.task.d), run)]


def loss_ratio(run) -> np.ndarray:
    """Per seed: max(L_TF/L_GD, L_GD/L_TF) of the final held-out losses (≥ 1). (S,)"""
    tf, gd = final_values(run, "loss/test"), final_values(run, "baseline/gd_one_step")
    return np.maximum(tf / gd, gd / tf)


def alignment_ends(run) -> dict[str, np.ndarray]:
    """{metric: (S, 2)} first and last recorded value per seed of the three alignment metrics."""
    out = {}
    for key in ("preds_diff", "model_diff", "model_cos"):
        ends = []
        for s in run.seeds:
            _, v = metric_curve(run, f"{ALIGN}/{key}", s, axis="step")
            ends.append((v[0], v[-1]) if len(v) else (np.nan, np.nan))
        out[key] = np.array(ends)
    return out


def alignment_improves(run) -> np.ndarray:
    """Per seed: did cos rise and both differences fall from the first record to the last? (S,) bool"""
    e = alignment_ends(run)
    return ((e["model_cos"][:, 1] > e["model_cos"][:, 0]) & (e["preds_diff"][:, 1] < e["preds_diff"][:, 0])
            & (e["model_diff"][:, 1] < e["model_diff"][:, 0]))


def worst_over_training(run, name: str) -> np.ndarray:
    """Per seed, the largest value of a metric over every recorded step. (S,)"""
    out = []
    for s in run.seeds:
        _, v = metric_curve(run, name, s, axis="step")
        out.append(np.max(v) if len(v) else np.nan)
    return np.array(out)


def worst_check(run, name: str) -> float:
    """The worst (largest) stored theory check `name` over the views of a run (NaN if absent)."""
    vals = [theory_constant(r, name) for _, r in views(run)]
    vals = [v for v in vals if np.isfinite(v)]
    return max(vals) if vals else float("nan")


def sweep_table(run) -> pd.DataFrame:
    """One row per d: mean ± std over seeds of the final held-out loss of each model, and the ratio."""
    rows = []
    for d, r in by_d(run):
        tf, gd = final_values(r, "loss/test"), final_values(r, "baseline/gd_one_step")
        opt = final_values(r, "baseline/optimum")
        rows.append({"d": d, "self_attention": tf.mean(), "self_attention_std": tf.std(),
                     "gd_one_step": gd.mean(), "gd_one_step_std": gd.std(), "optimum": np.nanmean(opt),
                     "worst_ratio": loss_ratio(r).max(),
                     "final_cos": final_values(r, f"{ALIGN}/model_cos").mean()})
    return pd.DataFrame(rows)
