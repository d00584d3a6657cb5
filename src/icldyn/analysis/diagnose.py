"""Reading what `icldyn diagnose` wrote (RUN_DIR/diagnose/), and the run's phases to mark on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from icldyn.analysis.phases import Drop, detect_drops
from icldyn.analysis.runs import seed_matrix
from icldyn.store import read_json

DIR = "diagnose"


def diagnose_dir(path) -> Path:
    return Path(path) / DIR


def read_frame(path, name: str) -> pd.DataFrame | None:
    """diagnose/<name>.parquet of the run at `path`, or None when it was not computed."""
    f = diagnose_dir(path) / f"{name}.parquet"
    return pd.read_parquet(f) if f.exists() else None


def summary(path) -> dict:
    f = diagnose_dir(path) / "summary.json"
    return read_json(f) if f.exists() else {}


def final_llc(path) -> float | None:
    """Mean over seeds of the LLC at the last diagnosed checkpoint (None when not computed)."""
    llc = summary(path).get("llc_final")
    return float(np.mean(list(llc.values()))) if llc else None


def loss_name(run) -> str:
    names = set(run.metrics["name"].unique()) if len(run.metrics) else set()
    return "loss/test" if "loss/test" in names else "loss/train"


def run_phases(run) -> list[Drop]:
    """The sharp drops of the run's loss (mean over seeds), by `analysis.phases.detect_drops`: in
    ln(loss) first; a loss with a large irreducible part (cross-entropy above the task's entropy)
    hardly moves in ln(loss), so when that finds none, the loss is read on its own range
    ((y − min y)/(max y − min y), linear)."""
    t, values = seed_matrix(run, loss_name(run))
    if t.size < 8:
        return []
    y = np.nanmean(values, axis=0)
    try:
        return detect_drops(t, y) or detect_drops(t, y, log_y=False, floor=float(np.nanmin(y)))
    except ValueError:  # too few usable records
        return []


def recorded_outputs(run, prefix: str = "probe/essential_dynamics/") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The outputs the essential-dynamics probe recorded during training: (steps (T,), times (T,),
    outputs (S, T, F)), seeds in run.seeds order; empty arrays when the probe was not recorded."""
    m = run.metrics
    m = m[m["name"].str.startswith(prefix)] if len(m) else m
    if not len(m):
        return np.zeros(0), np.zeros(0), np.zeros((0, 0, 0))
    m = m.assign(j=m["name"].str[len(prefix):].astype(int))
    table = m.pivot_table(index=["seed", "step", "time"], columns="j", values="value").sort_index()
    seeds = sorted(table.index.get_level_values("seed").unique())
    first = table.loc[seeds[0]]
    outputs = np.stack([table.loc[s].to_numpy() for s in seeds])
    return (first.index.get_level_values("step").to_numpy(), first.index.get_level_values("time").to_numpy(),
            outputs)
