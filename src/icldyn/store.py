"""The run directory: every file written atomically (temp file + rename), read back by `load_run`.

<out>/<experiment>/<config-hash>-s<first>-<last>/
  config.yaml  env.json  metrics.parquet  curves.parquet  theory.parquet
  checkpoints/step_<k>.safetensors  claims.json  figures/*.png
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file

from icldyn.errors import UsageError

METRIC_COLUMNS = ["step", "time", "seed", "name", "value"]
# curves.parquet: a curve against a swept x (n_examples, S1, prune_rate, …); any further column is a
# condition (alpha_test, shift, order, …). Files of the older five-column form still read.
CURVE_COLUMNS = ["predictor", "x_name", "x", "metric", "value", "stderr", "seed"]
LEGACY_CURVE_COLUMNS = ["predictor", "n_examples", "mse", "stderr", "seed"]
THEORY_COLUMNS = ["time", "name", "value"]


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename onto `path`: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if torch.is_tensor(o):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_table(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    frame = frame[columns] if len(frame) else pd.DataFrame({c: [] for c in columns})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"meta": json.dumps(meta)}))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata().get("meta", "{}"))
    return load_file(str(path)), meta


class RunDir:
    """Writer side of a run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.fig_dir = self.path / "figures"

    def create(self) -> "RunDir":
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def is_run(self) -> bool:
        return (self.path / "config.yaml").exists()

    @property
    def is_complete(self) -> bool:
        env = self.path / "env.json"
        return env.exists() and json.loads(env.read_text()).get("complete", False)

    def write_metrics(self, rows: list[dict]) -> None:
        write_table(self.path / "metrics.parquet", pd.DataFrame(rows), METRIC_COLUMNS)

    def read_metric_rows(self) -> list[dict]:
        f = self.path / "metrics.parquet"
        return pd.read_parquet(f).to_dict("records") if f.exists() else []

    def write_curves(self, frame: pd.DataFrame) -> None:
        """Write curves in the general schema (a five-column legacy frame is converted first)."""
        frame = general_curves(frame)
        conditions = [c for c in frame.columns if c not in CURVE_COLUMNS]
        write_table(self.path / "curves.parquet", frame, CURVE_COLUMNS + conditions)

    def write_theory(self, frame: pd.DataFrame) -> None:
        write_table(self.path / "theory.parquet", frame, THEORY_COLUMNS)

    def checkpoint_path(self, step: int) -> Path:
        return self.ckpt_dir / f"step_{step}.safetensors"

    def checkpoint_steps(self) -> list[int]:
        if not self.ckpt_dir.exists():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in self.ckpt_dir.glob("step_*.safetensors"))


@dataclass
class Run:
    """A stored run, as `load_run` gives it: config, metrics (long DataFrame), curves, theory, claims."""

    path: Path
    config: Any
    metrics: pd.DataFrame
    curves: pd.DataFrame
    theory: pd.DataFrame
    claims: list[dict]
    env: dict
    parse_config: Callable[[dict], Any] | None = None

    @property
    def checkpoint_steps(self) -> list[int]:
        return RunDir(self.path).checkpoint_steps()

    def checkpoint(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """Parameters by module name (leading seed axis) at `step` (default: the last)."""
        steps = self.checkpoint_steps
        if not steps:
            raise UsageError(f"run {self.path} has no checkpoints")
        step = steps[-1] if step is None else step
        tensors, _ = load_checkpoint(RunDir(self.path).checkpoint_path(step))
        return {k[len("param/"):]: v for k, v in tensors.items() if k.startswith("param/")}

    def metric(self, name: str) -> pd.DataFrame:
        """Rows of one metric: step, time, seed, value."""
        return self.metrics[self.metrics["name"] == name][["step", "time", "seed", "value"]]

    def final(self, name: str) -> pd.Series:
        """The last recorded value of a metric, per seed (index: seed)."""
        m = self.metric(name)
        if m.empty:
            return pd.Series(dtype=float)
        last = m[m["step"] == m["step"].max()]
        return last.set_index("seed")["value"]

    @property
    def seeds(self) -> list[int]:
        return list(range(self.config.seed, self.config.seed + self.config.n_seeds))

    @property
    def sweep(self) -> dict:
        """sweep.yaml of a sweep directory ({'variants': {name: overrides}, 'swept': {key: values}})."""
        import yaml

        f = self.path / "sweep.yaml"
        return yaml.safe_load(f.read_text()) if f.exists() else {}

    @cached_property
    def variants(self) -> dict[str, "Run"]:
        """Sub-runs of a sweep directory (several runs from one command), by name."""
        base = self.path / "variants"
        if not base.is_dir():
            return {}
        return {p.name: load_run(p, self.parse_config) for p in sorted(base.iterdir())
                if (p / "config.yaml").exists()}


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    return pd.read_parquet(path) if path.exists() else pd.DataFrame({c: [] for c in columns})


def general_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """A curves frame in the general schema: the five-column form (predictor, n_examples, mse,
    stderr, seed) becomes x_name = "n_examples", x = n_examples, metric = "mse", value = mse."""
    if "n_examples" not in frame.columns or "x" in frame.columns:
        return frame
    out = frame.rename(columns={"n_examples": "x", "mse": "value"})
    out.insert(1, "x_name", "n_examples")
    out.insert(3, "metric", "mse")
    return out


def read_config_dict(path: Path) -> dict:
    """The raw config.yaml of a run directory (YAML safe-loaded); a UsageError when it is not one."""
    import yaml

    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise UsageError(f"{path} is not an icldyn run directory (no config.yaml); "
                         f"pass a directory made by `icldyn run`")
    try:
        data = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read {path / 'config.yaml'}: {err}") from None
    if not isinstance(data, dict) or "experiment" not in data:
        raise UsageError(f"{path / 'config.yaml'} is not an icldyn config (no 'experiment' key)")
    return data


def load_run(path: str | Path, parse_config: Callable[[dict], Any] | None = None) -> Run:
    """Load a run directory; a directory that is not a run is a UsageError.

    The store does not know the experiments' config classes: `parse_config(raw dict)` types the
    config (the API passes the experiment registry's parser); without it `config` is the raw dict.
    """
    path = Path(path)
    raw = read_config_dict(path)
    config = parse_config(raw) if parse_config is not None else raw
    claims_file = path / "claims.json"
    claims = json.loads(claims_file.read_text())["claims"] if claims_file.exists() else []
    env_file = path / "env.json"
    return Run(
        path=path,
        config=config,
        metrics=_read_table(path / "metrics.parquet", METRIC_COLUMNS),
        curves=general_curves(_read_table(path / "curves.parquet", CURVE_COLUMNS)),
        theory=_read_table(path / "theory.parquet", THEORY_COLUMNS),
        claims=claims,
        env=json.loads(env_file.read_text()) if env_file.exists() else {},
        parse_config=parse_config,
    )

