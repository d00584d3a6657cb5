"""The Python API: `run`, `load_run`, `recompute_claims`, `reproduce`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import subprocess
from pathlib import Path
from typing import Callable

import torch
import yaml

from icldyn.config import apply_overrides
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS
from icldyn.experiments.base import sweep_variants
from icldyn.store import Run, RunDir, load_run, write_json, write_text
from icldyn.train.trainer import Trainer, resolve_device
from icldyn.workers import default_workers, train_in_workers


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    import numpy

    import icldyn

    return {"icldyn": icldyn.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "device": str(device),
            "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "git_commit": _git_commit(), "start": _now(),
            "end": None, "complete": False}


def _mark(rd: RunDir, **fields) -> None:
    env_file = rd.path / "env.json"
    env = json.loads(env_file.read_text()) if env_file.exists() else {}
    env.update(fields)
    write_json(env_file, env)


def _train_one(exp, config, rd: RunDir, device, resume: bool, progress, label: str) -> None:
    rd.create()
    write_text(rd.path / "config.yaml", config.to_yaml())
    if not (rd.path / "env.json").exists():
        write_json(rd.path / "env.json", environment(device))
    task = exp.build_task(config)
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    model = exp.build_model(config, task, seeds)
    cb = (lambda step, total, loss, secs: progress(label, step, total, loss)) if progress else None
    trainer = Trainer(config, task, model, rd, exp.probes(config, task), device=device, progress=cb,
                      records=exp.record_steps(config))
    trainer.fit(resume=resume)
    exp.after_training(rd, config, task, model, device)
    _mark(rd, end=_now(), complete=True)


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
        _train_one(exp, config, top, dev, resume, progress, experiment)
    else:
        top.create()
        write_text(top.path / "config.yaml", config.to_yaml())
        write_text(top.path / "sweep.yaml", yaml.safe_dump({"variants": variants, "swept": sweep or {}},
                                                           sort_keys=False))
        if not (top.path / "env.json").exists():
            write_json(top.path / "env.json", environment(dev))
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
                _train_one(exp, cfg, vrd, dev, res, progress, label)
    result = load_run(top.path)
    recompute_claims(result)
    _mark(top, end=_now(), complete=True)
    return load_run(top.path)


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
    lines = ["# icldyn reproduction (quick presets)", "", f"Date: {_now()}", "",
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
