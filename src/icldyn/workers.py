"""Variants of a sweep (and the experiments of `icldyn reproduce`) trained side by side in worker
processes, one per core.

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
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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


def _reporter(queue) -> Callable:
    """A progress callback for a worker: puts (label, step, total, loss) on the parent's queue at most
    every REPORT_EVERY seconds, and always a run's last step."""
    last = [0.0]

    def report(name: str, step: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if step >= total or now - last[0] >= REPORT_EVERY:
            last[0] = now
            queue.put((name, step, total, loss))

    return report


def train_job(report: Callable, experiment: str, config, path: str, device: str, resume: bool, label: str) -> str:
    from icldyn.experiments import EXPERIMENTS
    from icldyn.runner import train_one
    from icldyn.store import RunDir

    train_one(EXPERIMENTS[experiment], config, RunDir(Path(path)), torch.device(device), resume, report, label)
    return label


def _call_with_reporter(fn: Callable, queue, args: tuple):
    return fn(_reporter(queue), *args)


def train_in_workers(experiment: str, jobs: list[tuple[str, object, Path, bool]], device: torch.device,
                     workers: int, progress: Callable | None) -> None:
    """Train `jobs` = [(label, config, run_dir_path, resume), ...] in `workers` processes.

    Every job runs to its end or its error; the first error (e.g. a diverged run, whose state is
    kept) is raised here after the jobs already running have stopped. A worker killed from outside
    (kill -9, the OOM killer) is an EnvironmentFailure: the variants keep their last checkpoints.
    """
    run_in_workers(train_job, [(experiment, config, str(path), str(device), resume, label)
                                for label, config, path, resume in jobs], workers, progress)


def run_in_workers(fn: Callable, jobs: list[tuple], workers: int, progress: Callable | None) -> list:
    """[fn(report, *args) for args in jobs], computed in `workers` spawned processes (each with this
    process's torch thread count), started in the order given; their results in that order.

    `fn` must be a module-level function (it is pickled by name) that takes a progress callback
    `report(label, step, total, loss)` first; its reports reach `progress` here. The first error
    is raised after the jobs already running have stopped; a worker killed from outside is an
    EnvironmentFailure (every run directory keeps its last checkpoint)."""
    return run_tasks([(fn, args) for args in jobs], workers, progress)


def run_tasks(tasks: list[tuple[Callable, tuple]], workers: int, progress: Callable | None,
              then: Callable[[int, object], list] | None = None) -> list:
    """Like `run_in_workers`, for tasks (fn, args) of different functions, started in the order
    given. `then(i, result)`, called here as task i finishes, returns further tasks, which start
    before the tasks still waiting (e.g. the step that needs several tasks done). The results of
    all tasks, in the order they were created."""
    from icldyn.errors import EnvironmentFailure

    try:
        return _run_pool(tasks, workers, progress, then)
    except BrokenProcessPool:
        raise EnvironmentFailure("a worker process died (killed from outside, or out of memory); every "
                                 "run kept its last checkpoint: continue with --resume") from None


def _run_pool(tasks: list, workers: int, progress: Callable | None, then: Callable | None) -> list:
    ctx = multiprocessing.get_context("spawn")  # fork after torch's thread pools start is unsafe
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(torch.get_num_threads(),)) as pool:
            # tasks are handed to the pool only as workers free up, so follow-ups can go first
            waiting = deque(enumerate(tasks))
            results, running = [None] * len(tasks), {}
            while waiting or running:
                while waiting and len(running) < workers:
                    i, (fn, args) = waiting.popleft()
                    running[pool.submit(_call_with_reporter, fn, queue, args)] = i
                done, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
                _drain(queue, progress)
                for f in done:
                    i = running.pop(f)
                    if f.exception() is not None:
                        wait(running)  # the jobs already running end (their state is kept)
                        _drain(queue, progress)
                        raise f.exception()
                    results[i] = f.result()
                    for follow in (then(i, results[i]) if then else [])[::-1]:
                        results.append(None)
                        waiting.appendleft((len(results) - 1, follow))
            _drain(queue, progress)
            return results


def _drain(queue, progress: Callable | None) -> None:
    while True:
        try:
            item = queue.get_nowait()
        except Empty:
            return
        if progress is not None:
            progress(*item)
