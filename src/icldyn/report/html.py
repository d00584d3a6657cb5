"""The HTML page of a run (report.html in its run directory) and the index page of a reproduction.

Built from the run directory alone, through the analysis layer: claims.json, figures/*.png,
metrics.parquet and theory.parquet, config.yaml, env.json. One file that opens from disk with no
server and no network: plotly.js is inlined once, figures are linked from the run's figures/ folder.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jinja2

from icldyn.store import read_json, write_text

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("icldyn.report", "templates"),
                          autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
VERDICT = {True: ("pass", "pass"), False: ("fail", "FAIL"), None: ("na", "n/a")}


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def claim_rows(claims: list[dict]) -> list[dict]:
    """claims.json entries as table rows: id, statement, measured, expected, tolerance, verdict class."""
    rows = []
    for c in claims:
        cls, word = VERDICT[c.get("passed")]
        rows.append({"id": c["id"], "statement": c.get("statement", ""), "source": c.get("source", ""),
                     "measured": _fmt(c.get("measured")), "expected": _fmt(c.get("expected")),
                     "tolerance": _fmt(c.get("tolerance")), "note": c.get("note") or "",
                     "per_seed": ", ".join(_fmt(v) for v in c.get("per_seed") or []), "cls": cls, "verdict": word})
    return rows


def _plots(run) -> list[dict]:
    """The page's interactive figures: {id, spec} where spec is the JavaScript text of a plotly.js
    figure ({data, layout}); the page draws them with Plotly.newPlot."""
    from icldyn.report.interactive import main_metrics, metric_figure, theory_figure

    figs = [metric_figure(run, n) for n in main_metrics(run)] + [theory_figure(run)]
    # NaN is valid JavaScript; "</" is escaped so no string can close the script element
    return [{"id": f"plot-{i}", "spec": json.dumps(f, allow_nan=True).replace("</", "<\\/")}
            for i, f in enumerate(f for f in figs if f is not None)]


def view_claims(run, name: str) -> list[dict]:
    """A variant's claims: its own claims.json, else the sweep's claims about it (id suffix `[name]`)."""
    sub = run.variants[name]
    return sub.claims or [c for c in run.claims if str(c.get("id", "")).endswith(f"[{name}]")]


def _variants(run) -> list[dict]:
    out = []
    for name, sub in run.variants.items():
        claims = view_claims(run, name)
        out.append({"name": name, "href": f"variants/{name}/report.html", "total": len(claims),
                    "passed": sum(c.get("passed") is True for c in claims), "complete": bool(sub.env.get("complete"))})
    return out


def render_run(run, *, title: str | None = None, paper: str | None = None, plotly_src: str | None = None) -> str:
    """The HTML text of a run's page (see the module docstring). plotly.js is inlined unless
    `plotly_src` names a file beside the page (a sweep's pages share one copy)."""
    from icldyn.report.interactive import theory_constants

    plots = _plots(run)
    plotlyjs = _plotly_js() if plots and plotly_src is None else ""
    cfg = run.config
    experiment = cfg.get("experiment") if isinstance(cfg, dict) else cfg.experiment
    config_text = (run.path / "config.yaml").read_text() if (run.path / "config.yaml").exists() else ""
    in_sweep = run.path.parent.name == "variants"
    claims = claim_rows(run.claims)
    return _ENV.get_template("run.html.j2").render(
        experiment=experiment, title=title, paper=paper, path=str(run.path), claims=claims,
        n_passed=sum(c["cls"] == "pass" for c in claims), figures=_figures(run.path), plots=plots,
        plotlyjs=plotlyjs, plotly_src=plotly_src if plots else None, constants=theory_constants(run).to_dict("records"),
        config_text=config_text, env=[(k, _fmt(v)) for k, v in run.env.items()], variants=_variants(run),
        parent="../../report.html" if in_sweep else None, seeds=_seeds(run), evaluations=_evaluations(run.path),
        diagnostics=_diagnostics(run.path))


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _seeds(run) -> str:
    cfg = run.config
    seed, n = (cfg.get("seed"), cfg.get("n_seeds")) if isinstance(cfg, dict) else (cfg.seed, cfg.n_seeds)
    return f"{seed}–{seed + n - 1}" if seed is not None and n else "?"


def _evaluations(path: Path) -> list[dict]:
    """The run's `icldyn evaluate` results (evaluate/<shift set>/): name, settings, claims, figures."""
    import yaml

    out = []
    for folder in sorted(p.parent for p in (path / "evaluate").glob("*/curves.parquet")):
        claims = read_json(folder / "claims.json").get("claims", []) if (folder / "claims.json").exists() else []
        settings = yaml.safe_load((folder / "evaluate.yaml").read_text()) if (folder / "evaluate.yaml").exists() else {}
        rel = folder.relative_to(path).as_posix()
        rows = claim_rows(claims)
        out.append({"name": folder.name, "shifts": ", ".join((settings or {}).get("shifts", [])),
                    "step": (settings or {}).get("step"), "prompts": (settings or {}).get("prompts"),
                    "claims": rows, "n_passed": sum(c["cls"] == "pass" for c in rows),
                    "figures": [{"src": f"{rel}/figures/{f.name}", "name": f.stem}
                                for f in sorted((folder / "figures").glob("*.png"))]})
    return out


def _diagnostics(path: Path) -> dict | None:
    """What `icldyn diagnose` wrote (figures, final LLC, event times), or None."""
    from icldyn.analysis.diagnose import diagnose_dir, summary

    out = diagnose_dir(path)
    if not out.is_dir():
        return None
    info = summary(path)
    rows = [{"seed": s, "llc": _fmt(info.get("llc_final", {}).get(s)),
             "explained": ", ".join(f"{v:.3f}" for v in e.get("explained_variance", [])),
             "stages": ", ".join(f"{t:.3g}" for t in e.get("speed_peak", [])),
             "turns": ", ".join(f"{t:.3g}" for t in e.get("turn", []))}
            for s, e in (info.get("essential_dynamics") or {s: {} for s in info.get("llc_final", {})}).items()]
    figures = [{"src": f"diagnose/{p.name}", "name": p.stem} for p in sorted(out.glob("*.png"))]
    return {"rows": rows, "figures": figures}


def _figures(path: Path) -> list[dict]:
    return [{"src": f"figures/{p.name}", "name": p.stem} for p in sorted((path / "figures").glob("*.png"))]


def write_run_report(run, *, title: str | None = None, paper: str | None = None,
                     recursive: bool = True) -> Path:
    """Write report.html into a run directory (and, with `recursive`, into each of its variants).

    A single run's page is one self-contained file. A sweep directory's pages (its own and its
    variants') share one plotly.js, written once beside the sweep's page, instead of 4.6 MB each."""
    plotly_src = None
    if run.variants:
        write_text(run.path / PLOTLY_FILE, _plotly_js())
        plotly_src = PLOTLY_FILE
        if recursive:
            for name, sub in run.variants.items():
                sub.claims = view_claims(run, name)
                write_text(sub.path / "report.html",
                           render_run(sub, title=title, paper=paper, plotly_src=f"../../{PLOTLY_FILE}"))
    target = run.path / "report.html"
    write_text(target, render_run(run, title=title, paper=paper, plotly_src=plotly_src))
    return target


PLOTLY_FILE = "plotly.min.js"


def write_index(entries: list[dict], target: Path, *, heading: str = "icldyn reproduction (quick presets)") -> Path:
    """The index page of a reproduction: per experiment its pass count, wall time and report link;
    the failing claims first. `entries`: {experiment, title, path, claims, wall_s}."""
    target = Path(target)
    rows, failing = [], []
    for e in entries:
        href = Path(_relative(Path(e["path"]) / "report.html", target.parent))
        claims = claim_rows(e["claims"])
        rows.append({"experiment": e["experiment"], "title": e.get("title") or "", "href": str(href),
                     "passed": sum(c["cls"] == "pass" for c in claims), "total": len(claims),
                     "failed": sum(c["cls"] == "fail" for c in claims),
                     "wall": "—" if e.get("wall_s") is None else f"{e['wall_s']:.0f} s"})
        failing += [{**c, "experiment": e["experiment"], "href": str(href)} for c in claims if c["cls"] == "fail"]
    html = _ENV.get_template("index.html.j2").render(heading=heading, rows=rows, failing=failing)
    write_text(target, html)
    return target


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(Path(path).resolve(), Path(start).resolve())
