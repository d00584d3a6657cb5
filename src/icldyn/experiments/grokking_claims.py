"""Claims of grokking, from the stored run or sweep directory only (analysis/grokking.py).

The main run is the one with weight decay, the control the one without (`roles`). Bounds are the
spec's (grokking-spectral.md, Part B), fixed before the run. Negative controls (tests): the no-
weight-decay run fails `groks` and `jump_after_memorisation`; a shuffled record order fails
`time_ordering`.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import grokking as gk
from icldyn.analysis.runs import final_values, metric_curve
from icldyn.claims import Above, Below, ClaimList, Judged, Measurement

EXPERIMENT = "grokking"
NANDA = "Nanda et al. 2023 (grokking on modular addition, p = 113)"
SEED004 = "Mainali & Teixeira 2025 (seed 004): spectral measures around grokking"


def main_view(run) -> list:
    r = gk.roles(run).get("main")
    return [("", r)] if r is not None else []


CLAIMS = ClaimList(EXPERIMENT, views=main_view)


def _main(run):
    return gk.roles(run).get("main")


def _events_note(run, sustained: bool = False) -> str:
    tag = "sustained events, " if sustained else ""
    return tag + "; ".join(f"seed {s}: " + ", ".join(f"{k} {v:g}" for k, v in gk.events(run, s, sustained).items())
                           for s in run.seeds)


@CLAIMS.claim("groks", "With weight decay the held-out accuracy ends ≥ 0.95", NANDA, Above(0.95), per_view=True)
def _groks(run):
    return Measurement(final_values(run, "accuracy/test"), note=_events_note(run))


@CLAIMS.claim("jump_after_memorisation", "The held-out jump (test acc ≥ 0.95) comes ≥ 3× later than "
              "memorisation (train acc ≥ 0.99): jump step / memorisation step", NANDA, Above(3.0), per_view=True)
def _late_jump(run):
    ratios = []
    for s in run.seeds:
        ev = gk.events(run, s)
        ratios.append(ev["jump"] / max(ev["memorisation"], 1.0) if np.isfinite(ev["memorisation"]) else np.nan)
    return Measurement(np.nan_to_num(np.array(ratios), nan=0.0), note=_events_note(run) +
                       " (a missing event counts as ratio 0)")


@CLAIMS.claim("weight_norm_falls", "The total squared weight norm at the jump is below its value at "
              "memorisation: ratio jump/memorisation", NANDA, Below(1.0), per_view=True)
def _norm(run):
    vals = [gk.ratio_at_events(run, "probe/weight_norm", s, "memorisation", "jump") for s in run.seeds]
    return Measurement(np.nan_to_num(np.array(vals), nan=np.inf))


@CLAIMS.claim("fourier_sparse_embedding", "The 5 largest Fourier frequencies of the number embedding "
              "hold ≥ 50% of its Fourier power at the end", NANDA, Above(0.5), per_view=True)
def _fourier(run):
    init = [float(metric_curve(run, "probe/fourier_top5", s, axis="step")[1][0]) for s in run.seeds]
    return Measurement(final_values(run, "probe/fourier_top5"),
                       note=f"at init: {', '.join(f'{v:.3f}' for v in init)}")


@CLAIMS.claim("ov_subspace_unsettled_at_memorisation", "The OV products' top-2 subspace distance to "
              "the final matrices (mean over heads) is still > 0.1 at memorisation", SEED004, Above(0.1),
              per_view=True)
def _ov_late(run):
    vals = []
    for s in run.seeds:
        steps, d = gk.ov_distance(run, s)
        mem = gk.events(run, s)["memorisation"]
        vals.append(float(d[steps == mem][0]) if np.isfinite(mem) and (steps == mem).any() else np.nan)
    return Measurement(np.nan_to_num(np.array(vals), nan=0.0))


for _name, _label in ((gk.EMBED, "embedding"), (gk.MLP[0], "MLP input weight"), (gk.MLP[1], "MLP output weight")):
    def _rank_measure(run, _name=_name):
        vals = [gk.ratio_at_events(run, f"probe/erank/{_name}", s, "memorisation", "final") for s in run.seeds]
        return Measurement(np.nan_to_num(np.array(vals), nan=np.inf))

    CLAIMS.claim(f"erank_falls_{_label.split()[0].lower()}{'' if _label == 'embedding' else '_' + _label.split()[1]}",
                 f"The effective rank of the {_label} at the end is below its value at memorisation: "
                 f"ratio end/memorisation", SEED004, Below(1.0), per_view=True)(_rank_measure)


@CLAIMS.claim("time_ordering", "Memorisation comes first; the embedding's rank fall, the OV subspace "
              "stabilisation and the held-out jump all come after it, each for good (the first step "
              "from which its condition holds to the end, by 90% of training; every seed)", SEED004,
              Judged("memorisation < rank fall, stabilisation, jump"), per_view=True)
def _ordering(run):
    ok = [gk.ordering_holds(gk.events(run, s, sustained=True), run.config.train.steps) for s in run.seeds]
    return Measurement(float(np.mean(ok)), passed=all(ok), note=_events_note(run, sustained=True) +
                       "; measured: the share of seeds with this ordering")


@CLAIMS.claim("no_grokking_without_weight_decay", "Without weight decay (control), within the same "
              "budget, the held-out accuracy ends < 0.5", NANDA, Below(0.5))
def _control(run):
    r = gk.roles(run).get("control")
    if r is None:
        return None
    return Measurement(final_values(r, "accuracy/test"), note=_events_note(r))
