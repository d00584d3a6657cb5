"""The one reader of stored runs: metric curves per seed, theory curves, the sub-runs of a sweep.

Everything here reads a `Run` as `store.load_run` (or `icldyn.load_run`) returns it; nothing is
recomputed. Curves come back as numpy arrays in step order, on the `time` clock (Σ lr, the
gradient-flow time shared with the theory) unless `axis="step"`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


# -- sub-runs ----------------------------------------------------------------------------------------

def views(run, single: str = "run") -> list[tuple[str, Any]]:
    """(name, run) pairs: the variants of a sweep directory, or (`single`, the run itself)."""
    return list(run.variants.items()) or [(single, run)]


def config_value(run, key: str) -> Any:
    """The value of a dotted config key (`task.K`) in a run's config."""
    node = run.config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def swept_values(run, key: str) -> list[tuple[Any, Any]]:
    """(value of `key`, sub-run) for every variant of a sweep directory, sorted by value."""
    return sorted(((config_value(sub, key), sub) for sub in run.variants.values()), key=lambda p: p[0])


def find_view(views, where: dict[str, Any]):
    """The first sub-run whose config has every dotted key of `where` at the given value, else None.

    views: a {name: run} dict or (name, run) pairs (as `views` returns)."""
    items = views.values() if isinstance(views, dict) else (r for _, r in views)
    for r in items:
        if all(config_value(r, key) == value for key, value in where.items()):
            return r
    return None


# -- metrics -----------------------------------------------------------------------------------------

def metric_curve(run, name: str, seed: int, *, axis: str = "time", positive_time: bool = False,
                 same_prompts: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(axis values (T,), metric values (T,)) of one metric and seed, in step order.

    positive_time: drop records at time 0 (the initialisation), for log-time axes.
    same_prompts: drop the last record when it was measured on the larger final held-out set
    (train.eval_prompts vs eval_prompts_during), so a curve's shape is not a change of prompts.
    """
    m = run.metric(name)
    m = m[m["seed"] == seed].sort_values("step")
    if positive_time:
        m = m[m["time"] > 0]
    tc = run.config.train
    if same_prompts and tc.eval_prompts != tc.eval_prompts_during and len(m) > 1:
        m = m[m["step"] < m["step"].max()]
    return m[axis].to_numpy(), m["value"].to_numpy()


def per_seed(run, name: str) -> dict[int, pd.DataFrame]:
    """{seed: rows (step, time, value) in step order} of one metric."""
    m = run.metric(name)
    return {int(s): g.sort_values("step")[["step", "time", "value"]].reset_index(drop=True)
            for s, g in m.groupby("seed")}


def seed_matrix(run, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A metric as (time (T,), values (S, T)), one row per seed; empty arrays when it is absent."""
    m = run.metric(name)
    if m.empty:
        return np.zeros(0), np.zeros((0, 0))
    time, seed, value = (m[c].to_numpy() for c in ("time", "seed", "value"))
    times, seeds = np.unique(time), np.unique(seed)
    if len(m) != times.size * seeds.size:  # not one row per (time, seed): let pandas average
        table = m.pivot_table(index="time", columns="seed", values="value")
        return table.index.values.astype(float), table.values.T.astype(float)
    out = np.full((seeds.size, times.size), np.nan)
    out[np.searchsorted(seeds, seed), np.searchsorted(times, time)] = value
    return times.astype(float), out


def final_values(run, name: str) -> np.ndarray:
    """The last recorded value of a metric per seed, in seed order (NaN where missing). (S,)"""
    f = run.final(name)
    return np.array([float(f.get(s, np.nan)) for s in run.seeds])


def record_at(run, seed: int, step: int | None = None) -> pd.Series:
    """Every metric of one seed at one recorded step (default: its last), as a Series by name."""
    m = run.metrics[run.metrics["seed"] == seed]
    step = m["step"].max() if step is None else step
    return m[m["step"] == step].set_index("name")["value"]


# -- theory ------------------------------------------------------------------------------------------

def theory_curve(run, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(time (T,), value (T,)) of one theory curve of theory.parquet, in time order."""
    th = run.theory
    rows = th[th["name"] == name].sort_values("time", kind="stable") if len(th) else th
    return rows["time"].to_numpy(dtype=float), rows["value"].to_numpy(dtype=float)


def theory_limit(run, name: str) -> float:
    """The value of a theory curve at the end of its clock (its limit); NaN when absent."""
    _, v = theory_curve(run, name)
    return float(v[-1]) if len(v) else float("nan")


def theory_constant(run, name: str) -> float:
    """A theory quantity without a time axis (stored as one row); NaN when absent."""
    th = run.theory
    v = th.loc[th["name"] == name, "value"] if len(th) else []
    return float(v.iloc[0]) if len(v) else float("nan")


# -- curves.parquet ----------------------------------------------------------------------------------

def curve_rows(run, *, predictor: str | None = None, x_name: str | None = None, metric: str | None = None,
               **conditions) -> pd.DataFrame:
    """Rows of curves.parquet (general schema) matching the given columns, sorted by x."""
    c = run.curves
    for col, want in (("predictor", predictor), ("x_name", x_name), ("metric", metric), *conditions.items()):
        if want is not None and len(c):
            c = c[c[col] == want]
    return c.sort_values("x", kind="stable") if len(c) else c


