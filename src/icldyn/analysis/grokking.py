"""Post-hoc analysis of grokking runs (spec `grokking-spectral.md`, Part B), from the stored metrics
only: the events and the values the claims and figures use.

Events, per seed, as the first recorded step where (spec):
    memorisation     accuracy/train ≥ 0.99
    jump             accuracy/test ≥ 0.95
    rank fall        after memorisation, erank(embedding) has fallen at least half-way from its
                     value at memorisation to its final value (NaN when it does not fall)
    stabilisation    the OV products' top-2 subspace distance to the final matrix (left singular
                     vectors, mean over heads) is below 0.1
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis.runs import metric_curve

MEMORISED, GROKKED, STABLE = 0.99, 0.95, 0.1
EMBED = "embed"
MLP = ("blocks.0.mlp.fc.weight", "blocks.0.mlp.proj.weight")
OV_DIST = "probe/subspace_dist/left/k2/"


def roles(run) -> dict[str, object]:
    """{"main": the weight-decay run, "control": the run without it} of a sweep or a single run."""
    subs = run.variants or {"run": run}
    out = {}
    for sub in subs.values():
        out.setdefault("main" if sub.config.train.weight_decay > 0 else "control", sub)
    return out


def curve(run, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric and seed, in step order."""
    return metric_curve(run, name, seed, axis="step")


def first_step(steps: np.ndarray, values: np.ndarray, threshold: float, *, below: bool = False,
               after: float = -np.inf, sustained: bool = False) -> float:
    """The first step ≥ `after` where values ≥ threshold (≤ when `below`); with `sustained`, the
    first step from which it holds at every later record. NaN if none."""
    hit = (values <= threshold) if below else (values >= threshold)
    if sustained:
        hit = np.flip(np.logical_and.accumulate(np.flip(hit)))
    hit &= steps >= after
    return float(steps[np.argmax(hit)]) if hit.any() else float("nan")


def value_at(run, name: str, seed: int, step: float) -> float:
    """The metric's value at the record `step` (NaN when the step is NaN or not recorded)."""
    s, v = curve(run, name, seed)
    if not np.isfinite(step) or step not in s:
        return float("nan")
    return float(v[np.flatnonzero(s == step)[0]])


def ov_names(run) -> list[str]:
    """The per-head OV product names recorded with a subspace distance."""
    names = run.metrics["name"].unique()
    return sorted(n[len(OV_DIST):] for n in names if n.startswith(OV_DIST) and ".ov." in n)


def ov_distance(run, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean over heads of the OV top-2 subspace distance to the final matrix)."""
    heads = [curve(run, OV_DIST + n, seed) for n in ov_names(run)]
    if not heads:
        return np.zeros(0), np.zeros(0)
    return heads[0][0], np.mean([v for _, v in heads], axis=0)


def events(run, seed: int, sustained: bool = False) -> dict[str, float]:
    """The events of the module doc for one seed (steps; NaN when an event does not happen); with
    `sustained`, each is the first step from which its condition holds to the end of training."""
    mem = first_step(*curve(run, "accuracy/train", seed), MEMORISED, sustained=sustained)
    jump = first_step(*curve(run, "accuracy/test", seed), GROKKED, sustained=sustained)
    s, r = curve(run, f"probe/erank/{EMBED}", seed)
    rank_fall = float("nan")
    if np.isfinite(mem) and len(r):
        r_mem, r_end = value_at(run, f"probe/erank/{EMBED}", seed, mem), r[-1]
        if r_end < r_mem:
            rank_fall = first_step(s, r, r_mem - 0.5 * (r_mem - r_end), below=True, after=mem,
                                   sustained=sustained)
    s, d = ov_distance(run, seed)
    stab = first_step(s, d, STABLE, below=True, sustained=sustained) if len(s) else float("nan")
    return {"memorisation": mem, "rank_fall": rank_fall, "stabilisation": stab, "jump": jump}


HOLD = 0.1  # an event counts for the ordering when its condition holds over at least the last 10% of training


def ordering_holds(ev: dict[str, float], total_steps: int) -> bool:
    """The ordering the spec reports: memorisation first, then the rank fall, the subspace
    stabilisation and the test jump (each strictly after memorisation; all must happen). The
    claim applies it to the sustained events (`events(..., sustained=True)`): on a monotone curve
    they are the spec's first steps, and a record order with no trend cannot satisfy them. Each
    must come by (1 − HOLD)·total_steps: a condition met only over the last records is an end
    effect (the distance to the final matrix is 0 at the end by definition)."""
    if not all(np.isfinite(v) and v <= (1 - HOLD) * total_steps for v in ev.values()):
        return False
    return all(ev[k] > ev["memorisation"] for k in ("rank_fall", "stabilisation", "jump"))


def ratio_at_events(run, name: str, seed: int, start: str, end: str) -> float:
    """metric(at event `end`) / metric(at event `start`), NaN when either event is missing."""
    ev = events(run, seed)
    if end == "final":
        s, v = curve(run, name, seed)
        top = float(v[-1]) if len(v) else float("nan")
    else:
        top = value_at(run, name, seed, ev[end])
    return top / value_at(run, name, seed, ev[start])
