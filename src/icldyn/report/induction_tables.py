"""Closing tables and figures of induction-ngram / induction-full, from stored runs.

closing.md / closing.png   per view: a(t), the code loss on the training set and the validation split,
                           the selector's normalised c² per subset at epochs 10, 100, 1,000, 10,000,
                           50,000 (those the run reached; the nearest record), and each head's final
                           positional mass per offset (analysis.induction.closing_table, copier_table)
ingredients.md / .png      preset `ingredients`: the plateau test per single-ingredient ablation and
                           the training losses (analysis.induction.ingredient_table)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from icldyn.analysis import induction as an
from icldyn.analysis.runs import metric_curve
from icldyn.report.plots import PALETTE, finish, new_figure
from icldyn.store import write_text


def markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A DataFrame as a GitHub markdown table (floats to `digits` significant digits)."""
    if frame.empty:
        return "(no rows)\n"
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}g}"
        if isinstance(v, (tuple, list)):
            return "(" + ", ".join(fmt(x) for x in v) + ")"
        return str(v)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def closing_report(run) -> list:
    """figures/closing.md (tables) and figures/closing.png (a, code losses, selector shares per view)."""
    table, copier = an.closing_table(run), an.copier_table(run)
    masses = copier.pivot_table(index=["view", "head"], columns="offset", values="mass").reset_index() \
        if len(copier) else copier
    masses.columns = [c if isinstance(c, str) else f"offset {c}" for c in masses.columns]
    text = ("# Closing tables\n\nAt the recorded step nearest to each epoch (log-spaced records); "
            "`loss_train` is in the run's own loss (`loss_train_kind`), `loss_val_code` the code loss on the "
            "validation split; `share/<subset>` the normalised c².\n\n" + markdown(table)
            + "\n## Copier: final positional mass per head and offset\n\n" + markdown(masses))
    path = run.path / "figures" / "closing.md"
    write_text(path, text)
    views = an.loss_views(run)
    fig, ax = new_figure(len(views), 3, size=(4.6, 3.4))
    for row, (sfx, r) in enumerate(views):
        seed = r.seeds[0]
        t, a = metric_curve(r, "probe/a", seed, positive_time=True)
        ax[row, 0].plot(t, a, color=PALETTE[2])
        ax[row, 0].set_ylabel("classifier scale a")
        ax[row, 0].set_title(f"{sfx or 'run'}: a(t)", fontsize=9)
        for name, label, c in (("loss/train", f"training ({r.config.model.loss} loss)", PALETTE[0]),
                               ("loss/val/code", "validation (code loss)", "k")):
            t, y = metric_curve(r, name, seed, positive_time=True)
            ax[row, 1].plot(t, y, color=c, label=label)
        ax[row, 1].set_title(f"{sfx or 'run'}: losses", fontsize=9)
        ax[row, 1].legend(fontsize=7)
        for k, n in enumerate(an.selector_subsets(r)):
            t, y = metric_curve(r, f"probe/selector/{n}", seed, positive_time=True)
            ax[row, 2].plot(t, y, color=PALETTE[k % 10], label=f"{{{n}}}", lw=1.2)
        ax[row, 2].set_ylim(-0.02, 1.02)
        ax[row, 2].set_title(f"{sfx or 'run'}: normalised c² per subset", fontsize=9)
        ax[row, 2].legend(fontsize=6, ncol=2)
        for a_ in ax[row]:
            a_.set_xscale("log")
            a_.set_xlabel("time = Σ lr")
            a_.grid(True, alpha=0.3)
    return [path, finish(fig, run.path / "figures" / "closing.png")]


def ingredients_report(run) -> list:
    """figures/ingredients.md (the plateau test per ablation) and ingredients.png (training losses,
    normalised by the initial loss: the paper model with one ingredient on; the authors' with one off)."""
    table = an.ingredient_table(run)
    path = run.path / "figures" / "ingredients.md"
    write_text(path, "# Single-ingredient ablations of the full model\n\n`paper+X`: the paper-faithful model "
               "with the authors' ingredient X alone; `code-X`: the authors' run without X. Plateau test: "
               "analysis.induction.plateau_then_emergence (as full_plateau_then_emergence).\n\n" + markdown(table))
    views = an.loss_views(run)
    fig, ax = new_figure(1, 2, size=(6.0, 4.4))
    for col, (base, sign) in enumerate((("[paper]", "+"), ("[code]", "-"))):
        picked = [(s, r) for s, r in views if s in ("[paper]", "[code]") or s.startswith(base[:-1] + sign)]
        for k, (sfx, r) in enumerate(picked):
            t, y = metric_curve(r, "loss/train", r.seeds[0], positive_time=True)
            if not len(t):
                continue
            bold = sfx == base
            ax[0, col].plot(t, y / y[0], color="k" if bold else PALETTE[k % 10], lw=2.4 if bold else 1.3,
                            ls="--" if sfx in ("[paper]", "[code]") and not bold else "-", label=sfx)
        ax[0, col].set_xscale("log")
        ax[0, col].set_xlabel("time = Σ lr (lr 1e-3: epoch/1000)")
        ax[0, col].set_ylabel("training loss / its initial value")
        ax[0, col].grid(True, alpha=0.3)
        ax[0, col].legend(fontsize=7)
        ax[0, col].set_title("paper-faithful full model, one ingredient of the authors' on" if sign == "+"
                             else "the authors' full model, one ingredient off", fontsize=10)
    return [path, finish(fig, run.path / "figures" / "ingredients.png")]
