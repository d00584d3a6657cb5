"""Figures of induction-ngram and induction-full (Chen, Sheen, Wang & Yang 2024), from stored runs.

dynamics.png       per training loss: normalised c_S² per subset, the S* heads' parent mass and a(t)
                   with the detected stage times, and the validation loss with every baseline
rpe.png            each head's positional attention mass over offsets, at init and at the end
generalisation.png loss vs context length L at the training α and another α (model and baselines)
full.png           induction-full: training loss with the plateau/drop found, selector, RPE, a
closing.md/.png    both: a, code losses and selector shares at epochs 10 … 50,000, copier masses
                   (report/induction_tables.py); the `ingredients` preset of induction-full writes
                   ingredients.md/.png instead of the per-view figures
"""

from __future__ import annotations

import numpy as np

from icldyn.analysis import induction as an
from icldyn.analysis.runs import final_values, metric_curve
from icldyn.report.plots import PALETTE, finish, hline, new_figure

BASELINE_STYLE = {  # name → (label, colour, line style)
    "unigram": ("in-context unigram", PALETTE[7], ":"),
    "gih": ("GIH(S*, a → ∞)", PALETTE[2], "--"),
    "gih_model_a": ("GIH(S*, model's a)", PALETTE[1], "--"),
    "gih_best_a": ("GIH(S*, best a)", PALETTE[5], (0, (5, 1))),
    "ngram_bayes": ("Bayes n-gram (true parents)", PALETTE[4], "-."),
    "oracle": ("oracle π(·|parents)", "k", ":"),
}
STAGE_COLOURS = {"selector": PALETTE[0], "copier": PALETTE[3], "classifier": PALETTE[2]}


def _band(ax, run, name, color, label, lw=1.8, ls="-", offset=0.0):
    t, mean, lo, hi = an.seed_band(run, name)
    if t.size == 0:
        return
    mean, lo, hi = mean - offset, lo - offset, hi - offset
    ax.plot(t, mean, color=color, label=label, lw=lw, ls=ls)
    if run.config.n_seeds > 1:
        ax.fill_between(t, lo, hi, color=color, alpha=0.2, lw=0)


def _loss_label(run) -> str:
    return {"paper": "paper loss −log(ŷ_y+ε)", "code": "code loss CE(softmax ŷ)"}[run.config.model.loss]


def _selector_panel(ax, run, s_star):
    star = "+".join(map(str, s_star))
    names = sorted({n.split("/")[-1] for n in run.metrics["name"] if n.startswith("probe/selector/")},
                   key=lambda n: (n.count("+"), n))
    for k, n in enumerate(names):
        bold = n == star
        _band(ax, run, f"probe/selector/{n}", PALETTE[k % 10], f"{{{n}}}" + (" = S*" if bold else ""),
              lw=2.6 if bold else 1.3)
    if names:
        ax.axhline(1 / len(names), color="grey", lw=0.8, ls=":", label=f"init (1/{len(names)})")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.set_ylabel("normalised $c_S^2$")
    ax.set_title("selector: weight of each subset of heads")
    ax.legend(fontsize=7, ncol=2)


def _stage_lines(ax, times: dict):
    for comp, ts in times.items():
        ts = [t for t in ts if np.isfinite(t)]
        if ts:
            t = float(np.median(ts))
            ax.axvline(t, color=STAGE_COLOURS[comp], lw=0.9, ls=":")
            ax.text(t, 0.02, f" {comp}", color=STAGE_COLOURS[comp], rotation=90, fontsize=7,
                    transform=ax.get_xaxis_transform(), va="bottom")


def _copier_classifier_panel(ax, run, s_star, times, title="copier (RPE) and classifier (a); dotted: stage times"):
    pairs = an.head_offsets(run, s_star)
    for k, (h, o) in enumerate(pairs):
        _band(ax, run, f"probe/rpe_mass/{h}/{o}", STAGE_COLOURS["copier"], f"head {h}: mass on offset {o}",
              ls=["-", "--", "-."][k % 3])
    H = run.config.model.n_heads
    for h in range(H):
        if h not in [p[0] for p in pairs]:
            _band(ax, run, f"probe/rpe_mass/{h}/{h + 1}", PALETTE[7], f"head {h} (outside S*): offset {h + 1}",
                  lw=1.0)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("positional attention mass")
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    _band(ax2, run, "probe/a", STAGE_COLOURS["classifier"], "a (right axis)")
    ax2.set_ylabel("classifier scale a", color=STAGE_COLOURS["classifier"])
    ax2.set_ylim(bottom=0)
    _stage_lines(ax, times)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.set_title(title)


def _loss_panel(ax, run, kind=None, legend=True):
    """Validation loss with the baselines as horizontal lines. Under the code loss every good
    predictor sits within 0.01 of the oracle while the unigram is 0.25 above: that panel shows
    loss − oracle on a log axis so the lines separate."""
    kind = kind or run.config.model.loss
    f = final_values(run, f"baseline/oracle/{kind}")
    excess = kind == "code" and bool(np.isfinite(f).any())
    off = float(np.nanmean(f)) if excess else 0.0
    _band(ax, run, f"loss/val/{kind}", "k", "model, validation", lw=2.2, offset=off)
    if kind == run.config.model.loss and not excess:  # the oracle offset is the validation prompts' own
        _band(ax, run, "loss/train", PALETTE[0], "model, training set", lw=1.0, ls="--")
    _band(ax, run, f"baseline/gih_model_a/{kind}", BASELINE_STYLE["gih_model_a"][1], "GIH(S*, a(t))", lw=1.0,
          ls="--", offset=off)
    for name in ("unigram", "gih", "gih_best_a", "ngram_bayes", "oracle"):
        f = final_values(run, f"baseline/{name}/{kind}")
        label, color, ls = BASELINE_STYLE[name]
        if np.isfinite(f).any() and not (excess and name == "oracle"):
            v = float(np.nanmean(f))
            if name == "gih" and kind == "paper":
                label += f" = {v:.2f} (ε floor)"
                if v > 2:
                    continue
            hline(ax, v - off, label, color, ls=ls)
    ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("time = Σ lr")
    if excess:
        ax.set_yscale("log")
        ax.set_ylabel(f"{kind} loss − oracle ({off:.3f})")
        ax.set_title(f"validation loss above the oracle ({kind} loss)")
    else:
        ax.set_ylabel(f"{kind} loss")
        ax.set_title(f"validation loss ({kind} loss) and baselines")
    if legend:
        ax.legend(fontsize=7)


def dynamics_figure(run):
    views = an.loss_views(run)
    fig, ax = new_figure(len(views), 3, size=(5.2, 3.9))
    for row, (sfx, r) in enumerate(views):
        s_star = an.stored_s_star(r)
        _selector_panel(ax[row, 0], r, s_star)
        _copier_classifier_panel(ax[row, 1], r, s_star, an.stage_times(r, s_star))
        _loss_panel(ax[row, 2], r)
        for a in ax[row]:
            a.set_xlabel("time = Σ lr")
        ax[row, 0].set_title(f"{_loss_label(r)}\n" + ax[row, 0].get_title(), fontsize=10)
    return finish(fig, run.path / "figures" / "dynamics.png")


def rpe_figure(run):
    views = an.loss_views(run)
    fig, ax = new_figure(len(views), 2, size=(3.6, 2.9))
    for row, (sfx, r) in enumerate(views):
        s_star = an.stored_s_star(r)
        for col, (title, at) in enumerate((("at init", "init"), ("at the end", "end"))):
            a = ax[row, col]
            mat = an.rpe_masses(r, at)
            im = a.imshow(mat, cmap="viridis", vmin=0, vmax=1, aspect="auto")
            for h in range(mat.shape[0]):
                for j in range(mat.shape[1]):
                    a.text(j, h, f"{mat[h, j]:.2f}", ha="center", va="center", fontsize=8,
                           color="w" if mat[h, j] < 0.6 else "k")
            a.set_xticks(range(mat.shape[1]), [str(j + 1) for j in range(mat.shape[1])])
            a.set_yticks(range(mat.shape[0]),
                         [f"head {h}" + (" (S*)" if h + 1 in s_star else "") for h in range(mat.shape[0])])
            a.set_xlabel("offset j (attends to x_{i−j})")
            a.set_title(f"RPE mass {title}\n{_loss_label(r)}", fontsize=9)
        fig.colorbar(im, ax=ax[row, 1], fraction=0.046)
    return finish(fig, run.path / "figures" / "rpe.png")


def generalisation_figure(run):
    views = an.loss_views(run)
    alphas = an.generalisation_alphas(views[0][1])
    fig, ax = new_figure(len(views), len(alphas), size=(4.6, 3.6))
    for row, (sfx, r) in enumerate(views):
        kind = r.config.model.loss
        if r.curves.empty:
            continue
        for col, alpha in enumerate(alphas):
            a = ax[row, col]
            top = -np.inf
            for name, (label, color, ls) in {"model": ("trained model", "k", "-"), **BASELINE_STYLE}.items():
                if name == "gih" and kind == "paper":
                    label += " (ε floor)"
                g = an.generalisation_curve(r, name, kind, alpha)
                if g.empty:
                    continue
                a.plot(g.index, g.values, color=color, ls=ls, lw=2.2 if name == "model" else 1.3,
                       marker="o" if name == "model" else None, ms=4, label=label)
                if name in ("model", "unigram"):
                    top = max(top, float(g.max()))
            if np.isfinite(top):  # an a → ∞ GIH under −log ŷ can sit far above: keep the scale readable
                a.set_ylim(top=top * 1.08)
            a.axvline(r.config.task.n_points, color="grey", lw=0.8, ls=":")
            a.set_xscale("log")
            a.set_xticks(r.config.generalisation_lengths, [str(L) for L in r.config.generalisation_lengths])
            a.minorticks_off()
            a.grid(True, alpha=0.3)
            a.set_xlabel("context length L (trained at the dotted line)")
            a.set_ylabel(f"{kind} loss")
            trained = " (training prior)" if alpha == float(r.config.task.alpha) else ""
            a.set_title(f"α = {alpha:g}{trained}; {_loss_label(r)}", fontsize=9)
            a.legend(fontsize=7)
    return finish(fig, run.path / "figures" / "generalisation.png")


def ngram_figures(run):
    from icldyn.report.induction_tables import closing_report

    return [dynamics_figure(run), rpe_figure(run), generalisation_figure(run), *closing_report(run)]


def full_figures(run):
    from icldyn.report.induction_tables import closing_report, ingredients_report

    if getattr(run.config, "ingredients", False):
        return ingredients_report(run)
    figs = closing_report(run)
    for sfx, r in an.loss_views(run):
        s_star = an.stored_s_star(r)
        fig, ax = new_figure(1, 4, size=(4.8, 3.9))
        a = ax[0, 0]
        _loss_panel(a, r, legend=False)
        t, y = metric_curve(r, "loss/train", r.seeds[0])
        found = an.plateau_then_emergence(t, y)
        if found["plateau"]:
            s, e, _ = found["plateau"]
            a.axvspan(s, e, color=PALETTE[7], alpha=0.15, lw=0, label="plateau (analysis.phases)")
        if found["drop"]:
            s, e, _, _ = found["drop"]
            a.axvspan(s, e, color=PALETTE[3], alpha=0.15, lw=0, label="drop (analysis.phases)")
        # below the axes: inside, it covers the plateau band at early times
        a.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2)
        a.set_title("full model: loss on a log time axis", fontsize=10)
        # the same curve on a linear axis: a plateau in log time is not necessarily one in time
        a = ax[0, 1]
        end = found["drop"][1] * 2 if found["drop"] else t[-1]
        keep = t <= end
        a.plot(t[keep], y[keep], color=PALETTE[0], marker=".", ms=4, lw=1.5, label="training loss (seed 0)")
        if len(t) > 1:
            a.plot(t[keep], y[0] - (y[0] - y[1]) / (t[1] - t[0]) * t[keep], color=PALETTE[7], ls="--", lw=1,
                   label="the initial rate of decrease, continued")
        a.set_ylim(min(y[keep]) - 0.02, y[0] + 0.02)
        a.set_xlabel("time = Σ lr (linear)")
        a.set_ylabel(f"{r.config.model.loss} loss")
        a.grid(True, alpha=0.3)
        a.set_title(f"linear time: peak rate / initial rate = {found['acceleration']:.2g}×", fontsize=10)
        a.legend(fontsize=7)
        _selector_panel(ax[0, 2], r, s_star)
        ax[0, 2].set_xlabel("time = Σ lr")
        _copier_classifier_panel(ax[0, 3], r, s_star, {}, "positional RPE mass and a")
        ax[0, 3].set_xlabel("time = Σ lr")
        figs.append(finish(fig, run.path / "figures" / (f"full{sfx}.png" if sfx else "full.png")))
    figs.append(rpe_figure(run))
    return figs
