"""`--backend ray`: every member a Ray task on an existing cluster (or a local Ray instance).

Each task asks for the CPUs/GPUs of the spec's `resources`. Where the output folder is visible to
the node that runs a member (shared storage: the driver leaves a token file in the sweep directory
and the task looks for it), the member writes its run directory there; elsewhere it trains in a
node-private folder and its files come back through Ray for the driver to write. Progress comes
back through a Ray queue (an actor). Ray is imported only here, and its usage reporting is off.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

from icldyn.errors import UsageError
from icldyn.sweep.member import train_member

TOKEN = ".icldyn-shared-token"


def _import_ray():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing at run time reaches the network
    try:
        import ray
    except ImportError:
        raise UsageError("--backend ray needs Ray, the `ray` extra of icldyn (pip install -c constraints.txt ray)") from None
    return ray


def _check_reachable(address: str) -> None:
    """Fail in one sentence (not after Ray's long retries) when host:port does not answer."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or address, int(port or 6379)), timeout=3).close()
    except (OSError, ValueError):
        raise UsageError(f"--address {address}: no Ray cluster answers there (give host:port of a running "
                         f"head node, `auto` for the one `ray start` made on this machine, or leave it out)") from None


def _member_task(experiment, config, path, label, device, threads, storage, sweep_key, token, queue):
    if storage == "auto":
        t = Path(path).parent.parent / TOKEN
        storage = "shared" if t.exists() and t.read_text() == token else "ship"
    import ray

    report = (lambda *item: queue.put_nowait(item)) if queue is not None else None
    out = train_member(experiment, config, path, label, device=device, threads=threads, storage=storage,
                       sweep_key=sweep_key, report=report)
    return {**out, "node": ray.get_runtime_context().get_node_id(), "storage": storage}


class RayBackend:
    def __init__(self, plan, *, address: str | None = None, storage: str = "auto", device: str = "auto",
                 num_cpus: int | None = None):
        ray = self.ray = _import_ray()
        if address is not None:
            _check_reachable(address)
        self.owns = not ray.is_initialized()
        if self.owns:
            try:
                kw = {"address": address} if address else {"num_cpus": num_cpus}
                ray.init(**kw, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except ConnectionError as err:
                raise UsageError(f"--address {address}: could not connect to a Ray cluster ({err})") from None
        from ray.util.queue import Queue

        self.queue = Queue()
        self.storage, self.device = storage, device
        self.key = plan.path.name
        self.token = secrets.token_hex(8)
        if storage == "auto":
            plan.path.mkdir(parents=True, exist_ok=True)
            (plan.path / TOKEN).write_text(self.token)
        res = plan.spec.resources
        self.remote = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=0)(_member_task)
        self.threads = max(1, int(res.cpus))
        self.refs: dict = {}
        self.plan = plan

    def submit(self, items) -> None:
        for member, attempt in items:
            ref = self.remote.options(name=f"icldyn:{member.name}").remote(
                member.config.experiment, member.config, str(member.path), member.label, self.device,
                self.threads, self.storage, self.key, self.token, self.queue)
            self.refs[ref] = (member, attempt)

    def poll(self, timeout: float) -> list:
        if not self.refs:
            return []
        done, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        out = []
        for ref in done:
            member, attempt = self.refs.pop(ref)
            try:
                out.append((member, attempt, self.ray.get(ref), None))
            except Exception as err:  # a member's error, or its worker died (RayTaskError/WorkerCrashedError)
                out.append((member, attempt, None, err))
        return out

    def progress_events(self) -> list:
        n = self.queue.qsize()
        return self.queue.get_nowait_batch(n) if n else []

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        (self.plan.path / TOKEN).unlink(missing_ok=True)
        if self.owns:
            self.ray.shutdown()
