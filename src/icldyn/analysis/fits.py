"""Fits with confidence intervals: a straight line and a power law (a line in log-log).

DESIGN.md: a fitted slope or exponent uses ≥ 4 points over ≥ 1 decade (or the widest range the
parameter allows, stated) and reports a confidence interval; the interval here is the two-sided
Student-t interval of the least-squares slope (infinite with fewer than three points).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def fit_line(x, y, confidence: float = 0.95) -> dict:
    """Least squares y = slope·x + intercept: {slope, intercept, stderr, ci: [lo, hi]}."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fit = stats.linregress(x, y)
    dof = len(x) - 2
    half = stats.t.ppf(0.5 + confidence / 2, dof) * fit.stderr if dof > 0 else np.inf
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "stderr": float(fit.stderr),
            "ci": [float(fit.slope - half), float(fit.slope + half)]}


def fit_power_law(x, y, confidence: float = 0.95) -> dict:
    """Least squares ln y = exponent·ln x + ln prefactor: {exponent, prefactor, stderr, ci: [lo, hi]}."""
    line = fit_line(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), confidence)
    return {"exponent": line["slope"], "ci": line["ci"], "prefactor": float(np.exp(line["intercept"])),
            "stderr": line["stderr"]}
