"""Composing one run: write the config and environment, build the task and model through the
experiment, train, let the experiment write its post-hoc tables, mark the directory complete.

Below both the API (which adds sweeps, claims and reuse of complete runs) and the worker pool
(which calls `train_one` in another process), so neither imports the other.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Callable

import torch

from icldyn.store import RunDir, write_json, write_text
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
    env = json.loads(env_file.read_text()) if env_file.exists() else {}
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

    `progress(label, step, total, loss)` is called after every update."""
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
