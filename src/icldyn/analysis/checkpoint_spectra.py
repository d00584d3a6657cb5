"""Spectral distances computed after a run from its stored checkpoints (one per record step).

The subspace distance to the final matrix needs the final checkpoint, so it cannot be a probe
during training; it is added to metrics.parquet once training ends (`distance_rows` in
`probes/spectral.py` gives the measures).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from icldyn.probes.spectral import checkpoint_matrices, distance_rows
from icldyn.store import RunDir, load_checkpoint

DERIVED = ("probe/subspace_dist/", "probe/overlap_prev/", "probe/rowspace_dist/")


def write_checkpoint_distances(run_dir: RunDir, model: torch.nn.Module, seeds: Sequence[int],
                               names: Sequence[str] | None = None, ks: Sequence[int] = (1, 2),
                               rank_deficient: Sequence[str] = ()) -> None:
    """Add `distance_rows` of the matrices `names` (patterns; all by default) at every recorded step
    to the run's metrics. A rerun replaces these rows, never duplicates them."""
    metrics = pd.DataFrame(run_dir.read_metric_rows())
    grid = metrics[["step", "time"]].drop_duplicates("step").sort_values("step")
    mats = []
    for step, time in grid.itertuples(index=False):
        tensors, _ = load_checkpoint(run_dir.checkpoint_path(int(step)))
        params = {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}
        mats.append((int(step), float(time), checkpoint_matrices(model, params, names)))
    rows = distance_rows(mats, seeds, ks=ks, rank_deficient=rank_deficient)
    kept = metrics[~metrics["name"].str.startswith(DERIVED)]
    run_dir.write_metrics(kept.to_dict("records") + rows)
