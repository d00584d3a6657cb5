"""The run directory: every file written atomically (temp file + rename), read back by `load_run`.

<out>/<experiment>/<config-hash>-s<first>-<last>/
  config.yaml  env.json  metrics.parquet  curves.parquet  theory.parquet
  checkpoints/step_<k>.safetensors  claims.json  figures/*.png
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file

from icldyn.errors import EnvironmentFailure, UsageError

LOCK_NAME = ".lock"
METRIC_COLUMNS = ["step", "time", "seed", "name", "value"]
# curves.parquet: a curve against a swept x (n_examples, S1, prune_rate, …); any further column is a
# condition (alpha_test, shift, order, …). Files of the older five-column form still read.
CURVE_COLUMNS = ["predictor", "x_name", "x", "metric", "value", "stderr", "seed"]
LEGACY_CURVE_COLUMNS = ["predictor", "n_examples", "mse", "stderr", "seed"]
THEORY_COLUMNS = ["time", "name", "value"]


# Test-only fault hook: "PATTERN" or "PATTERN@N" (fnmatch on the file name); the first (N-th) write
# of a matching file kills its own process (SIGKILL) after the temporary file is written and before
# the rename, as a kill -9 or a power cut at the worst moment would.
FAULT_KILL_ENV = "ICLDYN_FAULT_KILL"
_fault_count = [0]


def _fault_hook(path: Path) -> None:
    fault = os.environ.get(FAULT_KILL_ENV)
    if not fault:
        return
    pattern, _, nth = fault.partition("@")
    if fnmatch.fnmatch(path.name, pattern):
        _fault_count[0] += 1
        if _fault_count[0] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename onto `path`: readers never see a half-written file.

    A write the environment refuses (disk full, no permission, read-only or vanished folder) is an
    EnvironmentFailure naming the file; the file's previous version, if any, is left as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        _fault_hook(path)
        os.replace(tmp, path)
    except OSError as err:
        raise EnvironmentFailure(f"cannot write {path}: {_reason(err)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _reason(err: OSError) -> str:
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "no permission to write there"
    return f"{err.strerror or err}"


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


METRIC_SCHEMA = pa.schema([("step", pa.int64()), ("time", pa.float64()), ("seed", pa.int64()),
                           ("name", pa.string()), ("value", pa.float64())])


class MetricsTable:
    """metrics.parquet's rows as an Arrow table grown as rows are appended: writing the file at
    every record then converts only the new rows (rebuilding a DataFrame of all rows each time
    made the writes quadratic: 10 s of a 70 s run of 17 variants with ~70 records each)."""

    def __init__(self) -> None:
        self.n_rows, self.table = 0, METRIC_SCHEMA.empty_table()

    def update(self, rows: list[dict]) -> pa.Table:
        """The table of `rows`, which must extend the rows of the last update (else it is rebuilt)."""
        if len(rows) < self.n_rows:
            self.__init__()
        if len(rows) > self.n_rows:
            new = pa.Table.from_pylist(rows[self.n_rows:], schema=METRIC_SCHEMA)
            self.table = pa.concat_tables([self.table, new])
            if self.table.column(0).num_chunks > 64:
                self.table = self.table.combine_chunks()
            self.n_rows = len(rows)
        return self.table


def write_table(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    frame = frame[columns] if len(frame) else pd.DataFrame({c: [] for c in columns})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # serialised in memory, written by Python: a full disk is an OSError, not a SafetensorError
    data = save(tensors, metadata={"meta": json.dumps(meta)})
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and meta of a checkpoint; a damaged or missing file is a UsageError naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata().get("meta", "{}"))
        return load_file(str(path)), meta
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise UsageError(f"checkpoint {path} is damaged or unreadable ({type(err).__name__}); "
                         f"delete it to resume from the one before") from None


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
        if not env.exists():
            return False
        data = read_json(env)
        return isinstance(data, dict) and data.get("complete", False) is True

    def write_metrics(self, rows: list[dict], table: "MetricsTable | None" = None) -> None:
        """metrics.parquet from `rows` ({step, time, seed, name, value}); with `table`, the rows added
        since its last update are converted only (the trainer writes at every record)."""
        arrow = (table or MetricsTable()).update(rows)
        atomic_write(self.path / "metrics.parquet", lambda tmp: pq.write_table(arrow, tmp))

    def read_metric_rows(self) -> list[dict]:
        return read_table(self.path / "metrics.parquet", METRIC_COLUMNS).to_dict("records")

    @contextmanager
    def lock(self):
        """Hold this directory's writer lock: another live process holding it is a UsageError.

        An advisory `flock` on `<dir>/.lock`: the kernel drops it when its process dies, so the
        lock of a killed run is stale at once and the next writer simply takes it."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise UsageError(f"{self.path} is being written by another live process (pid {holder}); "
                                 f"wait for it to finish or stop it, then run again with --resume") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield self
        finally:
            os.close(fd)  # releases the flock

    def locked_by_other(self) -> str | None:
        """The pid text of a live process holding this directory's lock, else None."""
        import fcntl

        f = self.path / LOCK_NAME
        if not f.exists():
            return None
        fd = os.open(f, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

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


def read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """A Parquet table of a run directory (empty when absent); damaged or wrong: a UsageError."""
    if not path.exists():
        return pd.DataFrame({c: [] for c in columns})
    try:
        frame = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
        raise UsageError(f"{path} is damaged and cannot be read as Parquet ({type(err).__name__}); "
                         f"restore it or rerun (with --resume, from the last checkpoint)") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing and not (path.name == "curves.parquet" and set(LEGACY_CURVE_COLUMNS) <= set(frame.columns)):
        raise UsageError(f"{path} lacks the column(s) {', '.join(missing)}; expected {', '.join(columns)}")
    return frame


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path} is damaged and is not JSON ({type(err).__name__}); restore it, or delete it "
                         f"and let icldyn write it again") from None


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
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise UsageError(f"{path / 'config.yaml'} does not parse as plain YAML{at} ({type(err).__name__}); "
                         f"restore it from the run's settings, or delete the directory to start over") from None
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
    claims = read_json(claims_file) if claims_file.exists() else {"claims": []}
    if not isinstance(claims, dict) or not isinstance(claims.get("claims"), list):
        raise UsageError(f"{claims_file} is not an icldyn claims file (no 'claims' list); delete it and run "
                         f"`icldyn claims {path}` to write it again")
    claims = claims["claims"]
    env_file = path / "env.json"
    return Run(
        path=path,
        config=config,
        metrics=read_table(path / "metrics.parquet", METRIC_COLUMNS),
        curves=general_curves(read_table(path / "curves.parquet", CURVE_COLUMNS)),
        theory=read_table(path / "theory.parquet", THEORY_COLUMNS),
        claims=claims,
        env=read_json(env_file) if env_file.exists() else {},
        parse_config=parse_config,
    )
