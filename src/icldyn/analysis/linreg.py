"""Post-hoc analysis of the linear-regression experiments (linreg-lsa, linreg-gpt), read from the store.

linreg-lsa stores its theory in theory.parquet as constants (one row each, time 0): the LSA's
gradient-flow limit loss ½·R(B*) at the test length (`LIMIT_LOSS`) and the limit matrix
B* = (Γ + σ²/N·I)⁻¹ entry by entry (`LIMIT_MATRIX/<i>/<j>`); its theory error curve against the
number of examples is the predictor `LIMIT_CURVE` of curves.parquet.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from icldyn.analysis.runs import curve_rows, final_values, theory_constant

LIMIT_LOSS = "lsa_limit_loss"
LIMIT_MATRIX = "lsa_limit_matrix"
LIMIT_CURVE = "theory:lsa_limit"


# -- linreg-lsa ------------------------------------------------------------------------------------
def limit_loss(run) -> float:
    """½·R(B*): the held-out loss of the LSA's gradient-flow limit (theory, stored); NaN if absent."""
    return theory_constant(run, LIMIT_LOSS)


def limit_matrix(run) -> np.ndarray:
    """B* (d, d) as stored in theory.parquet (NaN entries where absent)."""
    d = run.config.task.d
    return np.array([[theory_constant(run, f"{LIMIT_MATRIX}/{i}/{j}") for j in range(d)] for i in range(d)])


def effective_matrix(run) -> np.ndarray:
    """The trained vU (d, d) at the last record, seed mean (NaN where not recorded)."""
    d = run.config.task.d
    return np.array([[np.mean(final_values(run, f"probe/effective/{i}/{j}")) for j in range(d)] for i in range(d)])


def limit_gap(run) -> np.ndarray:
    """|loss/test / (½·R(B*)) − 1| per seed (S,)."""
    return np.abs(final_values(run, "loss/test") / limit_loss(run) - 1)


def off_block_ratio(run) -> np.ndarray:
    """Norm of the parameters outside the (v, U) blocks relative to |v|, per seed (S,)."""
    return final_values(run, "probe/off_blocks") / np.maximum(np.abs(final_values(run, "probe/v")), 1e-12)


# -- error against the number of in-context examples --------------------------------------------------
def error_rows(run) -> pd.DataFrame:
    """curves.parquet rows of plain MSE against the number of in-context examples."""
    return curve_rows(run, x_name="n_examples", metric="mse")


def model_vs_estimators(run, model: str = "gpt") -> dict[str, np.ndarray]:
    """For d ≤ n ≤ N (n examples, d the dimension, N the training length), per seed (S,):
    excess_per_dim: mean over n of (MSE_model − MSE_ridge)/d; max_excess_per_dim: its worst n;
    ratio_averaging, ratio_zero: worst n of MSE_model / MSE_estimator."""
    c = run.config
    d = c.task.d
    curves = error_rows(run)
    per = curves.pivot_table(index=["x"], columns="predictor", values="value", aggfunc="mean")
    trained = curves[curves["predictor"] == model].pivot_table(index="x", columns="seed", values="value")
    ns = [n for n in per.index if d <= n <= c.task.n_points]
    values = trained.loc[ns].values  # (n, S)
    gap = (values - per.loc[ns, "ridge"].values[:, None]) / d
    return {"excess_per_dim": gap.mean(0), "max_excess_per_dim": gap.max(0),
            "ratio_averaging": (values / per.loc[ns, "averaging"].values[:, None]).max(0),
            "ratio_zero": (values / per.loc[ns, "zero"].values[:, None]).max(0)}
