"""Sweeps on one machine or a cluster: a spec, its members, and backends that map "train this
member" onto an existing engine — a local process pool, Ray tasks, or a Slurm job array (submitit).

`plan(spec, out)` checks a spec and expands its members; `run_sweep(plan, backend=...)` trains the
incomplete ones (complete ones are skipped, killed ones resume from their checkpoint, failed ones
are retried with a back-off and then reported) and returns a `Summary`. Claims over the sweep
directory are the API's (`icldyn.api.sweep`). Ray and submitit are imported only when chosen.
"""

from __future__ import annotations

from typing import Callable

from icldyn.errors import UsageError
from icldyn.store import write_text
from icldyn.sweep.driver import Summary, execute
from icldyn.sweep.spec import Member, SweepPlan, SweepSpec, load_spec, plan

BACKENDS = ("local", "ray", "slurm")

__all__ = ["BACKENDS", "Member", "Summary", "SweepPlan", "SweepSpec", "load_spec", "plan", "run_sweep"]


def make_backend(sweep_plan: SweepPlan, backend: str, *, address: str | None = None, max_parallel: int | None = None,
                 device: str = "auto", storage: str = "auto", cluster: str | None = None):
    """The engine for `backend` (one of BACKENDS); usage errors (a missing package, an unreachable
    address) are raised here, before anything trains."""
    if backend == "local":
        from icldyn.sweep.local import LocalBackend, default_workers

        n = max_parallel or default_workers(device)
        return LocalBackend(min(n, max(1, len(sweep_plan.members))), device=device)
    if backend == "ray":
        from icldyn.sweep.ray_backend import RayBackend

        return RayBackend(sweep_plan, address=address, storage=storage, device=device)
    if backend == "slurm":
        from icldyn.sweep.slurm import SlurmBackend

        return SlurmBackend(sweep_plan, max_parallel=max_parallel, cluster=cluster, device=device)
    raise UsageError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")


def run_sweep(sweep_plan: SweepPlan, backend: str = "local", *, address: str | None = None,
              max_parallel: int | None = None, progress: Callable | None = None, status: Callable | None = None,
              storage: str = "auto", cluster: str | None = None) -> Summary:
    """Train the plan's incomplete members on `backend`; write sweep.yaml; return the summary.

    `address` (Ray): `auto`, host:port, ray://...; None starts a local Ray instance.
    `storage` (Ray): auto (shared if the workers see the output folder), shared, or ship.
    `cluster` (Slurm): None lets submitit pick (slurm where sbatch exists), `local` for its local executor.
    """
    from icldyn.runner import start_run_dir
    from icldyn.store import RunDir
    from icldyn.train.trainer import resolve_device

    device = sweep_plan.config.device
    engine = make_backend(sweep_plan, backend, address=address, max_parallel=max_parallel, device=device,
                          storage=storage, cluster=cluster)
    start_run_dir(RunDir(sweep_plan.path), sweep_plan.config, resolve_device(sweep_plan.config.device))
    write_text(sweep_plan.path / "sweep.yaml", sweep_plan.sweep_yaml())
    inflight = max_parallel if backend == "ray" else None
    return execute(sweep_plan, engine, progress=progress, status=status, max_inflight=inflight)

