"""Claims of attention-emergence, from the stored run or sweep directory only
(analysis/attention_emergence.py). Bounds are the spec's (grokking-spectral.md, Part B, "Sudden
ICL emergence"), fixed before the run.

Views: one per number of layers (`[layers=n]`). The ≥ 2-layer models carry the emergence, dip and
subspace claims; the 1-layer model carries the control (it must stay within 20% of the context-free
predictor). Negative controls (tests): the 1-layer run fails `emergence`; a curve without a drop
fails it too; a rank curve without a dip fails `qk_rank_dips`.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import attention_emergence as ae
from icldyn.claims import Below, Above, ClaimList, Measurement

EXPERIMENT = "attention-emergence"
SEED004 = "Mainali & Teixeira 2025 (seed 004): sudden ICL emergence in attention-only transformers"


def multi_layer_views(run) -> list:
    return [(f"[layers={n}]", r) for n, r in sorted(ae.by_layers(run).items()) if n >= 2]


CLAIMS = ClaimList(EXPERIMENT, views=multi_layer_views)


def _window_note(run) -> str:
    parts = []
    for s in run.seeds:
        a, b = ae.seed_window(run, s)
        parts.append(f"seed {s}: gain {ae.gain(run, s):.3f}, window {a:g}–{b:g}")
    return f"baseline (in-context unigram) CE {ae.baseline(run):.4f}; " + "; ".join(parts)


@CLAIMS.claim("emergence", "The held-out loss ends ≥ 20% below the context-free predictor's (the "
              "in-context unigram): (baseline − final)/baseline", SEED004, Above(ae.GAIN), per_view=True)
def _emergence(run):
    return Measurement(np.array([ae.gain(run, s) for s in run.seeds]), note=_window_note(run))


@CLAIMS.claim("qk_rank_dips", "The marginalised effective rank (k = 1) of a layer's QK dips inside the "
              "emergence window: its window minimum / min(value at the window's start, at the end), the "
              "best layer", SEED004, Below(1.0), per_view=True)
def _dip(run):
    per_layer = [ae.qk_dips(run, s) for s in run.seeds]
    best = [min(d) if d else np.nan for d in per_layer]
    note = "; ".join(f"seed {s}: " + ", ".join(f"layer {i} {v:.3f}" for i, v in enumerate(d))
                     for s, d in zip(run.seeds, per_layer))
    return Measurement(np.nan_to_num(np.array(best), nan=np.inf), note=note + " (no window counts as no dip: ratio 1)")


@CLAIMS.claim("subspaces_settled", "The top-2 subspace distance to the final matrix of every layer's QK "
              "and OV product is below 0.1 at the window's end (the largest)", SEED004, Below(ae.SETTLED),
              per_view=True)
def _settled(run):
    vals = [ae.distance_at_window_end(run, s) for s in run.seeds]
    return Measurement(np.nan_to_num(np.array(vals), nan=np.inf), note=_window_note(run) + " (no window counts as unsettled: distance 1)")


@CLAIMS.claim("one_layer_no_emergence", "Control: the 1-layer model (no induction circuit) does not get "
              "20% below the context-free predictor: (baseline − final)/baseline", SEED004, Below(ae.GAIN))
def _control(run):
    r = ae.by_layers(run).get(1)
    if r is None:
        return None
    return Measurement(np.array([ae.gain(r, s) for s in r.seeds]), note=_window_note(r))
