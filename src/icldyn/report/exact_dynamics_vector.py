"""Figures of linear-exact-dynamics-vector, drawn only from the run directory (through
analysis/exact_dynamics_vector.py):
- modes.png         per-mode progress a/a^∞ against the logistic closed form and the layer's flow:
                    N → ∞ (population GD), N = 20 (population GD; the paper's finite-N closed form
                    dotted), N = 20 on sampled prompts (SGD); the population runs' loss against L(t);
- scalar_contrast.png  the same Σ, N and a₀: the vector model's modes (trained, closed form) next to
                    the scalar ZFB reduction's modes, and each model's conserved quantities;
- conservation.png  per-mode drift |C_α(t) − C_α(0)| of the lr sweep, and the largest drift against lr.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import NullFormatter

from icldyn.analysis import exact_dynamics_vector as ev
from icldyn.analysis.runs import per_seed, theory_curve
from icldyn.report.plots import PALETTE, finish, log_axes, new_figure


def all_figures(run) -> list:
    roles = ev.roles(run)
    out = []
    curve_runs = [(role, r) for role in ("modes", "finite-n", "sgd") for _, r in roles.get(role, [])]
    if curve_runs:
        out.append(modes_figure(run, curve_runs))
    if "modes" in roles:
        out.append(contrast_figure(run, roles["modes"][0][1]))
    if len(roles.get("conservation", [])) >= 2:
        out.append(conservation_figure(run, [r for _, r in roles["conservation"]]))
    return out


def _positive(t, y):
    keep = t > 0
    return t[keep], y[keep]


def _trained(ax, r, mode, color, label=None, marker="o"):
    for k, (_, g) in enumerate(sorted(ev.progress(r, mode).items())):
        t, y = _positive(g["time"].values, g["value"].values)
        ax.plot(t, y, marker, ms=2.5, color=color, alpha=0.7, label=label if k == 0 else None)


def _theory(ax, r, name, color, ls, label=None, lw=1.2):
    t, y = theory_curve(r, name)
    if len(t):
        t, y = _positive(t, y)
        ax.plot(t, y, ls, color=color, lw=lw, label=label)


TITLES = {"modes": "N → ∞, population GD", "finite-n": "N = {n}, population GD", "sgd": "N = {n}, minibatch SGD"}


def modes_figure(run, curve_runs):
    population = [(role, r) for role, r in curve_runs if r.config.train.gradient == "population"]
    fig, ax = new_figure(1, len(curve_runs) + bool(population), size=(5.0, 4.0))
    if population:
        _loss_panel(ax[0, -1], population)
    for a, (role, r) in zip(ax[0], curve_runs):
        s = ev.constants(r, "s")
        for i in range(ev.n_modes(r)):
            col = PALETTE[i]
            _trained(a, r, i, col, f"mode {i} (s = {s[i]:g}), trained")
            if ev.has_theory(r, f"closed_form/{i}"):
                _theory(a, r, f"closed_form/{i}", col, ":" if role != "modes" else "-",
                        "paper's closed form" if i == 0 else None)
            _theory(a, r, f"layer_ode/{i}", "k", "--", "layer's exact flow" if i == 0 else None, lw=0.8)
        a.axhline(1.0, color="0.6", lw=0.6)
        log_axes(a, y=False)
        a.set_xlabel("time Σ lr")
        a.set_ylabel("a_α / a^∞_α  (a = p q, a^∞ = 1/s^∞)")
        a.set_title(TITLES[role].format(n=r.config.task.n_points))
        a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "modes.png")


def _loss_panel(a, runs):
    """loss/train (markers) against the paper's L(t) (solid) and the layer's exact loss (dashed)."""
    for k, (role, r) in enumerate(runs):
        col = PALETTE[k + 4]
        for j, (_, g) in enumerate(sorted(per_seed(r, "loss/train").items())):
            t, y = _positive(g["time"].values, g["value"].values)
            a.plot(t, y, "o", ms=2.5, color=col, alpha=0.7, label=f"{TITLES[role].format(n=r.config.task.n_points)}"
                   if j == 0 else None)
        _theory(a, r, "mode_ode/loss", col, "-", "paper's L(t)" if k == 0 else None)
        _theory(a, r, "layer_ode/loss", "k", "--", "layer's exact loss" if k == 0 else None, lw=0.8)
    log_axes(a, y=False)  # linear: at N → ∞ the loss of noiseless data falls to 0
    a.set_xlabel("time Σ lr")
    a.set_ylabel("training loss ½E‖ŷ − y‖²")
    a.set_title("loss")
    a.legend(fontsize=7)


def contrast_figure(run, r):
    fig, ax = new_figure(1, 3, size=(4.8, 4.0))
    s = ev.constants(r, "s")
    for i in range(ev.n_modes(r)):
        col = PALETTE[i]
        _trained(ax[0, 0], r, i, col, f"mode {i} (s = {s[i]:g}), trained")
        _theory(ax[0, 0], r, f"closed_form/{i}", col, "-")
        _theory(ax[0, 1], r, f"scalar/{i}", col, "-", f"mode {i} (s = {s[i]:g})")
        _theory(ax[0, 1], r, f"closed_form/{i}", col, ":")
    ax[0, 0].set_title("vector model (paper's): modes independent")
    ax[0, 1].set_title("scalar ZFB reduction (ODE), vector's dotted")
    for a in ax[0, :2]:
        log_axes(a, y=False)
        a.set_xlabel("time Σ lr")
        a.set_ylabel("mode progress (a s^∞, or γ b)")
        a.legend(fontsize=7)
    _conserved_panel(ax[0, 2], r)
    return finish(fig, run.path / "figures" / "scalar_contrast.png")


def _conserved_panel(a, r):
    """The vector model's p_α² − q_α² (trained) and the scalar reduction's v² − Σu² (ODE) and v² − u_α²."""
    for i in range(ev.n_modes(r)):
        for _, g in sorted(per_seed(r, f"probe/mode_conserved/{i}").items()):
            t, y = _positive(g["time"].values, g["value"].values)
            a.plot(t, y, "-", color=PALETTE[i], label=f"vector: p_{i}² − q_{i}² (trained)")
    for i in range(ev.n_modes(r)):
        t, y = theory_curve(r, f"scalar/mode_conserved/{i}")
        a.plot(*_positive(t, y), ":", color=PALETTE[i], label=f"scalar: v² − u_{i}² (ODE)")
    t, y = theory_curve(r, "scalar/conserved")
    a.plot(*_positive(t, y), "k--", label="scalar: v² − Σu² (ODE), its one invariant")
    log_axes(a, y=False)
    a.set_xlabel("time Σ lr")
    a.set_ylabel("conserved quantity")
    a.set_title("conserved: one per mode vs one in all")
    a.legend(fontsize=7)


def conservation_figure(run, runs):
    runs = sorted(runs, key=lambda r: r.config.train.lr)
    fig, ax = new_figure(1, 2, size=(5.0, 4.0))
    for k, r in enumerate(runs):
        for i in range(ev.n_modes(r)):
            for _, g in sorted(per_seed(r, f"probe/mode_conserved/{i}").items()):
                t, y = _positive(g["time"].values, np.abs(g["value"].values - g["value"].values[0]))
                keep = y > 0
                ax[0, 0].plot(t[keep], y[keep], ["-", "--", ":"][i % 3], color=PALETTE[k],
                              label=f"lr = {r.config.train.lr:g}" if i == 0 else None)
    log_axes(ax[0, 0])
    ax[0, 0].set_xlabel("time Σ lr")
    ax[0, 0].set_ylabel("|C_α(t) − C_α(0)|,  C_α = p_α² − q_α²")
    ax[0, 0].set_title("per-mode drift (mode 0 solid, 1 dashed, 2 dotted)", fontsize=9)
    ax[0, 0].legend(fontsize=7)
    f = ev.drift_fit(runs)
    if f is not None:
        ax[0, 1].plot(f["lr"], f["drift"], "ko", label="largest per-mode drift")
        line = np.exp(f["intercept"]) * f["lr"] ** f["slope"]
        ax[0, 1].plot(f["lr"], line, "k-", lw=0.8, label=f"fit: exponent {f['slope']:.3f}")
        ax[0, 1].plot(f["lr"], f["drift"][0] * f["lr"] / f["lr"][0], "r:", label="∝ lr")
    log_axes(ax[0, 1])
    ax[0, 1].xaxis.set_minor_formatter(NullFormatter())
    ax[0, 1].yaxis.set_minor_formatter(NullFormatter())
    ax[0, 1].set_xlabel("learning rate")
    ax[0, 1].set_ylabel("max_t |C_α(t) − C_α(0)|")
    ax[0, 1].legend(fontsize=7)
    return finish(fig, run.path / "figures" / "conservation.png")
