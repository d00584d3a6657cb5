"""Figures of classification-icl, drawn only from the run directory (curves, metrics, claims)."""

from __future__ import annotations

import numpy as np

from icldyn.analysis import classification as an
from icldyn.analysis.fits import fit_power_law
from icldyn.analysis.runs import final_values, metric_curve
from icldyn.report.plots import PALETTE, finish, new_figure

LEARNER_STYLE = {"model": ("k", "-"), "logistic": (PALETTE[0], "--"), "linear_svm": (PALETTE[1], "--"),
                 "rbf_svm": (PALETTE[2], "--"), "nn_1": (PALETTE[3], ":"), "nn_3": (PALETTE[4], ":")}


def _main(run):
    return run.variants.get("main", run) if run.variants else run


def _band(ax, rows, label, color, ls="-", marker="o"):
    m = an.seed_mean(rows)
    if m.empty:
        return
    x, v, se = m.index.to_numpy(), m["value"].to_numpy(), m["stderr"].to_numpy()
    ax.plot(x, v, ls=ls, color=color, marker=marker, ms=3, label=label)
    ax.fill_between(x, np.maximum(v - se, 0), v + se, color=color, alpha=0.2, lw=0)


def generalisation_figure(run, path):
    r = _main(run)
    fig, axes = new_figure(1, 1)
    ax = axes[0, 0]
    _band(ax, an.curve(r, "model", "S1", split="ood"), "OOD tasks (one-layer model)", PALETTE[0])
    gpt = run.variants.get("gpt")
    if gpt is not None:
        _band(ax, an.curve(gpt, "model", "S1", split="ood"), "OOD tasks (GPT)", PALETTE[1])
    unseen = an.curve(r, "model", "n_examples", split="unseen_at_alpha")
    if len(unseen):
        ax.axhline(unseen["value"].mean(), color=PALETTE[2], ls="--", label="unseen in-domain tasks")
    ax.axhline(0.02, color="grey", ls=":", lw=1, label="claim bound 2e-2")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("S₁ (coefficient sum of the OOD relevant patterns)")
    ax.set_ylabel("query error (l = 20)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.set_title("Unseen and out-of-domain tasks")
    return finish(fig, path)


def context_figure(run, path):
    r = _main(run)
    alphas = r.config.alpha_tests
    fig, axes = new_figure(1, len(alphas), size=(4.2, 3.6))
    for ax, a in zip(axes[0], alphas):
        for name, (color, ls) in LEARNER_STYLE.items():
            rows = an.curve(r, name, "n_examples", split="unseen", alpha_test=float(a))
            _band(ax, rows, "ICL (trained model)" if name == "model" else name, color, ls)
        ax.set_title(f"α′ = {a:g} (unseen tasks)")
        ax.set_xlabel("number of context examples")
        ax.set_ylabel("query error")
    axes[0, 0].legend(fontsize=7)
    return finish(fig, path)


def mechanism_figure(run, path):
    r = _main(run)
    fig, axes = new_figure(1, 2)
    ax = axes[0, 0]
    for seed in r.seeds:
        s, v = metric_curve(r, "probe/same_pattern_mass", seed, axis="step")
        ax.plot(s, v, color=PALETTE[0], label="same-pattern attention" if seed == r.seeds[0] else None)
        s, v = metric_curve(r, "error/test", seed, axis="step")
        ax.plot(s, v, color=PALETTE[3], ls="--", label="error (training tasks)" if seed == r.seeds[0] else None)
    ax.set_xlabel("training step")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Attention on examples sharing the query's pattern")
    ax = axes[0, 1]
    width = r.config.model.width
    if not r.metric("probe/wo_norm/0").empty:
        norms = np.array([final_values(r, f"probe/wo_norm/{i}")[0] for i in range(width)])
        label = np.array([final_values(r, f"probe/wo_label/{i}")[0] for i in range(width)])
        init = np.array([metric_curve(r, f"probe/wo_norm/{i}", r.seeds[0], axis="step")[1][0] for i in range(width)])
        small = set(an.wo_groups(norms, init)["small"])
        order = np.argsort(norms)
        colors = [PALETTE[7] if i in small else (PALETTE[0] if label[i] > 0 else PALETTE[3]) for i in order]
        ax.bar(np.arange(width), norms[order], color=colors)
        ax.plot(np.arange(width), init[order], "k.", ms=3, label="at initialisation")
        for c, t in ((PALETTE[0], "large, label part +q"), (PALETTE[3], "large, label part −q"),
                     (PALETTE[7], f"small ({len(small)}/{width})")):
            ax.bar([0], [0], color=c, label=t)
        ax.legend(fontsize=8)
    ax.set_xlabel("W_O row (sorted by norm)")
    ax.set_ylabel("‖row‖ (final)")
    ax.set_title("W_O row magnitudes: three neuron groups (seed 0)")
    return finish(fig, path)


def pruning_figure(run, path):
    r = _main(run)
    margin = not an.curve(r, "model", "prune_rate", metric="margin").empty
    fig, axes = new_figure(2 if margin else 1, 2)
    for row, (metric, label) in enumerate((("error", "query error"), ("margin", "mean margin z·F / unpruned"))):
        if row == len(axes):
            break
        for ax, split in zip(axes[row], ("unseen", "ood")):
            for i, order in enumerate(an.ORDERS):
                _band(ax, an.curve(r, "model", "prune_rate", metric=metric, split=split, order=order),
                      f"{order} first", PALETTE[i])
            if metric == "error":         # a common scale: a flat 0 should look flat, not fill the panel
                top = an.curve(r, "model", "prune_rate", split=split)["value"].max()
                ax.set_ylim(0, max(0.05, 1.3 * float(top if top == top else 0)))
            ax.set_xlabel("pruning rate R (fraction of W_O rows zeroed)")
            ax.set_ylabel(label)
            ax.set_title(("in-domain (unseen tasks)" if split == "unseen" else f"OOD (S₁ = {r.config.task.ood_s1:g})")
                         + f": {metric}")
            ax.legend(fontsize=8)
    return finish(fig, path)


def iterations_figure(run, path):
    subs = {float(s.config.task.alpha): s for n, s in run.variants.items() if n.startswith("alpha=")}
    if not subs:
        return None
    fig, axes = new_figure(1, 2)
    threshold = run.config.iterations_error
    its = {}
    for i, (a, sub) in enumerate(sorted(subs.items())):
        s, e = metric_curve(sub, "error/test", sub.seeds[0], axis="step")
        axes[0, 0].plot(np.maximum(s, 1), e, color=PALETTE[i], label=f"α = {a:g}")
        its[a] = np.mean([an.steps_to_error(*metric_curve(sub, "error/test", seed, axis="step"), threshold)
                          for seed in sub.seeds])
    axes[0, 0].axhline(threshold, color="grey", ls=":")
    axes[0, 0].set_xscale("log")
    axes[0, 0].set_xlabel("training step")
    axes[0, 0].set_ylabel("error (training tasks)")
    axes[0, 0].legend(fontsize=8)
    ax = axes[0, 1]
    ok = {a: v for a, v in its.items() if np.isfinite(v) and v > 0}
    ax.loglog(list(ok), list(ok.values()), "ko", label="measured")
    if len(ok) >= 2:
        fit = fit_power_law(list(ok), list(ok.values()))
        xs = np.linspace(min(ok), max(ok), 50)
        ax.loglog(xs, fit["prefactor"] * xs ** fit["exponent"], "k-",
                  label=f"fit: exponent {fit['exponent']:.2f} [{fit['ci'][0]:.2f}, {fit['ci'][1]:.2f}]")
        ax.loglog(xs, fit["prefactor"] * xs ** (-2 / 3), "r--", label="α^(−2/3) (same prefactor)")
    ax.set_xlabel("training α")
    ax.set_ylabel(f"iterations to error ≤ {threshold:g}")
    ax.legend(fontsize=8)
    return finish(fig, path)


def figures(run) -> list:
    out = run.path / "figures"
    paths = [generalisation_figure(run, out / "generalisation.png"), context_figure(run, out / "context_length.png"),
             mechanism_figure(run, out / "mechanism.png"), pruning_figure(run, out / "pruning.png"),
             iterations_figure(run, out / "iterations_law.png")]
    return [p for p in paths if p is not None]
