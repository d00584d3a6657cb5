"""The run catalogue: every run directory under a folder, queried in place with DuckDB.

No import step and no database to keep: DuckDB reads each run's `config.json` (the resolved config,
written beside config.yaml), `env.json` and `claims.json` where they lie. A run's state (complete,
incomplete, damaged) comes from the one run-directory verifier (`verify.check_run_dir`, as
`icldyn check`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from icldyn.analysis.diagnose import final_llc
from icldyn.errors import UsageError
from icldyn.verify import check_run_dir

STATES = ("complete", "incomplete", "damaged")
COLUMNS = ["path", "experiment", "config_hash", "seeds", "preset", "state", "claims_passed",
           "claims_total", "llc_final", "wall_s", "date", "variants", "problems", "evaluations", "evaluation_claims"]
_SKIP = {"checkpoints", "figures", "variants", "evaluate", "diagnose", ".git", "__pycache__"}


@dataclass
class RunState:
    state: str
    problems: list[str] = field(default_factory=list)


def check(path: str | Path, parse_config: Callable[[dict], Any] | None = None) -> RunState:
    """Is this run directory whole? The one run-directory verifier (`icldyn check`, `verify.py`)."""
    result = check_run_dir(Path(path), parse_config)
    return RunState(str(result.state), [str(p) for p in result.sentences()])


def find_run_dirs(root: str | Path) -> list[Path]:
    """Run directories (holding config.yaml) under `root`, not descending into a run: a sweep's
    variants belong to their sweep directory. `root` itself may be a run."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory; pass a folder of run directories (default: runs)")
    found = []
    for here, dirs, files in os.walk(root):
        if "config.yaml" in files:
            found.append(Path(here))
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if d not in _SKIP)
    return sorted(found)


def _existing(paths: list[Path], name: str, ok: set[Path]) -> list[str]:
    return [str(p / name) for p in paths if p in ok and (p / name).is_file()]


def catalog(root: str | Path = "runs", *, experiment: str | None = None, where: list[str] | None = None,
            parse_config: Callable[[dict], Any] | None = None) -> pd.DataFrame:
    """One row per run directory under `root` (columns: COLUMNS), filtered by experiment and by
    conditions on config values in DuckDB syntax (`train.lr > 0.01`, `task.d = 3`)."""
    import duckdb

    paths = find_run_dirs(root)
    states = {p: check(p, parse_config) for p in paths}
    parsed = {p for p, s in states.items() if s.state != "damaged"}
    runs = pd.DataFrame({"path": [str(p) for p in paths],
                         "dir_name": [p.name for p in paths],
                         "state": [states[p].state for p in paths],
                         "problems": ["; ".join(states[p].problems) for p in paths],
                         "variants": [_count_variants(p) for p in paths],
                         "llc_final": [final_llc(p) if p in parsed else None for p in paths]})
    runs = runs.join(pd.DataFrame([_evaluations(p) for p in paths], columns=["evaluations", "evaluation_claims"]))
    runs = runs.join(pd.DataFrame([_yaml_fields(p, p in parsed) for p in paths]))
    con = duckdb.connect()
    con.register("runs", runs)
    sources = {"cfg": ("config.json", None), "env": ("env.json", None),
               "cl": ("claims.json", {"claims": "JSON[]"})}
    for view, (name, columns) in sources.items():
        files = _existing(paths, name, parsed)
        if files:
            cols = f", columns={_duck_struct(columns)}" if columns else ""
            con.execute(f"CREATE VIEW {view} AS SELECT *, parse_dirpath(filename) AS run_path FROM "
                        f"read_json({files!r}, union_by_name=true, filename=true{cols})")
        else:
            con.execute(f"CREATE VIEW {view} AS SELECT NULL::VARCHAR AS run_path WHERE false")
    return _query(con, experiment, where or [])


def _yaml_fields(path: Path, readable: bool) -> dict:
    """experiment, seed, n_seeds, preset from config.yaml, for runs written before config.json existed."""
    keys = ("experiment", "seed", "n_seeds", "preset")
    raw = {}
    if not (readable and (path / "config.json").is_file()):
        try:
            raw = _config_yaml(path)
        except (OSError, ValueError):
            pass
    return {f"yaml_{k}": raw.get(k) if isinstance(raw, dict) else None for k in keys}


def _config_yaml(path: Path):
    """config.yaml safe-loaded with libyaml where present (a listing reads many); a ValueError when it
    is not YAML."""
    import yaml

    try:
        return yaml.load((path / "config.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise ValueError(str(err).splitlines()[0]) from None


def _duck_struct(columns: dict) -> str:
    return "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"


def _evaluations(path: Path) -> tuple[int, str | None]:
    """`icldyn evaluate` results of a run (and of its variants): how many, and their claims passing
    as "passed/total" (None when none were recorded)."""
    import json

    folders = [p.parent for p in (*path.glob("evaluate/*/curves.parquet"),
                                  *path.glob("variants/*/evaluate/*/curves.parquet"))]
    passed = total = 0
    for folder in folders:
        try:
            claims = json.loads((folder / "claims.json").read_text()).get("claims", [])
        except (OSError, ValueError, AttributeError):
            continue
        total += len(claims)
        passed += sum(c.get("passed") is True for c in claims)
    return len(folders), (f"{passed}/{total}" if total else None)


def _count_variants(path: Path) -> int:
    v = path / "variants"
    return sum(1 for p in v.iterdir() if (p / "config.yaml").exists()) if v.is_dir() else 0


def _col(con, view: str, name: str, default: str = "NULL") -> str:
    cols = {r[0] for r in con.execute(f"DESCRIBE {view}").fetchall()}
    return f'{view}."{name}"' if name in cols else default


def _query(con, experiment: str | None, where: list[str]) -> pd.DataFrame:
    seed = f"coalesce({_col(con, 'cfg', 'seed')}, runs.yaml_seed)"
    n_seeds = f"coalesce({_col(con, 'cfg', 'n_seeds')}, runs.yaml_n_seeds)"
    start, end = _col(con, "env", "start"), _col(con, "env", "end")
    exp = f"coalesce({_col(con, 'cfg', 'experiment')}, runs.yaml_experiment, {_col(con, 'cl', 'experiment')})"
    sql = f"""
    SELECT runs.path, {exp} AS experiment,
           coalesce({_col(con, 'env', 'config_hash')}, split_part(runs.dir_name, '-s', 1)) AS config_hash,
           CASE WHEN {seed} IS NULL THEN NULL
                ELSE {seed}::BIGINT::VARCHAR || '-' || ({seed} + {n_seeds} - 1)::BIGINT::VARCHAR
           END AS seeds,
           coalesce({_col(con, 'cfg', 'preset')}, runs.yaml_preset) AS preset, runs.state,
           len(list_filter({_col(con, 'cl', 'claims', 'NULL::JSON[]')},
                           c -> json_extract_string(c, '$.passed') = 'true')) AS claims_passed,
           len({_col(con, 'cl', 'claims', 'NULL::JSON[]')}) AS claims_total, runs.llc_final,
           epoch(try_cast({end} AS TIMESTAMPTZ)) - epoch(try_cast({start} AS TIMESTAMPTZ)) AS wall_s,
           try_cast({start} AS TIMESTAMPTZ) AS date, runs.variants, runs.problems, runs.evaluations,
           runs.evaluation_claims
    FROM runs LEFT JOIN cfg ON cfg.run_path = runs.path LEFT JOIN env ON env.run_path = runs.path
         LEFT JOIN cl ON cl.run_path = runs.path
    """
    conditions = ([f"({exp}) = $experiment"] if experiment else []) + [f"({w})" for w in where]
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    import duckdb

    try:
        result = con.execute(sql + " ORDER BY runs.path", {"experiment": experiment} if experiment else {})
        frame = result.to_arrow_table().to_pandas()
    except duckdb.Error as err:
        bad = " and ".join(repr(w) for w in where) or repr(experiment)
        raise UsageError(f"--where {bad} is not a condition on config keys (e.g. 'train.lr > 0.01', "
                         f"'task.d = 3'): {str(err).splitlines()[0]}") from None
    frame["date"] = frame["date"].astype(str).where(frame["date"].notna(), None)
    for col in ("claims_passed", "claims_total", "variants", "evaluations"):
        frame[col] = frame[col].astype("Int64")
    frame = frame[COLUMNS].astype(object)
    return frame.where(frame.notna(), None)  # missing values are None (JSON null), not pandas' NA
