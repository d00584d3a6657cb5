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
REPRODUCE_WORKERS_HELP = ("processes training experiments side by side, the longest first; default: one per "
                          "core on CPU, one on a GPU. With one experiment named, its variants instead")
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
              workers: Optional[int] = typer.Option(None, min=1, help=REPRODUCE_WORKERS_HELP)):
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


def main() -> None:
    from icldyn.process import configure_allocator

    configure_allocator()  # glibc keeps freed memory: fewer page faults (icldyn/process.py)
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


from icldyn.cli import posthoc  # noqa: E402,F401 - registers its commands on `app`

if __name__ == "__main__":
    main()
