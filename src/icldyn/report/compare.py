"""Several stored runs side by side: their named metrics on one figure, their claims, the config
keys in which they differ. Read from the run directories only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icldyn.report.interactive import seed_table


def flat_config(run) -> dict:
    """A run's config as {dotted key: value}."""
    cfg = run.config
    data = cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json")
    out: dict = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node
    walk(data, "")
    return out


def config_differences(runs: list) -> dict[str, list]:
    """{dotted key: [value in each run]} for the keys whose values are not all equal."""
    flats = [flat_config(r) for r in runs]
    keys = sorted(set().union(*flats))
    missing = object()
    diff = {}
    for k in keys:
        values = [f.get(k, missing) for f in flats]
        if any(repr(v) != repr(values[0]) for v in values[1:]):
            diff[k] = [None if v is missing else v for v in values]
    return diff


def claims_side_by_side(runs: list) -> tuple[list[str], dict[str, list]]:
    """(claim ids in first-seen order, {id: [claim dict or None per run]})."""
    order: list[str] = []
    table: dict[str, list] = {}
    for i, r in enumerate(runs):
        for c in r.claims:
            if c["id"] not in table:
                order.append(c["id"])
                table[c["id"]] = [None] * len(runs)
            table[c["id"]][i] = c
    return order, table


def compare_figure(runs: list, labels: list[str], metrics: list[str], target: Path, *, axis: str = "step") -> Path:
    """One panel per metric, each run's seed mean (± std band) overlaid; saved as a PNG."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, name in zip(axes[0], metrics):
        for i, (run, label) in enumerate(zip(runs, labels)):
            steps, times, values = seed_table(run, name)
            if not values.size:
                continue
            x = steps if axis == "step" else times
            mean, std = np.nanmean(values, 0), np.nanstd(values, 0)
            line, = ax.plot(x, mean, label=label, lw=1.8)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(name)
        ax.set_xlabel("step" if axis == "step" else "time = Σ lr")
        ax.set_xscale("symlog" if axis == "step" else "log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    fig.tight_layout()
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
