"""Figures of attention-emergence, from the run directory only (metrics, theory rows; the window
from analysis/attention_emergence.py). One row per number of layers, one step axis per row:
1. held-out loss with the context-free (unigram), Bayes-bigram and oracle losses, window shaded;
2. the marginalised effective rank (k = 1) of every layer's QK, relative to its initial value;
3. the top-2 subspace distance of every layer's QK and OV product to its final matrix.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import attention_emergence as ae
from icldyn.analysis.runs import theory_constant
from icldyn.report.plots import PALETTE, finish, hline, new_figure


def all_figures(run) -> list:
    return [emergence_figure(run)]


def _shade(ax, run, seed, label=False):
    a, b = ae.seed_window(run, seed)
    if np.isfinite(a) and np.isfinite(b):
        ax.axvspan(a, max(b, a + 1), color="0.85", zorder=0, label="emergence window" if label else None)


def emergence_figure(run):
    models = sorted(ae.by_layers(run).items())
    fig, ax = new_figure(len(models), 3, size=(4.6, 2.9))
    for row, (n, r) in enumerate(models):
        seed = r.seeds[0]
        s, v = ae.curve(r, ae.LOSS, seed)
        ax[row, 0].plot(s, v, color=PALETTE[0], label="held-out CE")
        for name, color in (("unigram", PALETTE[3]), ("ngram_bayes", PALETTE[2]), ("oracle", PALETTE[7])):
            hline(ax[row, 0], theory_constant(r, f"baseline/{name}"), name, color)
        ax[row, 0].set_ylabel(f"{n} layer{'s' if n > 1 else ''}\ncross-entropy")
        for i in range(n):
            s, m = ae.curve(r, ae.QK_RANK.format(i=i), seed)
            if len(m):
                ax[row, 1].plot(s, m / max(m[0], 1e-12), color=PALETTE[i], label=f"QK layer {i}")
            for kind, ls in (("qk", "-"), ("ov", "--")):
                s, d = ae.curve(r, ae.DIST.format(i=i, kind=kind), seed)
                ax[row, 2].plot(s, d, color=PALETTE[i], ls=ls, label=f"{kind.upper()} layer {i}")
        ax[row, 1].set_ylabel("merank₁(QK) / init")
        ax[row, 2].axhline(ae.SETTLED, color="k", lw=0.8, ls=":")
        ax[row, 2].set_ylabel("top-2 subspace dist. to final")
        for col in range(3):
            _shade(ax[row, col], r, seed, label=col == 0)
            ax[row, col].grid(True, alpha=0.3)
            ax[row, col].legend(fontsize=6)
            ax[row, col].set_xlabel("step")
    fig.suptitle(f"attention-only transformers on the in-context bigram chain (seed {models[0][1].seeds[0]}): "
                 "loss and spectra on one step axis")
    return finish(fig, run.path / "figures" / "emergence.png")
