"""Train one member: the body every backend runs, in whatever process or node the engine picks.

A member always trains with resume: a run directory with a checkpoint continues from it (a killed,
preempted or retried member), an empty one starts at step 0 — so rerunning a sweep *is* its resume.
Where the output folder is not visible to the node (`storage="ship"`), the member trains into a
node-private folder and returns the run directory's files as bytes for the driver to write.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Callable

# a member reports progress at most this often (seconds), plus its last step
REPORT_EVERY = 0.25


def train_member(experiment: str, config, path: str, label: str, *, device: str = "auto", threads: int = 1,
                 storage: str = "shared", sweep_key: str = "", report: Callable | None = None) -> dict:
    """Train `config` into run directory `path`; return {label, resumed_from, files (ship only)}.

    `report(label, step, total, loss)` is called at most every REPORT_EVERY seconds and at the end.
    `storage`: "shared" writes into `path`; "ship" trains in a private folder and returns its files.
    """
    import torch

    from icldyn.experiments import EXPERIMENTS
    from icldyn.runner import train_one
    from icldyn.store import RunDir
    from icldyn.train.trainer import resolve_device

    torch.set_num_threads(max(1, int(threads)))
    target = Path(path) if storage == "shared" else _private_dir(sweep_key, label)
    rd = RunDir(target)
    if rd.is_complete and storage == "ship":
        return {"label": label, "resumed_from": None, "files": pack(target)}
    steps = rd.checkpoint_steps()
    last = [0.0]

    def progress(name: str, step: int, total: int, loss: float) -> None:
        t = time.monotonic()
        if report is not None and (step >= total or t - last[0] >= REPORT_EVERY):
            last[0] = t
            report(name, step, total, loss)

    train_one(EXPERIMENTS[experiment], config, rd, resolve_device(device), True, progress, label)
    out = {"label": label, "resumed_from": steps[-1] if steps else None}
    if storage == "ship":
        out["files"] = pack(target)
    return out


def _private_dir(sweep_key: str, label: str) -> Path:
    """A node-local folder for one member (the same on a retry on this node, so it resumes)."""
    safe = label.replace("/", "_").replace(":", "_")
    return Path(tempfile.gettempdir()) / f"icldyn-{os.getuid()}" / sweep_key / safe


def pack(root: Path) -> dict[str, bytes]:
    """Every file under `root` as {relative path: bytes} (what a member ships back to the driver)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def unpack(files: dict[str, bytes], root: Path) -> None:
    """Write shipped files under `root` atomically, env.json last (it marks the directory complete)."""
    from icldyn.store import atomic_write

    for rel in sorted(files, key=lambda r: r == "env.json"):
        atomic_write(root / rel, lambda tmp, data=files[rel]: Path(tmp).write_bytes(data))
