"""The Python API: `run`, `load_run`, `recompute_claims`, `reproduce`; `report`, `runs`, `compare`, `export`.

Composing one run is `runner.train_one`; this module adds reuse of complete runs, sweeps over
variants (in worker processes), claims and figures, and the reproduction summary.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

from icldyn import store
from icldyn.config import apply_overrides
from icldyn.errors import EnvironmentFailure, UsageError
from icldyn.experiments import EXPERIMENTS, config_from_dict
from icldyn.experiments.base import sweep_variants
from icldyn.runner import check_resources, mark, now, start_run_dir, train_one
from icldyn.verify import CheckResult, check_run_dir
from icldyn.store import Run, RunDir, write_json, write_text
from icldyn.train.trainer import resolve_device
from icldyn.workers import default_workers, run_tasks, train_in_workers, train_job


def run(experiment: str, preset: str = "quick", overrides: dict | list | None = None, *, seeds: int | None = None,
        device: str | None = None, out: str | Path = "runs", resume: bool = False,
        progress: Callable | None = None, sweep: dict[str, list] | None = None, workers: int | None = 1,
        validate_only: bool = False) -> Run | None:
    """Train `experiment`'s models, record, and compute its claims; return the stored run.

    A complete run directory with the same config is reused; an incomplete one needs resume=True.
    `progress(label, step, total, loss)` is called after every update. `sweep` ({key: [values]})
    trains the product of the values into one sweep directory, replacing the experiment's own
    variants; claims that span configs read it. `workers`: processes training the variants side
    by side (None: one per core on CPU, see `icldyn.workers`); 1 trains them here, one by one.
    `validate_only`: check everything (config, sweep values, memory) and return None, writing nothing.
    """
    plan = _plan(experiment, preset, overrides, seeds=seeds, device=device, out=out, resume=resume, sweep=sweep,
                 validate_only=validate_only)
    if validate_only or plan.done:
        return None if validate_only else load_run(plan.top.path)
    if plan.variants is None:
        train_one(plan.exp, plan.config, plan.top, plan.dev, resume, progress, experiment)
    else:
        with plan.top.lock():
            jobs = plan.variant_jobs()
            n_workers = default_workers(plan.dev, len(jobs)) if workers is None else min(workers, len(jobs))
            if n_workers > 1:
                train_in_workers(experiment, [(label, cfg, vrd.path, res) for label, cfg, vrd, res in jobs],
                                 plan.dev, n_workers, progress)
            else:
                for label, cfg, vrd, res in jobs:
                    train_one(plan.exp, cfg, vrd, plan.dev, res, progress, label)
    return finish_run(plan.top.path)


@dataclass
class _Plan:
    """What `run` will train: the run (or sweep) directory `top` and, for a sweep, its variants."""
    experiment: str
    exp: object
    config: object
    dev: torch.device
    top: RunDir
    variants: dict | None
    sweep: dict | None
    resume: bool
    done: bool  # `top` holds a complete run of this config

    def variant_jobs(self) -> list[tuple[str, object, RunDir, bool]]:
        """Start the sweep directory; [(label, config, run dir, resume)] of its incomplete variants."""
        start_run_dir(self.top, self.config, self.dev)
        write_text(self.top.path / "sweep.yaml", yaml.safe_dump({"variants": self.variants, "swept": self.sweep or {}},
                                                                sort_keys=False))
        jobs = []
        for name, ov in self.variants.items():
            vrd = RunDir(self.top.path / "variants" / name)
            if not vrd.is_complete:
                jobs.append((f"{self.experiment}:{name}", apply_overrides(self.config, ov), vrd,
                             self.resume and vrd.is_run))
        return jobs


def _plan(experiment: str, preset: str, overrides, *, seeds, device, out, resume: bool, sweep,
          validate_only: bool = False) -> _Plan:
    """Every check of `run` before it writes: config, sweep values, memory and (unless
    `validate_only`, which writes nothing) the output folder and the directory's state."""
    exp = EXPERIMENTS[experiment]
    _screen_sizes(overrides)
    _screen_sizes({k: v for k, vs in (sweep or {}).items() if isinstance(vs, list) for v in vs})
    config = exp.config(preset, overrides, seeds=seeds, device=device)
    dev = resolve_device(config.device)
    name = config.run_name()
    configs = [config]
    if sweep:
        for key, values in sweep.items():
            if not isinstance(values, list) or not values:
                raise UsageError(f"--sweep {key}: give a non-empty list of values, e.g. {key}=[1,2,3] "
                                 f"(got {values!r})")
        configs = [apply_overrides(config, ov) for ov in sweep_variants(sweep).values()]  # checks every value
        digest = hashlib.sha256(json.dumps(sweep, sort_keys=True, default=str).encode()).hexdigest()[:6]
        name = f"{name}-sweep{digest}"
    for cfg in configs:
        check_resources(cfg, dev, exp.dtype(cfg).itemsize)
    top = RunDir(Path(out) / experiment / name)
    variants = sweep_variants(sweep) if sweep else exp.variants(config)
    plan = _Plan(experiment, exp, config, dev, top, variants, sweep, resume, done=False)
    if not validate_only:
        _check_directory(plan, Path(out))
    return plan


def _check_directory(plan: _Plan, out: Path) -> None:
    """The output folder is writable, the directory is not another live writer's, and an incomplete
    run is only continued when asked; marks `plan.done` for a complete one."""
    _check_out(out)
    top = plan.top
    holder = top.locked_by_other() if top.path.is_dir() else None
    if holder:
        raise UsageError(f"{top.path} is being written by another live process (pid {holder}); wait for it "
                         f"to finish or stop it, then run again with --resume")
    plan.done = top.is_complete
    if top.is_run and not plan.done and not plan.resume:
        raise UsageError(f"{top.path} holds an incomplete run of this config; continue it with --resume "
                         f"(or delete the directory to start over)")


def finish_run(path: str | Path) -> Run:
    """After training: the claims, figures and page of the run (or sweep) at `path`, marked complete."""
    top = RunDir(Path(path))
    recompute_claims(load_run(top.path))
    mark(top, end=now(), complete=True)
    _write_report(load_run(top.path), recursive=False)  # the page's environment: complete, end time
    return load_run(top.path)


# sizes (dimensions, lengths, counts of prompts) past this are refused before the config is even built:
# validating some of them costs O(size) (e.g. task.d's default eigenvalue list), and none could fit
SIZE_KEYS = {"d", "n_points", "d_model", "n_states", "batch_size", "eval_prompts", "eval_prompts_during",
             "dataset_size", "n_heads", "n_layers", "n_tasks", "vocab_size", "k"}
MAX_SIZE = 10**8


def _screen_sizes(overrides: dict | list | None) -> None:
    from icldyn.config import parse_value

    if isinstance(overrides, list):
        overrides = dict(item.split("=", 1) for item in overrides if "=" in item)
        overrides = {k.strip(): parse_value(v.strip()) for k, v in overrides.items()}
    for key, value in (overrides or {}).items():
        if key.split(".")[-1] in SIZE_KEYS and isinstance(value, (int, float)) and value > MAX_SIZE:
            raise UsageError(f"{key}={value:g} is too large to fit in memory (a size may be at most "
                             f"{MAX_SIZE:.0e}); lower it")


def _check_out(out: Path) -> None:
    """The output root must exist or be creatable as a folder: else a UsageError, before any training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the output folder {out} ({err.strerror or type(err).__name__}); "
                         f"pass --out a folder you can write to") from None
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"the output folder {out} is not a writable folder; pass --out a folder you can write to")


def load_run(path: str | Path) -> Run:
    """Load a stored run (or sweep) directory with its config typed by its experiment's config class."""
    return store.load_run(path, config_from_dict)


def check(path: str | Path) -> CheckResult:
    """`icldyn check`: the store's verifier with configs typed (so the config hash is compared)."""
    return check_run_dir(path, config_from_dict)


def recompute_claims(run: Run | str | Path) -> list[dict]:
    """Compute the claims of a stored run from its files, write claims.json and its figures."""
    run = run if isinstance(run, Run) else load_run(run)
    exp = EXPERIMENTS[run.config.experiment]
    claims = [c.to_dict() for c in exp.claims(run)]
    write_json(run.path / "claims.json", {"experiment": exp.name, "run": str(run.path), "claims": claims})
    run.claims = claims
    try:
        (run.path / "figures").mkdir(exist_ok=True)
        exp.figures(run)
        _write_report(run)
    except OSError as err:
        raise EnvironmentFailure(f"cannot write the figures of {run.path} ({err.strerror or type(err).__name__}); "
                                 f"make the folder writable and run `icldyn claims {run.path}`") from None
    return claims


def reproduce(experiments: list[str] | None = None, *, out: str | Path = "runs", progress=None,
              workers: int | None = 1) -> Path:
    """Quick presets of all (or the named) experiments; writes <out>/reproduce-<date>/summary.md.

    `workers` (None: one per core on CPU, one on a GPU): processes sharing the runs of all the
    experiments (their variants, or the run itself), the longest first; 1 trains them here."""
    names = experiments or list(EXPERIMENTS)
    for n in names:
        EXPERIMENTS[n]  # unknown names fail before anything runs
    n_workers = default_workers(resolve_device("auto"), 10**9) if workers is None else workers
    if n_workers > 1:
        runs = _reproduce_in_workers(names, Path(out), n_workers, progress)
    else:
        runs = {n: run(n, "quick", out=out, progress=progress, workers=1) for n in names}
    return _write_reproduction(runs, Path(out))


def _reproduce_in_workers(names: list[str], out: Path, workers: int, progress) -> dict[str, Run]:
    """The runs of every experiment as one queue of jobs for `workers` processes, the longest first
    (`Experiment.quick_seconds` over its number of runs), so no core idles while one experiment's
    variants finish; an experiment's claims and figures are computed in a worker as soon as its
    last run ends. A sweep directory stays locked by this process until then, as with `run`."""
    plans = {n: _plan(n, "quick", None, seeds=None, device=None, out=out, resume=False, sweep=None) for n in names}
    with ExitStack() as locks:
        queued = []  # (cost estimate, experiment, task)
        for n, plan in plans.items():
            if plan.done:
                continue
            if plan.variants is None:
                jobs = [(n, plan.config, plan.top, False)]
            else:
                locks.enter_context(plan.top.lock())
                jobs = plan.variant_jobs()
            for label, cfg, rd, res in jobs:
                task = (train_job, (n, cfg, str(rd.path), str(plan.dev), res, label))
                queued.append((EXPERIMENTS[n].quick_seconds / len(jobs), n, task))
        queued.sort(key=lambda q: -q[0])
        owner = [n for _, n, _ in queued]
        left = Counter(owner)

        def then(i: int, _result) -> list:
            if i >= len(owner):
                return []  # a finishing task
            left[owner[i]] -= 1
            return [(_finish_in_worker, (str(plans[owner[i]].top.path),))] if left[owner[i]] == 0 else []

        if len(queued) == 1:  # one run: no worker to spawn
            fn, args = queued[0][2]
            fn(progress, *args)
            finish_run(plans[owner[0]].top.path)
        elif queued:  # (none: every run was complete already)
            run_tasks([task for _, _, task in queued], min(workers, len(queued)), progress, then)
    return {n: load_run(plans[n].top.path) for n in names}


def _finish_in_worker(report: Callable, path: str) -> str:
    finish_run(path)
    return path


def _write_reproduction(runs: dict[str, Run], out: Path) -> Path:
    entries = []
    lines = ["# icldyn reproduction (quick presets)", "", f"Date: {now()}", "",
             "| experiment | claim | measured | expected | verdict |", "|---|---|---|---|---|"]
    for n, r in runs.items():
        for c in r.claims:
            verdict = {True: "pass", False: "FAIL", None: "n/a"}[c["passed"]]
            m = "—" if c["measured"] is None else f"{c['measured']:.4g}"
            lines.append(f"| {n} | {c['id']}: {c['statement']} | {m} | {c['expected']} | {verdict} |")
        lines.append(f"|  | run directory: `{r.path}` |  |  |  |")
        entries.append({"experiment": n, "title": EXPERIMENTS[n].title, "path": r.path, "claims": r.claims,
                        "wall_s": _run_seconds(r)})
    target = out / f"reproduce-{dt.date.today().isoformat()}"
    target.mkdir(parents=True, exist_ok=True)
    write_text(target / "summary.md", "\n".join(lines) + "\n")
    from icldyn.report.html import write_index

    write_index(entries, target / "index.html")
    return target / "summary.md"


# -- pages, the run catalogue, comparison, export -----------------------------------------------------

def _wall_seconds(env: dict) -> float | None:
    try:
        return (dt.datetime.fromisoformat(env["end"]) - dt.datetime.fromisoformat(env["start"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def _run_seconds(r: Run) -> float | None:
    """Seconds an experiment's runs took, as one core's time: the run's start to end, or for a sweep
    its variants' durations summed plus its finishing (claims, figures: from the last variant's end
    to its own). The same whether its runs shared `reproduce`'s workers with other experiments or not."""
    if not r.variants:
        return _wall_seconds(r.env)
    parts = [_wall_seconds(v.env) for v in r.variants.values()]
    try:
        last = max(dt.datetime.fromisoformat(v.env["end"]) for v in r.variants.values())
        finishing = (dt.datetime.fromisoformat(r.env["end"]) - last).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None
    return None if None in parts else sum(parts) + max(finishing, 0.0)


def _ensure_config_json(run: Run) -> None:
    """config.json (the resolved config as JSON, for DuckDB) beside config.yaml, in runs made before it."""
    for sub in [run, *run.variants.values()]:
        if not (sub.path / "config.json").exists():
            write_json(sub.path / "config.json", store.read_config_dict(sub.path))


def _write_report(run: Run, recursive: bool = True) -> Path | None:
    """report.html of a run after its claims; a failure to draw the page never fails the run."""
    import warnings

    try:
        return report(run, recursive=recursive)
    except Exception as err:  # noqa: BLE001 - the run and its claims are kept whatever the page does
        warnings.warn(f"report.html not written for {run.path}: {err}", RuntimeWarning, stacklevel=2)
        return None


def report(run: Run | str | Path, *, recursive: bool = True) -> Path:
    """(Re)build a run's report.html (and, with `recursive`, its variants') from the stored run alone;
    returns its path."""
    from icldyn.report.html import write_run_report

    run = run if isinstance(run, Run) else load_run(run)
    _ensure_config_json(run)
    exp = EXPERIMENTS[run.config.experiment]
    return write_run_report(run, title=exp.title, paper=exp.paper, recursive=recursive)


def evaluate(run_dir: str | Path, shifts: list[str], *, step: int | None = None, prompts: int | None = None,
             device: str | None = None):
    """`icldyn evaluate`: the stored checkpoint of `step` (default: the last) and the task's estimators
    on shifted prompts; results under <run>/evaluate/<shift set>/ (see `icldyn.evaluate`)."""
    from icldyn.evaluate import evaluate_run

    if device not in (None, "auto", "cpu", "cuda"):
        raise UsageError(f"device must be one of auto, cpu, cuda (got {device!r})")
    return evaluate_run(run_dir, shifts, step=step, prompts=prompts, device=resolve_device(device or "cpu"))


def runs(root: str | Path = "runs", *, experiment: str | None = None, where: list[str] | str | None = None):
    """The run directories under `root` as a DataFrame (experiment, config hash, seeds, preset, state,
    claims passing/total, wall time, date), queried in place with DuckDB; `where`: conditions on
    config values (`"train.lr > 0.01"`)."""
    from icldyn.analysis.catalog import catalog

    if experiment is not None:
        EXPERIMENTS[experiment]  # an unknown name stops here, naming the known ones
    return catalog(root, experiment=experiment, where=[where] if isinstance(where, str) else where,
                   parse_config=config_from_dict)


def compare(run_dirs: list[str | Path], metrics: list[str] | None = None, *, out: str | Path = "compare.png",
            axis: str = "step") -> dict:
    """Several runs side by side: their metrics overlaid on one figure (`out`, a PNG), their claims, the
    config keys in which they differ. Returns {figure, labels, claims: (ids, table), differences}."""
    from icldyn.report.compare import claims_side_by_side, compare_figure, config_differences

    if len(run_dirs) < 2:
        raise UsageError("compare needs at least two run directories")
    if axis not in ("step", "time"):
        raise UsageError(f"--axis {axis!r}: allowed values are step, time")
    loaded = [load_run(p) for p in run_dirs]
    labels = [f"{Path(p).name} ({r.config.experiment})" for p, r in zip(run_dirs, loaded)]
    metrics = metrics or ["loss/test"]
    known = set().union(*(set(r.metrics["name"].unique()) for r in loaded if len(r.metrics)))
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise UsageError(f"--metric {unknown[0]!r} is in none of these runs; recorded: {', '.join(sorted(known))}")
    return {"figure": compare_figure(loaded, labels, metrics, Path(out), axis=axis), "labels": labels,
            "claims": claims_side_by_side(loaded), "differences": config_differences(loaded)}


def export(run_dir: str | Path, tensorboard: str | Path) -> list[Path]:
    """Write a run's metrics as TensorBoard event files under `tensorboard` (one run per seed)."""
    from icldyn.report.export import export_tensorboard

    return export_tensorboard(load_run(run_dir), tensorboard)


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
    _write_report(load_run(plan.path), recursive=False)  # the page's environment: complete, end time
    return summary, load_run(plan.path)
