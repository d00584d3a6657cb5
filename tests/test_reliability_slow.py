"""kill -9 at random moments (20 trials of one run, and of a sweep trained by worker processes, its
parent killed or one of its workers), then --resume: the metrics end bit-identical to an
uninterrupted run and no killed directory is one `check` rejects. Slow: each trial starts a process."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from icldyn import api, store, verify

SRC = str(Path(__file__).resolve().parents[1] / "src")
SMALL = {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1.0, 0.5, 0.25], "train.steps": 300,
         "train.n_records": 12, "train.eval_prompts": 2000, "train.eval_prompts_during": 500,
         "train.checkpoint_every": 25, "sampled_check": False}
SWEEP = {"train.lr": [0.05, 0.1, 0.2]}
TRIALS = 20
pytestmark = pytest.mark.slow


def start(out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]
    code = "import sys; from icldyn.cli import main; sys.argv = ['icldyn'] + sys.argv[1:]; main()"
    return subprocess.Popen([sys.executable, "-c", code, "run", "linreg-lsa", "--out", str(out), *sets, *extra],
                            env={**os.environ, "PYTHONPATH": SRC, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def same_metrics(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet"),
                                  check_exact=True)


def run_dir(out: Path) -> Path:
    return next((out / "linreg-lsa").iterdir())


def test_random_kills_then_resume(tmp_path):
    began = time.perf_counter()
    reference = api.run("linreg-lsa", "quick", dict(SMALL), out=tmp_path / "reference").path
    span = 1.2 * (time.perf_counter() - began)  # kills land anywhere in training, or just after it
    rng = random.Random(0)
    outcomes = {"killed": 0, "finished before the kill": 0}
    kept = []  # the last checkpoint step each kill left: where in the run the kills landed
    for trial in range(TRIALS):
        out = tmp_path / f"trial{trial}"
        if trial % 2:  # killed inside its n-th file write, n uniform over the ~50 writes of a run
            proc = start(out, env={store.FAULT_KILL_ENV: f"*@{rng.randint(1, 50)}"})
        else:  # killed at a random moment after training began
            proc = start(out)
            wait_for(lambda: list(out.glob("linreg-lsa/*/checkpoints/step_0.safetensors")) or proc.poll() is not None)
            time.sleep(rng.uniform(0.0, span))
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        outcomes["killed" if code == -signal.SIGKILL else "finished before the kill"] += 1
        path = run_dir(out)
        kept.append((store.RunDir(path).checkpoint_steps() or [None])[-1])
        checked = verify.check_run_dir(path, api.config_from_dict)
        assert checked.state in ("incomplete", "complete"), (trial, checked)
        api.run("linreg-lsa", "quick", dict(SMALL), out=out, resume=True)
        same_metrics(path, reference)
        assert verify.check_run_dir(path, api.config_from_dict).state == "complete"
    print(f"kill trials: {outcomes}; last checkpoint kept by each: {kept}")
    assert outcomes["killed"] >= TRIALS // 2 and len({k for k in kept if k is not None}) >= 3


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep_reference")
    return api.run("linreg-lsa", "quick", dict(SMALL), out=out, sweep=SWEEP, workers=1).path


def _sweep_args() -> list[str]:
    return ["--sweep", "train.lr=[0.05,0.1,0.2]", "--workers", "2"]


def _resume_and_compare(out: Path, reference: Path) -> None:
    top = run_dir(out)
    checked = verify.check_run_dir(top, api.config_from_dict)
    assert checked.state in ("incomplete", "complete"), checked
    api.run("linreg-lsa", "quick", dict(SMALL), out=out, resume=True, sweep=SWEEP, workers=2)
    for name in api.load_run(reference).variants:
        same_metrics(top / "variants" / name, reference / "variants" / name)
    assert verify.check_run_dir(top, api.config_from_dict).state == "complete"


@pytest.mark.parametrize("trial", range(3))
def test_kill_a_sweep_parent_with_its_workers(tmp_path, sweep_reference, trial):
    proc = start(tmp_path, *_sweep_args())
    wait_for(lambda: list(tmp_path.glob("linreg-lsa/*/variants/*/metrics.parquet")))
    time.sleep(random.Random(trial).uniform(0.0, 2.0))
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a cluster scheduler kills it
    proc.wait()
    _resume_and_compare(tmp_path, sweep_reference)


def test_kill_one_worker(tmp_path, sweep_reference):
    proc = start(tmp_path, *_sweep_args())
    locks = lambda: [p for p in tmp_path.glob("linreg-lsa/*/variants/*/.lock") if p.read_text().strip()]  # noqa: E731
    wait_for(locks)
    victim = int(locks()[0].read_text())
    os.kill(victim, signal.SIGKILL)
    code = proc.wait(timeout=300)
    err = proc.stderr.read()
    assert code == 4 and "worker process died" in err and "Traceback" not in err, err
    _resume_and_compare(tmp_path, sweep_reference)
