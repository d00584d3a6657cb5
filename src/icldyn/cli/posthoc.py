"""`icldyn` commands over stored runs: the runs table, compare, export, and the post-hoc tools
(`evaluate` under distribution shift, `diagnose`). Registered on the one app of `icldyn.cli`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from icldyn.cli import KNOWN, THREADS_HELP, _fail, _interrupted, _progress, _set_threads, app, claims_table, console  # noqa: F401
from icldyn.errors import UsageError  # noqa: F401


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
