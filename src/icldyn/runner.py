"""Composing one run: write the config and environment, build the task and model through the
experiment, train, let the experiment write its post-hoc tables, mark the directory complete.

Below both the API (which adds sweeps, claims and reuse of complete runs) and the worker pool
(which calls `train_one` in another process), so neither imports the other.
"""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from pathlib import Path
from typing import Callable

import torch

from icldyn.errors import EnvironmentFailure
from icldyn.store import RunDir, read_json, write_json, write_text
from icldyn.train.trainer import Trainer
from icldyn.version import __version__


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device, config) -> dict:
    """env.json: versions, device, git commit, the config hash the directory was written under."""
    import numpy

    return {"icldyn": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "platform": platform.platform(), "device": str(device),
            "cuda": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "git_commit": _git_commit(),
            "config_hash": config.config_hash(), "start": now(), "end": None, "complete": False}


def mark(rd: RunDir, **fields) -> None:
    """Update fields of a run directory's env.json (e.g. end time, complete)."""
    env_file = rd.path / "env.json"
    env = read_json(env_file) if env_file.exists() else {}
    env.update(fields)
    write_json(env_file, env)


def start_run_dir(rd: RunDir, config, device: torch.device) -> None:
    """Create a run (or sweep) directory with its resolved config and, once, its environment."""
    rd.create()
    write_text(rd.path / "config.yaml", config.to_yaml())
    write_json(rd.path / "config.json", config.model_dump(mode="json"))  # for DuckDB (`icldyn runs`)
    if not (rd.path / "env.json").exists():
        write_json(rd.path / "env.json", environment(device, config))


def train_one(exp, config, rd: RunDir, device: torch.device, resume: bool, progress: Callable | None,
              label: str) -> None:
    """Train one config of experiment `exp` into `rd` (resuming from its last checkpoint if asked).

    `progress(label, step, total, loss)` is called after every update. The directory is locked
    while it is written: a second live writer stops with a UsageError (`RunDir.lock`)."""
    try:
        with rd.lock():
            remove_leftovers(rd)
            _train_locked(exp, config, rd, device, resume, progress, label)
    except OSError as err:  # a folder the environment refuses outside the store's own writes
        raise EnvironmentFailure(f"cannot write in {rd.path} ({err.strerror or type(err).__name__}: "
                                 f"{err.filename or ''}); fix the folder, then continue with --resume") from None


def die_with_parent() -> None:
    """In a pool worker: ask Linux to send SIGTERM when the parent process dies, so a killed
    `icldyn run` or `icldyn sweep` does not leave workers training on (and holding run locks) in
    the background. Its atomic writes and the checkpoint it had keep the run resumable. A no-op
    where prctl is unavailable."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return


def remove_leftovers(rd: RunDir) -> None:
    """Delete the temporary files an interrupted atomic write left behind (never a finished file)."""
    for tmp in rd.path.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _train_locked(exp, config, rd: RunDir, device: torch.device, resume: bool, progress: Callable | None,
                  label: str) -> None:
    start_run_dir(rd, config, device)
    task = exp.build_task(config)
    seeds = list(range(config.seed, config.seed + config.n_seeds))
    model = exp.build_model(config, task, seeds)
    cb = (lambda step, total, loss, secs: progress(label, step, total, loss)) if progress else None
    trainer = Trainer(config, task, model, rd, exp.probes(config, task), device=device, progress=cb,
                      records=exp.record_steps(config))
    trainer.fit(resume=resume)
    exp.after_training(rd, config, task, model, device)
    mark(rd, end=now(), complete=True)


def memory_available(device: torch.device) -> int | None:
    """Bytes free for a run: the GPU's free memory, else /proc/meminfo's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_lower_bound(config, itemsize: int) -> int:
    """Bytes a run needs at least: parameters with gradients and two optimizer moments (4 copies of
    n_layers·12·width² per seed, the count of a transformer block), one training batch of
    tokens (seeds·batch·tokens·width) and one layer's attention scores (seeds·batch·heads·tokens²).

    width = the largest of task.d + 1, task.n_states and model.d_model; tokens = 2·(n_points + 1)
    (interleaved x and y). A lower bound, not a forecast: a run it lets through may still exhaust
    memory (activations of every layer, evaluation batches), but one it refuses cannot fit."""
    task, model, train = config.task, config.model, config.train
    width = max(getattr(task, "d", 0) + 1, getattr(task, "n_states", 0), getattr(model, "d_model", 0) or 0, 1)
    tokens = 2 * (getattr(task, "n_points", 1) + 1)
    layers, heads = getattr(model, "n_layers", 1), getattr(model, "n_heads", 1) or 1
    seeds, batch = config.n_seeds, train.batch_size
    params = 4 * layers * 12 * width * width * seeds
    inputs = seeds * batch * tokens * width
    scores = seeds * batch * heads * tokens * tokens
    return (params + inputs + scores) * itemsize


def check_resources(config, device: torch.device, itemsize: int) -> None:
    """Refuse (UsageError) a config whose `memory_lower_bound` exceeds the memory available."""
    from icldyn.errors import UsageError

    need, have = memory_lower_bound(config, itemsize), memory_available(device)
    if have is not None and need > have:
        raise UsageError(f"this config needs at least {need / 2**30:.3g} GiB of memory ({device.type}) but "
                         f"{have / 2**30:.3g} GiB are available; lower task.d, task.n_points, train.batch_size "
                         f"or --seeds")
