"""`--backend local`: members in a pool of `spawn`ed processes on this machine, one per core.

The default; as `icldyn run --sweep` (one-thread workers beat one multi-thread process on small
CPUs). Progress comes back through a queue.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from queue import Empty

from icldyn.runner import die_with_parent
from icldyn.sweep.member import train_member


def default_workers(device: str) -> int:
    """One worker per core this process may run on (its affinity mask); one process on a GPU."""
    from icldyn.train.trainer import resolve_device

    if resolve_device(device).type != "cpu":
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _Report:
    """A picklable progress callback that puts onto a manager queue."""

    def __init__(self, queue):
        self.queue = queue

    def __call__(self, *item):
        self.queue.put(item)


class LocalBackend:
    def __init__(self, workers: int, *, device: str = "auto", threads: int = 1):
        ctx = multiprocessing.get_context("spawn")  # fork after torch's thread pools start is unsafe
        self.manager = ctx.Manager()
        self.queue = self.manager.Queue()
        self.ctx, self.workers = ctx, max(1, workers)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=die_with_parent)
        self.device, self.threads = device, threads
        self.futures: dict = {}

    def submit(self, items) -> None:
        if getattr(self.pool, "_broken", False):  # a worker was killed: the pool takes no more jobs
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=self.ctx, initializer=die_with_parent)
        for member, attempt in items:
            fut = self.pool.submit(train_member, member.config.experiment, member.config, str(member.path),
                                   member.label, device=self.device, threads=self.threads,
                                   report=_Report(self.queue))
            self.futures[fut] = (member, attempt)

    def poll(self, timeout: float) -> list:
        if not self.futures:
            return []
        done, _ = wait(list(self.futures), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            member, attempt = self.futures.pop(fut)
            err = fut.exception()
            out.append((member, attempt, None if err else fut.result(), err))
        return out

    def progress_events(self) -> list:
        events = []
        while True:
            try:
                events.append(self.queue.get_nowait())
            except Empty:
                return events

    def close(self) -> None:
        for fut in self.futures:
            fut.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.manager.shutdown()
