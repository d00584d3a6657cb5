"""Export a stored run's metrics as TensorBoard event files (`tensorboard --logdir DIR` shows them).

One TensorBoard run per seed (`<logdir>/seed_<s>`; a sweep's variants under `<logdir>/<variant>/`),
one scalar tag per metric name, the training step as TensorBoard's step. The gradient-flow clock
(time = Σ lr) is written as the scalar `clock/time`, so any metric can be read against it.
tensorboard is an optional extra: `pip install 'icldyn[tensorboard]'`.
"""

from __future__ import annotations

from pathlib import Path

from icldyn.analysis import runs as reader
from icldyn.errors import UsageError


def _writer(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("export --tensorboard needs the tensorboard package: "
                         "pip install 'icldyn[tensorboard]'") from None
    return SummaryWriter(log_dir=str(path))


def export_tensorboard(run, logdir: str | Path) -> list[Path]:
    """Write every metric of `run` (each variant of a sweep) as event files under `logdir`; returns
    the TensorBoard run directories written."""
    logdir = Path(logdir)
    views = reader.views(run, single="")
    written = []
    for label, sub in views:
        m = sub.metrics
        if not len(m):
            continue
        for seed, rows in m.groupby("seed"):
            target = logdir / label / f"seed_{int(seed)}" if label else logdir / f"seed_{int(seed)}"
            writer = _writer(target)
            try:
                for name, group in rows.sort_values("step", kind="stable").groupby("name", sort=False):
                    for step, value in zip(group["step"].to_numpy(), group["value"].to_numpy()):
                        writer.add_scalar(str(name), float(value), int(step))
                clock = rows.drop_duplicates("step").sort_values("step")
                for step, time in zip(clock["step"].to_numpy(), clock["time"].to_numpy()):
                    writer.add_scalar("clock/time", float(time), int(step))
            finally:
                writer.close()
            written.append(target)
    if not written:
        raise UsageError(f"{run.path} has no metrics to export (metrics.parquet is empty or missing)")
    return written
