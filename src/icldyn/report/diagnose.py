"""Figures of `icldyn diagnose` (RUN_DIR/diagnose/*.png), drawn from the files it wrote only:
the LLC over training with its chains' spread, the chains' loss traces (convergence), and the
essential-dynamics trajectory in PC space (with its speed) with the run's loss drops marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icldyn.analysis.diagnose import diagnose_dir, read_frame, run_phases
from icldyn.report.plots import finish, log_axes, new_figure

PHASE_COLOR = "tab:red"


def _mark_phases(ax, phases) -> None:
    for k, p in enumerate(phases):
        ax.axvspan(p.start, p.end, color=PHASE_COLOR, alpha=0.12, label="loss drop (phases.py)" if k == 0 else None)


def llc_figure(run, path: Path, phases) -> Path | None:
    llc, traces = read_frame(run.path, "llc"), read_frame(run.path, "llc_traces")
    if llc is None:
        return None
    fig, axes = new_figure(1, 2)
    ax, ax2 = axes[0]
    for seed, g in llc[llc["time"] > 0].groupby("seed"):
        ax.errorbar(g["time"], g["llc"], yerr=g["llc_std"], marker=".", ms=3, lw=1, capsize=0, label=f"seed {seed}")
    log_axes(ax, y=False)
    if (llc["llc"] < 0).any():  # negative on saddles (plateaus): symlog keeps the small positive values readable
        ax.set_yscale("symlog", linthresh=1.0)
    _mark_phases(ax, phases)
    ax.set(xlabel="time (Σ lr)", ylabel="LLC λ̂ (± std over chains)", title="local learning coefficient")
    ax.legend(fontsize=7)
    last = traces[traces["step"] == traces["step"].max()]
    for (seed, chain), g in last.groupby(["seed", "chain"]):
        ax2.plot(g["sgld_step"], g["loss"], lw=0.7, label=f"seed {seed} chain {chain}")
    burn = int(last["burnin"].sum() / max(1, last.groupby(["seed", "chain"]).ngroups))
    ax2.axvline(burn, color="k", ls=":", lw=1, label="end of burn-in")
    ax2.set(xlabel="SGLD step", ylabel="loss L_n(w)", title=f"chains at the last checkpoint (step {int(last['step'].iloc[0])})")
    ax2.legend(fontsize=6)
    return finish(fig, path)


def essential_figure(run, path: Path, phases) -> Path | None:
    ed = read_frame(run.path, "essential_dynamics")
    if ed is None:
        return None
    seed = int(ed["seed"].min())
    g = ed[ed["seed"] == seed].sort_values("time")
    fig, axes = new_figure(1, 3, size=(4.6, 4.0))
    pairs = [("pc1", "pc2"), ("pc1", "pc3") if "pc3" in g else ("pc1", "pc2")]
    for ax, (a, b) in zip(axes[0][:2], pairs):
        sc = ax.scatter(g[a], g[b], c=np.log10(g["time"]), s=8, cmap="viridis")
        ax.plot(g[a], g[b], lw=0.5, color="grey")
        for name, marker in (("speed_peak", "o"), ("turn", "s")):
            e = g[g["event"] == name]
            ax.scatter(e[a], e[b], marker=marker, s=60, facecolors="none", edgecolors="k",
                       label="stage point (speed max)" if name == "speed_peak" else "turning point")
        for k, p in enumerate(phases):
            i = int(np.argmin(np.abs(np.log(g["time"].values) - np.log(p.midpoint))))
            ax.scatter(g[a].iloc[i], g[b].iloc[i], marker="x", s=60, color=PHASE_COLOR,
                       label="loss-drop midpoint" if k == 0 else None)
        ax.set(xlabel=a.upper(), ylabel=b.upper(), title=f"essential dynamics, seed {seed}")
        ax.legend(fontsize=6)
    fig.colorbar(sc, ax=axes[0][1], label="log10 time")
    ax = axes[0][2]
    ax.plot(g["time"], g["speed"], lw=1, label="speed ‖dz/d ln t‖")
    for t in g.loc[g["event"] == "speed_peak", "time"]:
        ax.axvline(t, color="k", lw=0.8, ls="--")
    for t in g.loc[g["event"] == "turn", "time"]:
        ax.axvline(t, color="k", lw=0.8, ls=":")
    log_axes(ax)
    _mark_phases(ax, phases)
    ax.set(xlabel="time (Σ lr)", ylabel="speed in PC space", title="stage points (--) and turns (:)")
    ax.legend(fontsize=6)
    return finish(fig, path)


def write_figures(run) -> list[Path]:
    """Draw the diagnose figures of a stored run (store.Run) into its diagnose/ folder."""
    phases = run_phases(run)
    out = diagnose_dir(run.path)
    made = [llc_figure(run, out / "llc.png", phases), essential_figure(run, out / "essential_dynamics.png", phases)]
    return [p for p in made if p is not None]
