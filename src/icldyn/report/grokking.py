"""Figures of grokking, from the run directory only (metrics.parquet; events from analysis/grokking.py):
1. accuracy and loss (train, held-out) on one step axis, events marked, with the no-weight-decay control;
2. weight norm, Fourier top-5 share, effective ranks of the embedding and MLP weights;
3. the attention products: OV/QK subspace distances to the final matrix and marginalised ranks;
4. the embedding's final Fourier spectrum.
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import grokking as gk
from icldyn.report.plots import PALETTE, finish, new_figure

EVENT_STYLE = {"memorisation": (PALETTE[1], ":"), "rank_fall": (PALETTE[4], "-."),
               "stabilisation": (PALETTE[2], "--"), "jump": (PALETTE[3], "-")}


def all_figures(run) -> list:
    rs = gk.roles(run)
    main = rs.get("main") or rs.get("control")
    return [dynamics_figure(run, main, rs.get("control")), spectral_figure(run, main), fourier_figure(run, main)]


def _events(ax, run, seed, legend=False):
    for name, value in gk.events(run, seed).items():
        color, ls = EVENT_STYLE[name]
        if np.isfinite(value):
            ax.axvline(max(value, 1), color=color, ls=ls, lw=1, label=name if legend else None)


def _xlog(ax):
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlim(left=0)
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)


def dynamics_figure(run, main, control):
    fig, ax = new_figure(1, 2, size=(6.0, 4.2))
    seed = main.seeds[0]
    for r, tag, ls in ((main, "wd", "-"), (control, "no wd", "--")):
        if r is None:
            continue
        for name, color in (("accuracy/train", PALETTE[0]), ("accuracy/test", PALETTE[3])):
            s, v = gk.curve(r, name, seed)
            ax[0, 0].plot(s, v, ls=ls, color=color, label=f"{name} ({tag})")
        for name, color in (("loss/train", PALETTE[0]), ("loss/test", PALETTE[3])):
            s, v = gk.curve(r, name, seed)
            ax[0, 1].plot(s, v, ls=ls, color=color, label=f"{name} ({tag})")
    _events(ax[0, 0], main, seed, legend=True)
    _events(ax[0, 1], main, seed)
    ax[0, 0].set_ylabel("accuracy")
    ax[0, 1].set_yscale("log")
    ax[0, 1].set_ylabel("cross-entropy")
    for a in ax[0]:
        _xlog(a)
        a.legend(fontsize=7)
    fig.suptitle(f"grokking, seed {seed}: accuracy and loss, events of the weight-decay run")
    return finish(fig, run.path / "figures" / "accuracy_loss.png")


def spectral_figure(run, main):
    fig, ax = new_figure(1, 3, size=(5.0, 4.0))
    seed = main.seeds[0]
    s, v = gk.curve(main, "probe/weight_norm", seed)
    ax[0, 0].plot(s, v / v[0], color=PALETTE[0], label="Σ‖W‖² / init")
    s, v = gk.curve(main, "probe/fourier_top5", seed)
    ax[0, 0].plot(s, v, color=PALETTE[5], label="Fourier top-5 share")
    ax[0, 0].set_title("weight norm, Fourier sparsity")
    for i, name in enumerate((gk.EMBED, *gk.MLP)):
        s, v = gk.curve(main, f"probe/erank/{name}", seed)
        ax[0, 1].plot(s, v / v[0], color=PALETTE[i], label=f"erank {name} / init")
    ax[0, 1].set_title("effective rank (relative to init)")
    s, d = gk.ov_distance(main, seed)
    ax[0, 2].plot(s, d, color=PALETTE[2], lw=2, label="OV top-2 distance (mean heads)")
    names = main.metrics["name"].unique()
    for i, n in enumerate(sorted(n for n in names if n.startswith("probe/rowspace_dist/") and ".qk." in n)[:1]):
        s, v = gk.curve(main, n, seed)
        ax[0, 2].plot(s, v, color=PALETTE[4], label="QK row-space dist (head 0)")
    s, v = gk.curve(main, "probe/merank1/blocks.0.attn.ov.0", seed)
    if len(v):
        ax[0, 2].plot(s, v / max(v[0], 1e-12), color=PALETTE[7], ls="--", label="merank1 OV head 0 / init")
    ax[0, 2].axhline(gk.STABLE, color="k", lw=0.8, ls=":")
    ax[0, 2].set_title("attention products")
    for a in ax[0]:
        _events(a, main, seed)
        _xlog(a)
        a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "spectral.png")


def fourier_figure(run, main):
    fig, ax = new_figure(1, 1, size=(6.0, 3.6))
    names = [n for n in main.metrics["name"].unique() if n.startswith("probe/fourier/")]
    freqs = sorted(int(n.rsplit("/", 1)[1]) for n in names)
    for i, seed in enumerate(main.seeds):
        shares = [float(main.final(f"probe/fourier/{j}").get(seed, np.nan)) for j in freqs]
        ax[0, 0].bar(np.array(freqs) + 0.8 * i / len(main.seeds), shares, width=0.8 / len(main.seeds),
                     color=PALETTE[i % 10], label=f"seed {seed}")
    ax[0, 0].set_xlabel("frequency j")
    ax[0, 0].set_ylabel("share of the embedding's Fourier power")
    ax[0, 0].legend(fontsize=7)
    ax[0, 0].set_title("number embedding at the end of training")
    return finish(fig, run.path / "figures" / "fourier.png")
