"""The `icldyn` command: thin — parses, calls the Python API, renders with rich."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from icldyn.errors import DivergedError, EnvironmentFailure, UsageError

# the errors a command answers with one sentence and their exit code (2 usage, 3 diverged, 4 environment)
KNOWN = (UsageError, DivergedError, EnvironmentFailure)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="icldyn: the training dynamics of in-context learning, runnable and checkable.")
console = Console()
err_console = Console(stderr=True)


class _LazyProgress(Progress):
    """A progress display that appears with its first task: input refused before any training
    prints its one sentence without an empty bar above it."""

    def __enter__(self) -> "_LazyProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.live.is_started:
            self.stop()

    def add_task(self, *args, **kwargs):
        if not self.live.is_started:
            self.start()
        return super().add_task(*args, **kwargs)


def _progress() -> tuple[Progress, callable]:
    bar = _LazyProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.4g}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)
    tasks: dict[str, int] = {}

    def update(label: str, step: int, total: int, loss: float):
        if label not in tasks:
            tasks[label] = bar.add_task(label, total=total, loss=float("nan"))
        if step % 10 == 0 or step == total:
            bar.update(tasks[label], completed=step, loss=loss)

    return bar, update


def claims_table(claims: list[dict], title: str = "claims") -> Table:
    table = Table(title=title, show_lines=False, header_style="bold")
    for col in ("claim", "source", "measured", "expected", "verdict"):
        table.add_column(col, overflow="fold", max_width=60 if col == "claim" else 30)
    for c in claims:
        verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}[c["passed"]]
        m = "—" if c["measured"] is None else f"{c['measured']:.4g}"
        text = f"[bold]{c['id']}[/]: {c['statement']}" + (f" [dim]({c['note']})[/]" if c.get("note") else "")
        table.add_row(text, c["source"], m, c["expected"], verdict)
    return table


WORKERS_HELP = ("processes training an experiment's variants (a sweep) side by side; default: one per core "
                "on CPU (each with --threads threads), one on a GPU")
THREADS_HELP = ("CPU threads for torch. The models here are small: one thread per process is fastest on "
                "small CPUs, and the extra threads of a busy machine slow a run many times over")


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


INTERRUPTED = "[yellow]interrupted[/]: the run directory keeps its last checkpoint; continue with --resume"


def _interrupted() -> None:
    # caught here, inside the command: click would otherwise swallow it before main() sees it
    err_console.print(INTERRUPTED, soft_wrap=True, highlight=False)
    raise typer.Exit(130)


def _fail(err: Exception) -> None:
    # the message is text, not markup: `icldyn[slurm]` keeps its brackets
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)
    raise typer.Exit(getattr(err, "exit_code", 1))


@app.command("list")
def list_experiments():
    """The experiments, one line each, with their paper."""
    from icldyn.experiments import EXPERIMENTS

    table = Table(header_style="bold")
    for col in ("experiment", "what it shows", "paper", "quick target"):
        table.add_column(col, overflow="fold")
    for name, exp in EXPERIMENTS.items():
        table.add_row(name, exp.title, exp.paper, exp.time_target)
    console.print(table)


@app.command()
def run(
    experiment: str = typer.Argument(..., help="experiment name (see `icldyn list`)"),
    preset: str = typer.Option("quick", help="quick (CPU, minutes) or paper (the papers' scale)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override a config key: a.b=value"),
    seeds: Optional[int] = typer.Option(None, min=1, help="train seeds 0..N-1 together"),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
    out: Path = typer.Option(Path("runs"), help="root of the run directories"),
    resume: bool = typer.Option(False, help="continue an interrupted run"),
    strict: bool = typer.Option(False, help="exit 1 when a claim fails"),
    sweep: Optional[List[str]] = typer.Option(None, help="sweep a key over values: a.b=[v1,v2,...]"),
    threads: int = typer.Option(1, min=1, help=THREADS_HELP),
    workers: Optional[int] = typer.Option(None, min=1, help=WORKERS_HELP),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the training loss (train.compile=true); "
                                                          "falls back to eager with a note where it fails"),
    validate: bool = typer.Option(False, "--validate", help="check the config, sweep and memory estimate; "
                                                           "train nothing, write nothing"),
):
    """Train an experiment, record its dynamics, print its claims."""
    from icldyn import api
    from icldyn.config import parse_value

    if compile_:
        set_ = [*(set_ or []), "train.compile=true"]
    _set_threads(threads)
    bar, update = _progress()
    try:
        grid = {}
        for item in sweep or []:
            if "=" not in item:
                raise UsageError(f"--sweep takes key=[v1,v2,...], got {item!r}")
            key, values = item.split("=", 1)
            grid[key.strip()] = parse_value(values.strip())
        if validate:
            api.run(experiment, preset, set_ or None, seeds=seeds, device=device, out=out, sweep=grid or None,
                    validate_only=True)
            console.print(f"{experiment} ({preset}): the config is valid; nothing was run")
            return
        with bar:
            result = api.run(experiment, preset, set_ or None, seeds=seeds, device=device, out=out,
                             resume=resume, progress=update, sweep=grid or None, workers=workers)
    except KNOWN as err:
        _fail(err)
    except KeyboardInterrupt:
        _interrupted()
    console.print(claims_table(result.claims, f"{experiment} ({preset})"))
    console.print(f"run directory: [bold]{result.path}[/]")
    figs = sorted((result.path / "figures").glob("*.png"))
    if figs:
        console.print("figures: " + ", ".join(str(f) for f in figs))
    if strict and any(c["passed"] is False for c in result.claims):
        raise typer.Exit(1)


@app.command("sweep")
def sweep_cmd(
    spec: str = typer.Argument(..., help="a sweep spec (YAML file) or an experiment name with --grid"),
    grid: Optional[List[str]] = typer.Option(None, "--grid", help="sweep a key over values: a.b=[v1,v2,...] "
                                             "(repeatable; the members are the product)"),
    preset: Optional[str] = typer.Option(None, help="quick or paper (overrides the spec's)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="a fixed override for every member: a.b=value"),
    seeds: Optional[int] = typer.Option(None, min=1, help="every member trains seeds 0..N-1 together"),
    backend: str = typer.Option("local", help="local (a process pool here), ray, or slurm (submitit)"),
    address: Optional[str] = typer.Option(None, help="Ray: auto, host:port or ray://...; default a local Ray"),
    max_parallel: Optional[int] = typer.Option(None, min=1, help="members training at once (local: "
                                               "processes, default one per core; ray: tasks in flight; slurm: array parallelism)"),
    storage: str = typer.Option("auto", help="Ray: auto | shared | ship (results back through Ray)"),
    out: Path = typer.Option(Path("runs"), help="root of the run directories"),
    strict: bool = typer.Option(False, help="exit 1 when a claim fails"),
):
    """Train a sweep's members on one machine or a cluster; rerunning it resumes it."""
    from icldyn import api
    from icldyn.config import parse_value
    from icldyn.sweep import load_spec

    try:
        data = load_spec(spec).model_dump() if spec.endswith((".yaml", ".yml")) or Path(spec).is_file() \
            else {"experiment": spec}
        for item in grid or []:
            if "=" not in item:
                raise UsageError(f"--grid takes key=[v1,v2,...], got {item!r}")
            key, values = item.split("=", 1)
            values = parse_value(values.strip())
            data.setdefault("grid", {})[key.strip()] = values if isinstance(values, list) else [values]
        bad = [i for i in set_ or [] if "=" not in i]
        if bad:
            raise UsageError(f"--set takes key=value, got {bad[0]!r}")
        over = {k.strip(): parse_value(v.strip()) for k, v in (i.split("=", 1) for i in set_ or [])}
        data["overrides"] = {**data.get("overrides", {}), **over}
        data.update({k: v for k, v in (("preset", preset), ("seeds", seeds)) if v is not None})
        bar, update, status = _sweep_progress()
        with bar:
            summary, result = api.sweep(data, backend=backend, address=address, max_parallel=max_parallel,
                                        out=out, progress=update, status=status, storage=storage)
    except (UsageError, DivergedError) as err:
        _fail(err)
    except KeyboardInterrupt:
        _interrupted()
    console.print(f"sweep: [green]{len(summary.done)} done[/], {len(summary.skipped)} skipped, "
                  f"[{'red' if summary.failed else 'green'}]{len(summary.failed)} failed[/] "
                  f"in {summary.wall_s:.1f} s")
    for name, reason in summary.failed.items():
        n = summary.attempts.get(name, 1)
        console.print(f"  [red]failed[/] {name} (after {n} {'try' if n == 1 else 'tries'}): {reason}",
                      soft_wrap=True, highlight=False)
    for name, step in summary.resumed_from.items():
        console.print(f"  {name} resumed from its checkpoint at step {step}")
    console.print(f"sweep directory: [bold]{summary.path}[/]")
    if result is None:
        raise typer.Exit(1)
    console.print(claims_table(result.claims, str(summary.path)))
    if strict and any(c["passed"] is False for c in result.claims):
        raise typer.Exit(1)


def _sweep_progress():
    """One view over all members: a bar for the sweep (members finished) and one per member."""
    bar, update = _progress()
    states: dict[str, str] = {}
    overall: list[int] = []  # the sweep's bar, shown once the first member has a state

    def status(name: str, state: str) -> None:
        states[name] = state
        if not overall:
            overall.append(bar.add_task("sweep", total=None, loss=float("nan")))
        finished = sum(s in ("done", "skipped", "failed") for s in states.values())
        bar.update(overall[0], total=len(states), completed=finished,
                   description=f"sweep ({sum(s == 'failed' for s in states.values())} failed)")

    return bar, update, status


@app.command()
def claims(run_dir: Path = typer.Argument(..., help="a run directory made by `icldyn run`"),
           strict: bool = typer.Option(False, help="exit 1 when a claim fails")):
    """Recompute and print the claims of a stored run."""
    from icldyn import api

    try:
        result = api.recompute_claims(run_dir)
    except KNOWN as err:
        _fail(err)
    console.print(claims_table(result, str(run_dir)))
    if strict and any(c["passed"] is False for c in result):
        raise typer.Exit(1)


@app.command()
def reproduce(experiments: Optional[List[str]] = typer.Argument(None, help="default: all"),
              out: Path = typer.Option(Path("runs"), help="root of the run directories"),
              threads: int = typer.Option(1, min=1, help="CPU threads for torch (see `icldyn run --help`)"),
              workers: Optional[int] = typer.Option(None, min=1, help=WORKERS_HELP)):
    """Run the quick presets of all (or the named) experiments and write a summary table."""
    from icldyn import api

    _set_threads(threads)
    bar, update = _progress()
    try:
        with bar:
            summary = api.reproduce(experiments or None, out=out, progress=update, workers=workers)
    except KNOWN as err:
        _fail(err)
    except KeyboardInterrupt:
        _interrupted()
    console.print(summary.read_text())
    console.print(f"summary: [bold]{summary}[/]")


@app.command()
def bench(json_out: Optional[Path] = typer.Option(None, "--json", help="write the figures as JSON here"),
          quick: bool = typer.Option(False, help="fewer repeats and sizes (a smoke test)"),
          case: Optional[List[str]] = typer.Option(None, "--case", help="run only this case (repeatable)"),
          list_: bool = typer.Option(False, "--list", help="list the cases and exit"),
          threads: Optional[int] = typer.Option(None, min=1, help="torch threads (default: torch's own)")):
    """Performance benchmarks: prints a table, optionally writes JSON."""
    from icldyn.bench import CASES, run_benchmarks

    if list_:
        for name, fn in CASES.items():
            console.print(f"[bold]{name}[/]: {(fn.__doc__ or '').strip().splitlines()[0]}")
        return None
    try:
        for name in case or []:
            CASES[name]  # an unknown case stops here, naming the known ones
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        results = run_benchmarks(quick=quick, json_path=json_out, console=console, cases=case or None)
    except UsageError as err:
        _fail(err)
    return results


@app.command()
def check(run_dir: Path = typer.Argument(..., help="a run or sweep directory made by `icldyn run`")):
    """Is this run directory whole? Exit 0 when complete or cleanly incomplete, 2 when damaged."""
    from icldyn import api

    result = api.check(run_dir)
    for note in _all_notes(result):
        console.print(f"[dim]note:[/] {escape(note)}", soft_wrap=True, highlight=False)
    for problem in result.sentences():
        err_console.print(f"[bold red]damaged:[/] {escape(problem)}", soft_wrap=True, highlight=False)
    colour = {"complete": "green", "incomplete": "yellow", "damaged": "red"}[result.state]
    hint = "; continue it with `icldyn run ... --resume`" if result.state == "incomplete" else ""
    console.print(f"{run_dir}: [{colour}]{result.state}[/]{hint}", soft_wrap=True, highlight=False)
    if result.state == "damaged":
        raise typer.Exit(2)


def _all_notes(result) -> list[str]:
    return result.notes + [n for v in result.variants.values() for n in _all_notes(v)]


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory made by `icldyn run`")):
    """(Re)build a run's report.html from the stored run alone."""
    from icldyn import api

    try:
        page = api.report(run_dir)
    except UsageError as err:
        _fail(err)
    console.print(f"report: [bold]{page}[/]")


@app.command("runs")
def runs_(root: Path = typer.Argument(Path("runs"), help="folder of run directories"),
          experiment: Optional[str] = typer.Option(None, help="only this experiment"),
          where: Optional[List[str]] = typer.Option(None, help="a condition on config values, e.g. 'train.lr>0.01' "
                                                             "(DuckDB syntax; repeatable, all must hold)"),
          json_: bool = typer.Option(False, "--json", help="print the table as JSON (one object per run)")):
    """List the runs under a folder: experiment, config hash, seeds, preset, state, claims, final LLC (from
    `icldyn diagnose --llc`), wall time, date."""
    from icldyn import api

    try:
        table = api.runs(root, experiment=experiment, where=where)
    except UsageError as err:
        _fail(err)
    if json_:
        print(table.to_json(orient="records", indent=1))
        return
    out = Table(title=f"runs under {root} ({len(table)})", header_style="bold")
    for col in ("run", "experiment", "hash", "seeds", "preset", "state", "claims", "LLC", "wall", "date", "shifted"):
        out.add_column(col, overflow="fold")
    style = {"complete": "green", "incomplete": "yellow", "damaged": "red"}
    for r in table.itertuples():
        claims = "—" if not r.claims_total else f"{r.claims_passed}/{r.claims_total}"
        wall = "—" if r.wall_s is None or r.wall_s != r.wall_s else f"{r.wall_s:.0f} s"
        state = f"[{style.get(r.state, 'white')}]{r.state}[/]" + (f" [dim]({r.problems})[/]" if r.problems else "")
        out.add_row(str(Path(r.path).relative_to(root) if Path(r.path) != root else r.path), r.experiment or "?",
                    r.config_hash or "?", r.seeds or "?", r.preset or "?", state, claims,
                    "—" if r.llc_final is None else f"{r.llc_final:.3g}", wall, (r.date or "")[:19], _shifted(r))
    console.print(out)


def _shifted(r) -> str:
    """The runs table's `shifted` cell: evaluations under shift (`icldyn evaluate`) and their claims."""
    if not r.evaluations:
        return "—"
    return f"{r.evaluations}" + (f" ({r.evaluation_claims} claims)" if r.evaluation_claims else "")


@app.command()
def compare(run_dirs: List[Path] = typer.Argument(..., help="two or more run directories"),
            metric: Optional[List[str]] = typer.Option(None, help="metric to overlay (repeatable; default loss/test)"),
            out: Path = typer.Option(Path("compare.png"), help="where to write the figure (PNG)"),
            axis: str = typer.Option("step", help="x axis: step or time (Σ lr)")):
    """Overlay the metrics of several runs on one figure; print their claims and config differences."""
    from icldyn import api

    try:
        result = api.compare(run_dirs, metric or None, out=out, axis=axis)
    except UsageError as err:
        _fail(err)
    ids, table = result["claims"]
    claims = Table(title="claims", header_style="bold")
    claims.add_column("claim", overflow="fold")
    for label in result["labels"]:
        claims.add_column(label, overflow="fold")
    for cid in ids:
        cells = []
        for c in table[cid]:
            if c is None:
                cells.append("[dim]—[/]")
                continue
            verdict = {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "[yellow]n/a[/]"}[c["passed"]]
            cells.append(("—" if c["measured"] is None else f"{c['measured']:.4g}") + f" {verdict}")
        claims.add_row(cid, *cells)
    console.print(claims)
    diff = Table(title="config keys that differ", header_style="bold")
    diff.add_column("key")
    for label in result["labels"]:
        diff.add_column(label, overflow="fold")
    for key, values in result["differences"].items():
        diff.add_row(key, *(str(v) for v in values))
    console.print(diff)
    console.print(f"figure: [bold]{result['figure']}[/]")


@app.command()
def evaluate(run_dir: Path = typer.Argument(..., help="a run directory made by `icldyn run` (a variant of a sweep)"),
             shift: List[str] = typer.Option(..., "--shift", help="NAME or NAME=value (repeatable); "
                                                                 "an unknown name lists the task's shifts"),
             step: Optional[int] = typer.Option(None, help="a stored checkpoint step (default: the last)"),
             prompts: Optional[int] = typer.Option(None, help="prompts per shift and number of examples "
                                                             "(default 10⁴ for regression, 2000 otherwise)"),
             device: Optional[str] = typer.Option(None, help="auto | cpu | cuda"),
             threads: int = typer.Option(1, min=1, help=THREADS_HELP)):
    """Evaluate a stored model and its task's estimators on shifted prompts; write curves, claims, figures."""
    from icldyn import api

    _set_threads(threads)
    try:
        ev = api.evaluate(run_dir, shift, step=step, prompts=prompts, device=device)
    except KNOWN as err:
        _fail(err)
    except KeyboardInterrupt:
        _interrupted()
    if ev.claims:
        console.print(claims_table(ev.claims, f"{run_dir} under shift"))
    console.print(f"evaluation: [bold]{ev.path}[/] ({ev.settings['wall_s']:.1f} s)", soft_wrap=True)
    for f in ev.figures:
        console.print(f"figure: {f}", soft_wrap=True)
    console.print("[dim]`icldyn report RUN_DIR` adds it to the run's report.html[/]", soft_wrap=True)


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a run directory made by `icldyn run`"),
           tensorboard: Path = typer.Option(..., help="write TensorBoard event files under this folder")):
    """Write a run's metrics as TensorBoard event files (`tensorboard --logdir DIR` shows them)."""
    from icldyn import api

    try:
        written = api.export(run_dir, tensorboard)
    except UsageError as err:
        _fail(err)
    console.print(f"wrote {len(written)} TensorBoard run(s) under [bold]{tensorboard}[/]")


@app.command("diagnose")
def diagnose_cmd(run_dir: Path = typer.Argument(..., help="a (non-sweep) run directory with checkpoints"),
                 llc: bool = typer.Option(False, "--llc", help="the local learning coefficient at every checkpoint "
                                          "(SGLD through devinterp: pip install 'icldyn[diagnose]')"),
                 essential_dynamics: bool = typer.Option(False, "--essential-dynamics",
                                                         help="PCA of the outputs on fixed prompts over training"),
                 set_: Optional[List[str]] = typer.Option(None, "--set", help="a setting, e.g. llc.draws=100, "
                                                          "llc.lr=1e-4, essential_dynamics.n_prompts=32, max_checkpoints=30"),
                 threads: int = typer.Option(1, help=THREADS_HELP)):
    """Developmental diagnostics of a stored run, written under RUN_DIR/diagnose/ (the run's files stay as they are)."""
    import time

    from icldyn.diagnose import diagnose, parse_settings

    _set_threads(threads)
    started = time.perf_counter()
    bar, update = _progress()
    try:
        with bar:
            result = diagnose(run_dir, llc=llc, essential_dynamics=essential_dynamics, settings=parse_settings(set_),
                              progress=lambda label, k, n: update(label, k, n, float("nan")))
    except KNOWN as err:
        _fail(err)
    console.print(f"diagnosed {len(result.steps)} checkpoints in {time.perf_counter() - started:.1f} s; "
                  f"wrote [bold]{result.path}[/]")
    if result.llc is not None:
        last = result.llc[result.llc["step"] == result.llc["step"].max()]
        console.print("LLC at the last checkpoint: " + ", ".join(
            f"seed {s}: {v:.3g} ± {e:.2g}" for s, v, e in zip(last["seed"], last["llc"], last["llc_std"])))
    if result.summary.get("llc_diverged_steps"):
        console.print(f"[yellow]note:[/] SGLD diverged at checkpoints {result.summary['llc_diverged_steps']} "
                      "(LLC NaN there): lower --set llc.lr=...", soft_wrap=True, highlight=False)
    for seed, ev in result.summary.get("essential_dynamics", {}).items():
        console.print(f"essential dynamics, seed {seed}: stage points at t = "
                      f"{', '.join(f'{t:.3g}' for t in ev['speed_peak']) or '—'}; turning points at t = "
                      f"{', '.join(f'{t:.3g}' for t in ev['turn']) or '—'}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print(INTERRUPTED, soft_wrap=True, highlight=False)
        sys.exit(130)
    except KNOWN as err:  # raised outside a command's own handler
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001 - last resort: a bug, said in one line
        import os
        import traceback

        if os.environ.get("ICLDYN_DEBUG"):
            traceback.print_exc()
        err_console.print(f"[bold red]internal error[/] (a bug in icldyn, please report it): "
                          f"{type(err).__name__}: {err}; set ICLDYN_DEBUG=1 to see the traceback",
                          soft_wrap=True, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
