"""attention-emergence claims on constructed runs whose window and dips are known, and their negative
controls: a 1-layer run that stays on the unigram plateau fails `emergence`; a 1-layer run that does
emerge fails the control claim; a QK rank without a dip fails `qk_rank_dips`; subspaces that settle
only at the end fail `subspaces_settled`."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from icldyn.analysis import attention_emergence as ae
from icldyn.experiments import EXPERIMENTS
from icldyn.experiments.attention_emergence_claims import CLAIMS
from icldyn.store import Run

STEPS = np.concatenate([[0, 1, 2, 5, 10, 20], np.arange(50, 2001, 50)])
BASE = 1.0


def ramp(lo, hi, start, end):
    """lo before `start`, hi from `end`, linear in between, on STEPS."""
    return lo + (hi - lo) * np.clip((STEPS - start) / max(end - start, 1e-9), 0, 1)


def loss_curve(emerges=True):
    """1.6 → the plateau 0.95 by step 100, then (if it emerges) a drop to 0.6 over steps 1000–1400."""
    first = ramp(1.6, 0.95, 0, 100)
    return first + (ramp(0.0, -0.35, 1000, 1400) if emerges else 0.0)


def make_run(n_layers=2, emerges=True, dips=True, settles=True):
    cfg = EXPERIMENTS["attention-emergence"].config("quick", {"layers": [n_layers]})
    curves = {ae.LOSS: loss_curve(emerges)}
    for i in range(n_layers):
        rank = ramp(20, 12, 0, 2000) - (ramp(0, 6, 1000, 1200) - ramp(0, 6, 1200, 1400) if dips else 0)
        curves[ae.QK_RANK.format(i=i)] = rank
        for kind in ("qk", "ov"):
            curves[ae.DIST.format(i=i, kind=kind)] = ramp(0.9, 0.0, 500, 1300) if settles else ramp(0.9, 0.0, 1900, 2000)
    rows = [{"step": int(s), "time": float(s) * 3e-3, "seed": 0, "name": name, "value": float(v)}
            for name, values in curves.items() for s, v in zip(STEPS, values)]
    theory = pd.DataFrame([{"time": 0.0, "name": "baseline/unigram", "value": BASE}])
    return Run(Path("/nonexistent"), cfg, pd.DataFrame(rows), pd.DataFrame(), theory, [], {})


def sweep(*runs):
    top = make_run()
    top.__dict__["variants"] = {f"layers={r.config.model.n_layers}": r for r in runs}
    return top


def by_id(claims):
    return {c.id: c for c in claims}


def test_window_of_a_constructed_drop():
    steps, loss = STEPS, loss_curve()
    start, end = ae.window(steps, loss)
    assert start == 1050.0      # the last record within 5% of the plateau 0.95: 0.906 at 1050, 0.8625 at 1100
    assert end == 1400.0        # the first within 5% of the final 0.6: 0.644 at 1350 is 7% off
    assert ae.gain(make_run(), 0) == pytest.approx(0.4)


def test_every_claim_passes_with_emerging_deep_models_and_a_flat_one_layer_control():
    run = sweep(make_run(1, emerges=False), make_run(2), make_run(3))
    claims = by_id(CLAIMS.evaluate(run))
    assert set(claims) == {f"{c}[layers={n}]" for c in ("emergence", "qk_rank_dips", "subspaces_settled")
                           for n in (2, 3)} | {"one_layer_no_emergence"}
    assert all(c.passed for c in claims.values()), [c for c in claims.values() if not c.passed]


def test_the_one_layer_run_fails_the_emergence_claim():
    spec = next(s for s in CLAIMS.specs if s.id == "emergence")
    claim = spec.evaluate(make_run(1, emerges=False))
    assert claim.passed is False and claim.measured == pytest.approx(0.05)


def test_an_emerging_one_layer_run_fails_the_control():
    claims = by_id(CLAIMS.evaluate(sweep(make_run(1, emerges=True), make_run(2))))
    assert claims["one_layer_no_emergence"].passed is False


@pytest.mark.parametrize("kw, claim", [({"dips": False}, "qk_rank_dips"), ({"settles": False}, "subspaces_settled"),
                                       ({"emerges": False}, "qk_rank_dips")])
def test_negative_controls_fail(kw, claim):
    claims = by_id(CLAIMS.evaluate(sweep(make_run(1, emerges=False), make_run(2, **kw))))
    assert claims[f"{claim}[layers=2]"].passed is False


def test_dip_ratio_is_one_for_a_monotone_curve_and_below_for_a_dip():
    s = np.arange(10.0)
    assert ae.dip_ratio(s, 10 - s, 2, 6) >= 1.0
    m = np.array([5, 5, 5, 3, 2, 3, 5, 5, 5, 4.0])
    assert ae.dip_ratio(s, m, 2, 6) == pytest.approx(0.5)
    assert ae.dip_ratio(s, m, np.nan, np.nan) == 1.0          # no window: no dip
