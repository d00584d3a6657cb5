"""Claims of linreg-gpt, from the error curves stored in curves.parquet (d ≤ n ≤ N examples)."""

from __future__ import annotations

from icldyn.analysis.linreg import model_vs_estimators
from icldyn.claims import Below, ClaimList, Measurement

SOURCE = "Garg et al. 2022, Fig. 2 (error vs in-context examples)"

EXCESS_PER_DIM_MAX = 0.1  # mean excess MSE/d over ridge: within 10% of the signal variance per dimension
AVERAGING_RATIO_MAX = 0.25
ZERO_RATIO_MAX = 0.2      # at least 5× below the zero predictor

CLAIMS = ClaimList("linreg-gpt")


@CLAIMS.claim("tracks_least_squares",
              "For n ≥ d = {d} the trained model's error tracks OLS/ridge: mean excess MSE/d over ridge "
              "(close = within 10% of the signal variance per dimension)",
              SOURCE, Below(EXCESS_PER_DIM_MAX), tolerance="0.1 per dimension")
def _(run):
    m = model_vs_estimators(run)
    return Measurement(m["excess_per_dim"], details={"max_excess_per_dim": m["max_excess_per_dim"].tolist()},
                       fmt={"d": run.config.task.d})


@CLAIMS.claim("far_below_averaging",
              "For n ≥ d the model's error is far below averaging's: worst ratio MSE_model / MSE_averaging",
              SOURCE, Below(AVERAGING_RATIO_MAX))
def _(run):
    return Measurement(model_vs_estimators(run)["ratio_averaging"])


@CLAIMS.claim("far_below_zero",
              "For n ≥ d the model's error is far below the zero predictor's: worst ratio MSE_model / MSE_zero",
              SOURCE, Below(ZERO_RATIO_MAX), tolerance="at least 5× below")
def _(run):
    return Measurement(model_vs_estimators(run)["ratio_zero"])
