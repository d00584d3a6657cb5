"""Grokking claims on constructed runs whose events are known, and their negative controls: the
no-weight-decay run fails the grokking claims, a shuffled record order fails the time ordering."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icldyn.analysis import grokking as gk
from icldyn.experiments import EXPERIMENTS
from icldyn.experiments.grokking_claims import CLAIMS
from icldyn.store import Run

STEPS = np.arange(0, 105, 5)
OV = "probe/subspace_dist/left/k2/blocks.0.attn.ov.0"


def ramp(lo, hi, start, end):
    """lo before `start`, hi from `end`, linear in between, on STEPS."""
    return lo + (hi - lo) * np.clip((STEPS - start) / max(end - start, 1e-9), 0, 1)


def curves(groks=True):
    test = ramp(0.1, 1.0, 60, 70) if groks else ramp(0.1, 0.3, 0, 100)
    return {"accuracy/train": ramp(0.0, 1.0, 0, 10), "accuracy/test": test,
            "probe/erank/embed": ramp(10, 4, 30, 60) if groks else np.full(len(STEPS), 10.0),
            f"probe/erank/{gk.MLP[0]}": ramp(20, 8, 30, 60), f"probe/erank/{gk.MLP[1]}": ramp(20, 8, 30, 60),
            OV: ramp(0.8, 0.0, 40, 65) if groks else ramp(0.8, 0.0, 90, 100),
            "probe/weight_norm": ramp(100, 50, 20, 70) if groks else ramp(100, 120, 0, 100),
            "probe/fourier_top5": ramp(0.1, 0.8, 20, 70) if groks else np.full(len(STEPS), 0.1)}


def make_run(groks=True, weight_decay=1.0, order=None):
    cfg = EXPERIMENTS["grokking"].config("quick", {"train.weight_decay": weight_decay, "control": False,
                                                   "train.steps": int(STEPS[-1])})
    rows = []
    for name, values in curves(groks).items():
        values = values if order is None else values[order]
        rows += [{"step": int(s), "time": float(s) * 0.01, "seed": 0, "name": name, "value": float(v)}
                 for s, v in zip(STEPS, values)]
    return Run(Path("/nonexistent"), cfg, pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(), [], {})


def sweep(main, control):
    run = make_run()
    run.__dict__["variants"] = {"no_wd": control, "wd": main}   # what load_run gives a sweep directory
    return run


def by_id(claims):
    return {c.id: c for c in claims}


def test_events_of_a_constructed_run():
    ev = gk.events(make_run(), 0)
    assert ev == {"memorisation": 10.0, "rank_fall": 45.0, "stabilisation": 65.0, "jump": 70.0}


def test_every_claim_passes_on_a_grokking_run_with_a_failing_control():
    claims = by_id(CLAIMS.evaluate(sweep(make_run(), make_run(groks=False, weight_decay=0.0))))
    assert set(claims) == set(CLAIMS.ids)
    failed = {k: (c.measured, c.note) for k, c in claims.items() if not c.passed}
    assert not failed
    assert claims["jump_after_memorisation"].measured == pytest.approx(7.0)
    assert claims["weight_norm_falls"].measured == pytest.approx(50 / ramp(100, 50, 20, 70)[2])


@pytest.mark.parametrize("claim", ["groks", "jump_after_memorisation", "fourier_sparse_embedding",
                                   "erank_falls_embedding", "weight_norm_falls"])
def test_the_no_weight_decay_run_fails_the_grokking_claims(claim):
    spec = next(s for s in CLAIMS.specs if s.id == claim)
    assert not spec.evaluate(make_run(groks=False, weight_decay=1.0)).passed  # failed, or unmeasured (no jump)


def test_a_grokking_control_fails_the_control_claim():
    claims = by_id(CLAIMS.evaluate(sweep(make_run(), make_run(groks=True, weight_decay=0.0))))
    assert claims["no_grokking_without_weight_decay"].passed is False


@pytest.mark.parametrize("seed", range(8))
def test_a_shuffled_record_order_fails_the_time_ordering(seed):
    order = np.random.default_rng(seed).permutation(len(STEPS))
    claims = by_id(CLAIMS.evaluate(make_run(order=order)))
    assert claims["time_ordering"].passed is False
