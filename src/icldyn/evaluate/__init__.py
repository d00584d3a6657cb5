"""`icldyn evaluate RUN_DIR --shift NAME[=value] ...`: a stored run's trained model (all seeds at once)
and its task's estimators on shifted prompts (issue 20).

For each shift (and `none`, the reference), prompts are drawn for every number of in-context
examples m of the family's grid; the model and every estimator predict the query, and the mean
per-prompt loss with its standard error is one row of

    <run>/evaluate/<shift set>[@step<S>]/
        curves.parquet   predictor, x_name = n_examples, x = m, metric, value, stderr, seed
                         (−1 for estimators and theory), shift (the condition: `name` or `name=value`)
        claims.json      where the theory predicts the model's value (evaluate/claims.py)
        figures/error_vs_examples.png
        evaluate.yaml    the settings (shifts, step, prompts, seed, estimators, grids), wall time

Nothing the run wrote before is touched; every file is written atomically.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from icldyn import store
from icldyn.errors import UsageError
from icldyn.estimators import ESTIMATORS
from icldyn.shifts import NONE, Shift, family_of, parse_shift
from icldyn.trained import Trained, load_trained

COLUMNS = store.CURVE_COLUMNS + ["shift"]
NO_SEED = -1
CHUNK = 4096          # prompts per model call: bounds a decoder's activations on long prompts
DEFAULT_PROMPTS = {"linear-regression": 10_000}
OTHER_PROMPTS = 2_000


@dataclass
class Evaluation:
    """What one `icldyn evaluate` call produced (also what its claims are measured on)."""

    trained: Trained
    shifts: list[tuple[Shift, object]]
    curves: pd.DataFrame
    path: Path
    settings: dict = field(default_factory=dict)
    claims: list[dict] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)


def estimator_names(trained: Trained) -> list[str]:
    """The experiment's curve baselines (its module's CURVE_ESTIMATORS) when it names them, else the
    task's estimators."""
    module = sys.modules.get(type(trained.experiment).__module__)
    names = getattr(module, "CURVE_ESTIMATORS", None) or trained.task.estimators
    return [n for n in names if n in ESTIMATORS]


def set_name(specs: Sequence[str], step: int | None) -> str:
    """The folder of one evaluation: the shift specs joined by '+' (and @step<S> for a non-final step)."""
    name = "+".join(s.replace("/", "_") for s in specs)
    return name + (f"@step{step}" if step is not None else "")


def _chunked(model, batch) -> torch.Tensor:
    """model(batch) evaluated CHUNK prompts at a time: (E, B, ...)."""
    return torch.cat([model(batch.select(slice(s, s + CHUNK))) for s in range(0, batch.x.shape[1], CHUNK)], 1)


def _rows(name: str, loss: torch.Tensor, m: int, seeds: Sequence[int], label: str, family) -> list[tuple]:
    """One row per seed (loss (E, B)) of the mean loss and its standard error over prompts."""
    mean, se = loss.mean(-1), loss.std(-1) / loss.shape[-1] ** 0.5
    return [(name, family.x_name, int(m), family.metric, float(mean[e]), float(se[e]), int(s), label)
            for e, s in enumerate(seeds)]


@torch.no_grad()
def shift_rows(trained: Trained, shift: Shift, value, n_prompts: int, estimators: Sequence[str],
               device="cpu") -> list[tuple]:
    """The model's (per seed) and every estimator's loss at every m of the shift's grid."""
    family, task = family_of(trained.task), trained.task
    grid = family.grid(trained, shift, value)
    label, name = shift.label(value), trained.config.model.name
    ests = {n: ESTIMATORS[n](task) for n in estimators}
    own = getattr(sys.modules.get(type(trained.experiment).__module__), "shift_estimators", None)
    if own is not None:                  # the experiment's own baselines (e.g. the GIH at the run's S*)
        ests.update({n: e for n, e in own(trained.config, task).items() if n in ests})
    rows = []
    for m, batch in family.prompts(task, shift, value, grid, n_prompts, trained.config.eval_seed + 1, device):
        rows += _rows(name, family.score(_chunked(trained.model, batch), batch), m, trained.seeds, label, family)
        for est_name, est in ests.items():
            rows += _rows(est_name, family.score(est(batch), batch), m, [NO_SEED], label, family)
    return rows


def evaluate_run(run_dir: str | Path, shifts: Sequence[str], *, step: int | None = None,
                 prompts: int | None = None, estimators: Sequence[str] | None = None,
                 device: str = "cpu", figures: bool = True) -> Evaluation:
    """Evaluate the stored checkpoint of `step` (default: the last) under each shift; write the
    results under <run>/evaluate/<set>/ and return them. Bad input: a UsageError (one sentence)."""
    from icldyn.evaluate.claims import evaluate_claims, theory_rows

    if not shifts:
        raise UsageError("give at least one --shift NAME[=value]")
    if prompts is not None and prompts < 2:
        raise UsageError(f"prompts must be an integer ≥ 2 (got {prompts})")
    t0 = time.perf_counter()
    trained = load_trained(run_dir, step)
    parsed = [parse_shift(trained.task, s) for s in shifts]
    if all(s.name != NONE for s, _ in parsed):
        parsed.insert(0, parse_shift(trained.task, NONE))
    n_prompts = prompts or DEFAULT_PROMPTS.get(trained.task.name, OTHER_PROMPTS)
    names = list(estimators) if estimators is not None else estimator_names(trained)
    for n in names:
        ESTIMATORS[n]                      # an unknown name: one sentence listing the known ones
    trained.model.to(device)
    rows = []
    for shift, value in parsed:
        rows += shift_rows(trained, shift, value, n_prompts, names, device)
    curves = pd.DataFrame(rows, columns=COLUMNS)
    theory = theory_rows(trained, parsed, curves)
    if len(theory):
        curves = pd.concat([curves, theory], ignore_index=True)
    curves = curves.astype({"x": "int64", "value": "float64", "stderr": "float64", "seed": "int64"})
    shifted = [s.label(v) for s, v in parsed if s.name != NONE]
    path = trained.run.path / "evaluate" / set_name(shifted or [NONE], step)  # `--shift none` alone: evaluate/none/
    ev = Evaluation(trained, parsed, curves, path)
    store.write_table(path / "curves.parquet", curves, COLUMNS)
    ev.claims = [c.to_dict() for c in evaluate_claims(ev)]
    store.write_json(path / "claims.json", {"experiment": trained.config.experiment, "run": str(trained.run.path),
                                            "step": trained.step, "claims": ev.claims})
    if figures:
        from icldyn.evaluate.figures import error_figure

        ev.figures = [error_figure(ev)]
    ev.settings = {"shifts": [s.label(v) for s, v in parsed], "step": trained.step, "prompts": n_prompts,
                   "eval_seed": trained.config.eval_seed + 1, "estimators": names, "model": trained.config.model.name,
                   "seeds": trained.seeds, "device": str(device), "metric": family_of(trained.task).metric,
                   "grids": {s.label(v): family_of(trained.task).grid(trained, s, v) for s, v in parsed},
                   "wall_s": round(time.perf_counter() - t0, 3)}
    _write_yaml(path / "evaluate.yaml", ev.settings)
    return ev


def _write_yaml(path: Path, obj: dict) -> None:
    import yaml

    from icldyn.version import __version__

    store.write_text(path, yaml.safe_dump({"icldyn": __version__, **obj}, sort_keys=False, allow_unicode=True))


def stored_evaluations(run_path: str | Path) -> list[Path]:
    """The evaluation folders of a run directory (those with a curves.parquet), sorted."""
    root = Path(run_path) / "evaluate"
    return sorted(p.parent for p in root.glob("*/curves.parquet")) if root.is_dir() else []


__all__ = ["COLUMNS", "Evaluation", "estimator_names", "evaluate_run", "shift_rows", "stored_evaluations"]
