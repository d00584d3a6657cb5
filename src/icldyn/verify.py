"""The run-directory verifier (`icldyn check`): every file parses, every checkpoint loads, metrics
are monotone in step and complete up to the last checkpoint, the config hash matches the one
recorded when the run was written. One verifier, for `icldyn check` and the catalogue of runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from icldyn.errors import UsageError
from icldyn.store import (CURVE_COLUMNS, LOCK_NAME, METRIC_COLUMNS, THEORY_COLUMNS, RunDir, load_checkpoint, load_run,
                          read_config_dict, read_json, read_table)


@dataclass
class CheckResult:
    """What `check_run_dir` found: state is complete | incomplete | damaged; one sentence per problem
    (damaged) and per note (harmless: leftover temporary files, a live writer)."""

    path: Path
    state: str
    problems: list[str]
    notes: list[str]
    variants: dict[str, "CheckResult"]

    def sentences(self) -> list[str]:
        out = list(self.problems)
        for v in self.variants.values():
            out += v.sentences()
        return out


def check_run_dir(path: str | Path, parse_config: Callable[[dict], Any] | None = None) -> CheckResult:
    """Verify a run or sweep directory: every file parses, checkpoints load and name their own step,
    metrics are monotone in step, rectangular over seeds and reach the last checkpoint, and (given
    `parse_config`) config.yaml's hash is the one env.json recorded when the run was written."""
    path = Path(path)
    problems: list[str] = []
    notes: list[str] = []
    if path.is_dir() and not (path / "config.yaml").exists() and not _written_files(path):
        return CheckResult(path, "incomplete", [], [f"{path} was started but nothing is written yet"], {})
    raw = _checked(problems, read_config_dict, path)
    if raw is None:
        return CheckResult(path, "damaged", problems, notes, {})
    env = _checked(problems, read_json, path / "env.json") if (path / "env.json").exists() else {}
    if not isinstance(env, dict):
        problems.append(f"{path / 'env.json'} is not a JSON object")
        env = {}
    if parse_config is not None:
        config = _checked(problems, parse_config, raw)
        recorded = env.get("config_hash")
        if config is not None and recorded and config.config_hash() != recorded:
            problems.append(f"{path / 'config.yaml'} has changed since the run was written (config hash "
                            f"{config.config_hash()}, recorded {recorded})")
    if (path / "claims.json").exists():
        _checked(problems, lambda: load_run(path).claims)
    for name, cols in (("curves.parquet", CURVE_COLUMNS), ("theory.parquet", THEORY_COLUMNS)):
        _checked(problems, read_table, path / name, cols)
    for folder in sorted(p.parent for p in path.glob("evaluate/*/curves.parquet")):   # `icldyn evaluate` results
        _checked(problems, read_table, folder / "curves.parquet", CURVE_COLUMNS)
        if (folder / "claims.json").exists():
            _checked(problems, read_json, folder / "claims.json")
    metrics = _checked(problems, read_table, path / "metrics.parquet", METRIC_COLUMNS)
    complete = env.get("complete") is True
    steps = RunDir(path).checkpoint_steps() if (path / "checkpoints").is_dir() else []
    for step in steps:
        meta = _checked(problems, lambda s=step: load_checkpoint(RunDir(path).checkpoint_path(s))[1])
        if meta is not None and meta.get("step") != step:
            problems.append(f"checkpoint step_{step}.safetensors holds step {meta.get('step')}")
    if metrics is not None:
        problems += _metric_problems(path, metrics, steps, raw, complete, (path / "sweep.yaml").exists())
    variants = _check_variants(path, parse_config, problems, complete)
    notes += [f"{t.relative_to(path)} is left over from an interrupted write (harmless; removed on resume)"
              for t in path.rglob(".*.tmp")]
    holder = RunDir(path).locked_by_other()
    if holder:
        notes.append(f"{path} is being written now by process {holder}")
    incomplete = not complete or holder or any(v.state != "complete" for v in variants.values())
    state = "damaged" if problems or any(v.state == "damaged" for v in variants.values()) else (
        "incomplete" if incomplete else "complete")
    return CheckResult(path, state, problems, notes, variants)


def _written_files(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file() and p.name != LOCK_NAME and not p.name.endswith(".tmp")]


def _checked(problems: list[str], fn, *args):
    try:
        return fn(*args)
    except UsageError as err:
        problems.append(str(err))
        return None


def _metric_problems(path: Path, metrics: pd.DataFrame, steps: list[int], raw: dict, complete: bool,
                     is_sweep: bool) -> list[str]:
    f, out = path / "metrics.parquet", []
    if steps and metrics.empty:
        return [f"{f} is missing or empty although checkpoints up to step {steps[-1]} exist"]
    if not metrics.empty:
        for (seed, name), group in metrics.groupby(["seed", "name"], sort=False):
            if not group["step"].is_monotonic_increasing or group["step"].duplicated().any():
                out.append(f"{f}: the steps of {name} (seed {seed}) are not strictly increasing")
                break
        seeds = metrics["seed"].nunique()
        counts = metrics.groupby(["step", "name"])["seed"].nunique()
        if (counts != seeds).any():
            step, name = counts[counts != seeds].index[0]
            out.append(f"{f}: step {step} of {name} lacks some of the {seeds} seeds")
        if metrics["step"].min() != 0:
            out.append(f"{f} does not start at step 0 (it starts at {metrics['step'].min()})")
    total = (raw.get("train") or {}).get("steps") if isinstance(raw.get("train"), dict) else None
    if complete and not is_sweep and total is not None:
        if metrics.empty or metrics["step"].max() != total:
            out.append(f"{f} does not reach the last step {total} although env.json says the run is complete")
        if not steps or steps[-1] != total:
            out.append(f"the checkpoint of the last step {total} is missing although the run is complete")
    return out


def _check_variants(path: Path, parse_config, problems: list[str], complete: bool) -> dict[str, CheckResult]:
    import yaml

    sweep_file = path / "sweep.yaml"
    if not sweep_file.exists():
        return {}
    try:
        listed = (yaml.safe_load(sweep_file.read_text()) or {}).get("variants") or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError) as err:
        problems.append(f"{sweep_file} does not parse as a sweep file ({type(err).__name__})")
        listed = {}
    base = path / "variants"
    found = {p.name: check_run_dir(p, parse_config) for p in sorted(base.iterdir())} if base.is_dir() else {}
    if complete:
        problems += [f"variant {name} of {path} is missing although the sweep is complete"
                     for name in listed if name not in found]
    return found
