"""`--backend slurm`: the members as one Slurm job array through submitit.

Each array task trains one member; on preemption or timeout Slurm requeues it (submitit's
`Checkpointable`), and the requeued task resumes from the member's last checkpoint, since a member
always trains with resume. The output folder must be shared storage (as it is on Slurm clusters).
`cluster="local"` runs the same code path through submitit's local executor (no scheduler).
submitit is imported only here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from icldyn.errors import UsageError
from icldyn.sweep.member import train_member


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise UsageError("--backend slurm needs submitit, the `slurm` extra of icldyn (pip install submitit)") from None
    return submitit


class _Member:
    """The array task: a picklable callable that submitit requeues (same arguments) on preemption."""

    def __call__(self, experiment, config, path, label, device, threads):
        return train_member(experiment, config, path, label, device=device, threads=threads)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


class SlurmBackend:
    def __init__(self, plan, *, max_parallel: int | None = None, cluster: str | None = None,
                 device: str = "auto", slurm: dict | None = None):
        self.submitit = _import_submitit()
        if cluster is None and shutil.which("sbatch") is None:
            raise UsageError("--backend slurm: no Slurm on this machine (sbatch not found); run the sweep from "
                             "a login node of a Slurm cluster")
        folder = Path(plan.path) / ".submitit"
        self.executor = self.submitit.AutoExecutor(folder=folder, cluster=cluster)
        res = plan.spec.resources
        self.threads = max(1, int(res.cpus))
        params = {"cpus_per_task": self.threads, "timeout_min": 24 * 60, "name": f"icldyn-{plan.spec.experiment}"}
        if res.gpus:
            params["gpus_per_node"] = int(res.gpus)
        if max_parallel:
            params["slurm_array_parallelism"] = max_parallel
        self.executor.update_parameters(**params, **(slurm or {}))
        self.device = device
        self.jobs: dict = {}

    def submit(self, items) -> None:
        fn = _Member()
        with self.executor.batch():  # one job array
            pending = [(self.executor.submit(fn, m.config.experiment, m.config, str(m.path), m.label,
                                             self.device, self.threads), m, a) for m, a in items]
        for job, member, attempt in pending:
            self.jobs[job] = (member, attempt)

    def poll(self, timeout: float) -> list:
        import time

        deadline = time.monotonic() + timeout
        while True:
            done = [j for j in self.jobs if j.done()]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        out = []
        for job in done:
            member, attempt = self.jobs.pop(job)
            err = job.exception()
            out.append((member, attempt, None if err else job.result(), err))
        return out

    def progress_events(self) -> list:
        return []  # array tasks report only their end (through the member's status)

    def close(self) -> None:
        for job in self.jobs:
            job.cancel(check=False)
