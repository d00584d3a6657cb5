"""Variants of a sweep trained side by side in worker processes, one per core.

On small CPUs several one-thread processes beat one multi-thread process (the models are too
small to split across threads; `benchmarks/README.md`, case `threads`), so the variants of a
sweep directory go to a pool of `spawn`ed workers. Each variant is trained exactly as it would
be in the parent process (the same config, seeds and run directory), so its metrics are the same
whichever worker ran it. Progress comes back through a queue and is shown by the parent.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from queue import Empty
from typing import Callable

import torch

from icldyn.runner import die_with_parent

# a worker reports progress at most this often (seconds), plus every run's last step
REPORT_EVERY = 0.25


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(device: torch.device, n_jobs: int) -> int:
    """One worker per core on CPU (never more than there are jobs); one process on a GPU."""
    return 1 if device.type != "cpu" else max(1, min(available_cores(), n_jobs))


def _init_worker(threads: int) -> None:
    die_with_parent()
    torch.set_num_threads(threads)


def _train_job(experiment: str, config, path: str, device: str, resume: bool, label: str, queue) -> str:
    from icldyn.experiments import EXPERIMENTS
    from icldyn.runner import train_one
    from icldyn.store import RunDir

    last = [0.0]

    def report(name: str, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if step >= total or now - last[0] >= REPORT_EVERY:
            last[0] = now
            queue.put((name, step, total, loss))

    train_one(EXPERIMENTS[experiment], config, RunDir(Path(path)), torch.device(device), resume, report, label)
    return label


def train_in_workers(experiment: str, jobs: list[tuple[str, object, Path, bool]], device: torch.device,
                     workers: int, progress: Callable | None) -> None:
    """Train `jobs` = [(label, config, run_dir_path, resume), ...] in `workers` processes.

    Every job runs to its end or its error; the first error (e.g. a diverged run, whose state is
    kept) is raised here after the jobs already running have stopped. A worker killed from outside
    (kill -9, the OOM killer) is an EnvironmentFailure: the variants keep their last checkpoints.
    """
    from icldyn.errors import EnvironmentFailure

    try:
        _run_pool(experiment, jobs, device, workers, progress)
    except BrokenProcessPool:
        raise EnvironmentFailure("a worker process died (killed from outside, or out of memory); every "
                                 "variant kept its last checkpoint: continue with --resume") from None


def _run_pool(experiment: str, jobs: list, device: torch.device, workers: int, progress: Callable | None) -> None:
    ctx = multiprocessing.get_context("spawn")  # fork after torch's thread pools start is unsafe
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(torch.get_num_threads(),)) as pool:
            futures = [pool.submit(_train_job, experiment, config, str(path), str(device), resume, label, queue)
                       for label, config, path, resume in jobs]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
                _drain(queue, progress)
                if any(f.exception() is not None for f in done):
                    for f in pending:
                        f.cancel()
                    wait(pending)
                    break
            _drain(queue, progress)
            for f in futures:
                if not f.cancelled():
                    f.result()  # re-raises a worker's error here


def _drain(queue, progress: Callable | None) -> None:
    while True:
        try:
            item = queue.get_nowait()
        except Empty:
            return
        if progress is not None:
            progress(*item)
