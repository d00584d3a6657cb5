"""The Python API: `run`, `load_run`, `recompute_claims`, `reproduce`.

Composing one run is `runner.train_one`; this module adds reuse of complete runs, sweeps over
variants (in worker processes), claims and figures, and the reproduction summary.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Callable

import yaml

from icldyn import store
from icldyn.config import apply_overrides
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS, config_from_dict
from icldyn.experiments.base import sweep_variants
from icldyn.runner import mark, now, start_run_dir, train_one
from icldyn.store import Run, RunDir, write_json, write_text
from icldyn.train.trainer import resolve_device
from icldyn.workers import default_workers, train_in_workers


def run(experiment: str, preset: str = "quick", overrides: dict | list | None = None, *, seeds: int | None = None,
        device: str | None = None, out: str | Path = "runs", resume: bool = False,
        progress: Callable | None = None, sweep: dict[str, list] | None = None, workers: int | None = 1) -> Run:
    """Train `experiment`'s models, record, and compute its claims; return the stored run.

    A complete run directory with the same config is reused; an incomplete one needs resume=True.
    `progress(label, step, total, loss)` is called after every update. `sweep` ({key: [values]})
    trains the product of the values into one sweep directory, replacing the experiment's own
    variants; claims that span configs read it. `workers`: processes training the variants side
    by side (None: one per core on CPU, see `icldyn.workers`); 1 trains them here, one by one.
    """
    exp = EXPERIMENTS[experiment]
    config = exp.config(preset, overrides, seeds=seeds, device=device)
    dev = resolve_device(config.device)
    name = config.run_name()
    if sweep:
        for key, values in sweep.items():
            apply_overrides(config, {key: values[0]} if values else {})  # checks the key
            if not isinstance(values, list) or not values:
                raise UsageError(f"--sweep {key}: give a non-empty list of values, e.g. {key}=[1,2,3]")
        digest = hashlib.sha256(json.dumps(sweep, sort_keys=True, default=str).encode()).hexdigest()[:6]
        name = f"{name}-sweep{digest}"
    top = RunDir(Path(out) / experiment / name)
    if top.is_complete:
        return load_run(top.path)
    if top.is_run and not resume:
        raise UsageError(f"{top.path} holds an incomplete run of this config; continue it with --resume "
                         f"(or delete the directory to start over)")
    variants = sweep_variants(sweep) if sweep else exp.variants(config)
    if variants is None:
        train_one(exp, config, top, dev, resume, progress, experiment)
    else:
        start_run_dir(top, config, dev)
        write_text(top.path / "sweep.yaml", yaml.safe_dump({"variants": variants, "swept": sweep or {}},
                                                           sort_keys=False))
        jobs = []
        for name, ov in variants.items():
            vrd = RunDir(top.path / "variants" / name)
            if not vrd.is_complete:
                jobs.append((f"{experiment}:{name}", apply_overrides(config, ov), vrd, resume and vrd.is_run))
        n_workers = default_workers(dev, len(jobs)) if workers is None else min(workers, len(jobs))
        if n_workers > 1:
            train_in_workers(experiment, [(label, cfg, vrd.path, res) for label, cfg, vrd, res in jobs], dev,
                             n_workers, progress)
        else:
            for label, cfg, vrd, res in jobs:
                train_one(exp, cfg, vrd, dev, res, progress, label)
    result = load_run(top.path)
    recompute_claims(result)
    mark(top, end=now(), complete=True)
    return load_run(top.path)


def load_run(path: str | Path) -> Run:
    """Load a stored run (or sweep) directory with its config typed by its experiment's config class."""
    return store.load_run(path, config_from_dict)


def recompute_claims(run: Run | str | Path) -> list[dict]:
    """Compute the claims of a stored run from its files, write claims.json and its figures."""
    run = run if isinstance(run, Run) else load_run(run)
    exp = EXPERIMENTS[run.config.experiment]
    claims = [c.to_dict() for c in exp.claims(run)]
    write_json(run.path / "claims.json", {"experiment": exp.name, "run": str(run.path), "claims": claims})
    run.claims = claims
    (run.path / "figures").mkdir(exist_ok=True)
    exp.figures(run)
    return claims


def reproduce(experiments: list[str] | None = None, *, out: str | Path = "runs", progress=None,
              workers: int | None = 1) -> Path:
    """Quick presets of all (or the named) experiments; writes <out>/reproduce-<date>/summary.md."""
    names = experiments or list(EXPERIMENTS)
    for n in names:
        EXPERIMENTS[n]  # unknown names fail before anything runs
    lines = ["# icldyn reproduction (quick presets)", "", f"Date: {now()}", "",
             "| experiment | claim | measured | expected | verdict |", "|---|---|---|---|---|"]
    for n in names:
        r = run(n, "quick", out=out, progress=progress, workers=workers)
        for c in r.claims:
            verdict = {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]]
            m = "—" if c["measured"] is None else f"{c['measured']:.4g}"
            lines.append(f"| {n} | {c['id']}: {c['statement']} | {m} | {c['expected']} | {verdict} |")
        lines.append(f"|  | run directory: `{r.path}` |  |  |  |")
    target = Path(out) / f"reproduce-{dt.date.today().isoformat()}"
    target.mkdir(parents=True, exist_ok=True)
    write_text(target / "summary.md", "\n".join(lines) + "\n")
    return target / "summary.md"


def sweep(spec, *, backend: str = "local", address: str | None = None, max_parallel: int | None = None,
          out: str | Path = "runs", progress: Callable | None = None, status: Callable | None = None,
          storage: str = "auto", cluster: str | None = None):
    """Run a sweep spec (a YAML path, a dict or a `SweepSpec`) on `backend`; return (summary, run).

    Complete members are skipped, incomplete ones resume from their checkpoint; when every member is
    complete the sweep directory's claims and figures are computed and it is marked complete (run is
    then the loaded sweep, else None). See `icldyn.sweep`.
    """
    from icldyn import sweep as sweeps

    spec = spec if isinstance(spec, sweeps.SweepSpec) else sweeps.load_spec(spec)
    plan = sweeps.plan(spec, out)
    summary = sweeps.run_sweep(plan, backend, address=address, max_parallel=max_parallel, progress=progress,
                               status=status, storage=storage, cluster=cluster)
    if not summary.ok:
        return summary, None
    result = load_run(plan.path)
    recompute_claims(result)
    mark(RunDir(plan.path), end=now(), complete=True)
    return summary, load_run(plan.path)
