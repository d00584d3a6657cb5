"""Ray on more than one node of this machine (Ray's own multi-node test cluster): with a shared output
folder, with results shipped back through Ray (no shared storage), and a worker killed mid-member."""

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

import icldyn
from icldyn import api
from icldyn.sweep import load_spec, plan

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
SAMPLED = {"train.gradient": "sampled", "train.optimizer": "adam", "train.batch_size": 64}


@pytest.fixture
def tiny(tiny_lsa):
    return {**tiny_lsa, **SAMPLED, "train.steps": 20, "train.n_records": 3, "train.eval_prompts": 500,
            "train.eval_prompts_during": 200}


@pytest.fixture
def cluster():
    """A head and one more node, one CPU each: two members run on two nodes at once."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def member_metrics(sweep_dir: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(f).assign(variant=f.parent.name)
              for f in sorted(Path(sweep_dir).glob("variants/*/metrics.parquet"))]
    return pd.concat(frames).sort_values(["variant", "step", "seed", "name"]).reset_index(drop=True)


def reference(tmp_path, over, grid):
    return icldyn.run("linreg-lsa", overrides=over, sweep=grid, out=tmp_path / "ref", workers=1)


@pytest.mark.parametrize("storage", ["shared", "ship"])
def test_two_nodes_train_the_members_and_equal_training_here(tmp_path, tiny, cluster, storage):
    grid = {"train.lr": [0.01, 0.03]}
    spec = {"experiment": "linreg-lsa", "overrides": tiny, "grid": grid}
    s, run = api.sweep(spec, backend="ray", address=cluster.address, out=tmp_path / "ray", storage=storage)
    assert s.ok and len(s.done) == 2 and run.env["complete"]
    assert {r["storage"] for r in s.results.values()} == {storage}
    assert len({r["node"] for r in s.results.values()}) == 2  # one CPU per node: one member on each
    pd.testing.assert_frame_equal(member_metrics(s.path), member_metrics(reference(tmp_path, tiny, grid).path))


def _kill_member_once(member_dir: Path, after_step: int, killed: list) -> None:
    """SIGKILL the Ray worker training the member once it has a checkpoint past `after_step`."""
    import psutil

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not killed:
        steps = [int(p.stem.split("_")[1]) for p in (member_dir / "checkpoints").glob("step_*.safetensors")]
        if steps and max(steps) >= after_step:
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info["cmdline"] or [])
                if cmd.startswith("ray::") and "icldyn:" in cmd:
                    os.kill(proc.pid, signal.SIGKILL)
                    killed.append((proc.pid, max(steps)))
                    return
        time.sleep(0.05)


def test_a_killed_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path, tiny, cluster):
    over = {**tiny, "train.steps": 400, "train.n_records": 8, "train.checkpoint_every": 20}
    grid = {"train.lr": [0.01]}
    spec = {"experiment": "linreg-lsa", "overrides": over, "grid": grid, "backoff": 0.5}
    member = next(iter(plan(load_spec(spec), tmp_path / "ray").members))
    killed: list = []
    killer = threading.Thread(target=_kill_member_once, args=(member.path, 40, killed), daemon=True)
    killer.start()
    s, run = api.sweep(spec, backend="ray", address=cluster.address, out=tmp_path / "ray")
    killer.join(timeout=1)
    print("killed (pid, last checkpoint):", killed, "resumed from:", s.resumed_from, "tries:", s.attempts)
    assert killed, "the member finished before it could be killed"
    assert s.ok and s.attempts[member.name] == 2
    assert s.resumed_from[member.name] >= 40  # the retry continued from a checkpoint, not from step 0
    pd.testing.assert_frame_equal(member_metrics(s.path), member_metrics(reference(tmp_path, over, grid).path))


def test_a_preempted_slurm_task_is_requeued_and_resumes_from_its_checkpoint(tmp_path, tiny):
    """A task signalled as Slurm signals a preempted one checkpoints and is requeued by submitit."""
    pytest.importorskip("submitit")
    from icldyn.sweep.driver import execute
    from icldyn.sweep.slurm import SlurmBackend

    over = {**tiny, "train.steps": 1500, "train.n_records": 8, "train.checkpoint_every": 20}
    grid = {"train.lr": [0.01]}
    p = plan(load_spec({"experiment": "linreg-lsa", "overrides": over, "grid": grid}), tmp_path / "slurm")
    engine = SlurmBackend(p, cluster="local")
    member = p.members[0]
    preempted: list = []

    def preempt():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            steps = [int(f.stem.split("_")[1]) for f in (member.path / "checkpoints").glob("step_*.safetensors")]
            if steps and max(steps) >= 40 and engine.jobs:
                # Slurm signals the task itself on preemption; submitit's local controller would not
                # forward the signal (its `_interrupt` goes to the controller), so send it as Slurm does
                import psutil
                from submitit.local.local import LocalJobEnvironment

                job = next(iter(engine.jobs))
                for task in psutil.Process(job._process.pid).children():
                    task.send_signal(LocalJobEnvironment._usr_sig())
                preempted.append(max(steps))
                return
            time.sleep(0.05)

    t = threading.Thread(target=preempt, daemon=True)
    t.start()
    s = execute(p, engine)
    t.join(timeout=1)
    print("preempted at checkpoint", preempted, "resumed from:", s.resumed_from, "tries:", s.attempts)
    assert preempted and s.ok and s.attempts[member.name] == 1  # requeued by submitit, not retried by us
    assert s.resumed_from[member.name] >= 40
    pd.testing.assert_frame_equal(member_metrics(p.path), member_metrics(reference(tmp_path, over, grid).path))
