"""Nothing lost, nothing raw: damaged run directories, the writer lock, `icldyn check`, kills inside a
write (a test-only fault hook), a full disk and refused writes (mocked), safe YAML, no network,
determinism across processes and thread counts.

Every resumed or repeated run is compared with an uninterrupted one bit for bit (the metrics
frames, exactly), and every directory a fault leaves behind must pass `check` (complete or
incomplete, never damaged).
"""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from icldyn import api, store, verify
from icldyn.cli import app
from icldyn.errors import EnvironmentFailure, UsageError

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1.0, 0.5, 0.25], "train.steps": 40,
        "train.n_records": 6, "train.eval_prompts": 2000, "train.eval_prompts_during": 500,
        "train.checkpoint_every": 10, "sampled_check": False}
SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v) if isinstance(v, list) else v}")]
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def one_sentence_error(r, code=2):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip() and not ln.startswith("linreg-lsa ")]  # progress
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output


def cli_subprocess(out: Path, *extra: str, env: dict | None = None, threads: int = 1) -> subprocess.CompletedProcess:
    code = "import sys; from icldyn.cli import main; sys.argv = ['icldyn'] + sys.argv[1:]; main()"
    return subprocess.run([sys.executable, "-c", code, "run", "linreg-lsa", "--out", str(out), *SETS,
                           "--threads", str(threads), *extra],
                          env={**os.environ, "PYTHONPATH": SRC, **(env or {})}, capture_output=True, text=True,
                          timeout=300)


def metrics_of(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path / "metrics.parquet")


def run_dir_of(out: Path) -> Path:
    return next((out / "linreg-lsa").iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted tiny run, trained in this process."""
    out = tmp_path_factory.mktemp("reference")
    return api.run("linreg-lsa", "quick", dict(TINY), out=out).path


@pytest.fixture
def copy_of(reference, tmp_path):
    def make() -> Path:
        target = tmp_path / "run"
        shutil.copytree(reference, target)
        return target
    return make


# -- bad input: one sentence, exit 2, nothing written -----------------------------------------------
def test_scalar_sweep_and_unwritable_out(tmp_path):
    one_sentence_error(invoke("run", "linreg-lsa", "--sweep", "train.lr=0.1", "--out", tmp_path))
    one_sentence_error(invoke("run", "linreg-lsa", "--out", "/proc/nope", *SETS))
    assert not any(tmp_path.iterdir())


def test_configs_that_cannot_fit_are_refused_before_training(tmp_path):
    r = invoke("run", "linreg-lsa", "--out", tmp_path, "--set", "task.d=10000000000")
    one_sentence_error(r)
    assert "task.d" in r.output
    r = invoke("run", "linreg-lsa", "--out", tmp_path, "--set", "train.batch_size=50000000", "--set",
               "task.n_points=5000")
    one_sentence_error(r)
    assert "GiB" in r.output and "available" in r.output
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["metrics", "claims", "config", "env", "checkpoint"])
def test_damaged_files_are_one_sentence_and_check_rejects_them(copy_of, damage):
    run = copy_of()
    target = {"metrics": run / "metrics.parquet", "claims": run / "claims.json", "config": run / "config.yaml",
              "env": run / "env.json", "checkpoint": run / "checkpoints" / "step_40.safetensors"}[damage]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2] + (b"{[: \x00" if damage == "config" else b""))
    name = target.name
    c = invoke("check", run)
    assert c.exit_code == 2 and name in c.output and "Traceback" not in c.output, c.output
    if damage != "checkpoint":  # claims read no checkpoint of this experiment
        r = invoke("claims", run)
        one_sentence_error(r)
        assert name in r.output


def test_missing_checkpoint_and_edited_config(copy_of):
    run = copy_of()
    (run / "checkpoints" / "step_40.safetensors").unlink()
    c = invoke("check", run)
    assert c.exit_code == 2 and "checkpoint of the last step 40 is missing" in c.output
    run2 = run.parent / "edited"
    shutil.copytree(run, run2)
    text = (run2 / "config.yaml").read_text().replace("steps: 40", "steps: 41")
    (run2 / "config.yaml").write_text(text)
    c = invoke("check", run2)
    assert c.exit_code == 2 and "has changed since the run was written" in c.output


def test_check_accepts_a_whole_run_and_says_complete(reference):
    r = invoke("check", reference)
    assert r.exit_code == 0 and "complete" in r.output
    result = verify.check_run_dir(reference)
    assert result.state == "complete" and result.problems == []


def test_a_python_object_tag_in_config_is_refused(copy_of, tmp_path):
    run = copy_of()
    marker = tmp_path / "pwned"
    (run / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    for cmd in ("claims", "check"):
        r = invoke(cmd, run)
        assert r.exit_code == 2 and "does not parse as plain YAML" in r.output, r.output
    r = invoke("run", "linreg-lsa", "--validate", "--set", f"train.optimizer=!!python/object/apply:os.system "
               f"['touch {marker}']")
    assert r.exit_code == 2
    assert not marker.exists()


# -- the lock ----------------------------------------------------------------------------------------
def test_a_second_writer_stops_and_a_stale_lock_is_taken_over(tmp_path, reference):
    config = api.EXPERIMENTS["linreg-lsa"].config("quick", dict(TINY))
    rd = store.RunDir(tmp_path / "linreg-lsa" / config.run_name())
    rd.path.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from icldyn.store import RunDir; "
                               f"c = RunDir({str(rd.path)!r}).lock(); c.__enter__(); print('held', flush=True); "
                               "time.sleep(60)"], env={**os.environ, "PYTHONPATH": SRC}, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UsageError, match=f"another live process \\(pid {holder.pid}\\)"):
            api.run("linreg-lsa", "quick", dict(TINY), out=tmp_path, resume=True)
        assert verify.check_run_dir(rd.path).state == "incomplete"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (rd.path / store.LOCK_NAME).read_text().strip() == str(holder.pid)  # stale: its process is gone
    result = api.run("linreg-lsa", "quick", dict(TINY), out=tmp_path, resume=True)
    pd.testing.assert_frame_equal(metrics_of(result.path), metrics_of(reference), check_exact=True)


# -- kills inside a write, then --resume ------------------------------------------------------------
@pytest.mark.parametrize("fault", ["step_20.safetensors", "metrics.parquet@4"])
def test_kill_inside_a_write_then_resume_is_bit_identical(tmp_path, reference, fault):
    killed = cli_subprocess(tmp_path, env={store.FAULT_KILL_ENV: fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run = run_dir_of(tmp_path)
    assert list(run.rglob(".*.tmp")), "the kill should have left a temporary file behind"
    assert invoke("check", run).exit_code == 0
    assert verify.check_run_dir(run).state == "incomplete"
    again = invoke("run", "linreg-lsa", "--out", tmp_path, *SETS)  # without --resume: says how
    one_sentence_error(again)
    assert "--resume" in again.output
    resumed = invoke("run", "linreg-lsa", "--out", tmp_path, *SETS, "--resume")
    assert resumed.exit_code == 0, resumed.output
    pd.testing.assert_frame_equal(metrics_of(run), metrics_of(reference), check_exact=True)
    assert verify.check_run_dir(run).state == "complete" and not list(run.rglob(".*.tmp"))


# -- the environment fails a write (mocked: ENOSPC, EACCES, a failed rename) --------------------------
def _fail_nth(n: int, err: OSError, real):
    calls = [0]

    def fake(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise err
        return real(*args, **kwargs)
    return fake


@pytest.mark.parametrize("where,err", [
    ("replace", OSError(errno.ENOSPC, "No space left on device")),
    ("parquet", PermissionError(errno.EACCES, "Permission denied")),
    ("replace", OSError(errno.EXDEV, "Invalid cross-device link")),
])
def test_a_refused_write_stops_cleanly_and_keeps_the_state(tmp_path, reference, monkeypatch, where, err):
    if where == "replace":
        monkeypatch.setattr(store.os, "replace", _fail_nth(7, err, os.replace))
    else:
        monkeypatch.setattr(store.pq, "write_table", _fail_nth(3, err, store.pq.write_table))
    r = invoke("run", "linreg-lsa", "--out", tmp_path, *SETS)
    one_sentence_error(r, code=4)
    assert "the run stopped at step" in r.output and "--resume" in r.output
    monkeypatch.undo()
    run = run_dir_of(tmp_path)
    assert verify.check_run_dir(run).state == "incomplete" and not list(run.rglob(".*.tmp"))
    api.run("linreg-lsa", "quick", dict(TINY), out=tmp_path, resume=True)
    pd.testing.assert_frame_equal(metrics_of(run), metrics_of(reference), check_exact=True)


def test_a_killed_worker_is_an_environment_failure(monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    from icldyn import workers

    def broken(*args, **kwargs):
        raise BrokenProcessPool("a child process terminated abruptly")
    monkeypatch.setattr(workers, "_run_pool", broken)
    with pytest.raises(EnvironmentFailure, match="worker process died"):
        workers.train_in_workers("linreg-lsa", [], None, 2, None)


# -- no network; determinism -------------------------------------------------------------------------
def test_nothing_reaches_the_network(tmp_path, reference, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access at run time: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    result = api.run("linreg-lsa", "quick", dict(TINY), out=tmp_path)
    pd.testing.assert_frame_equal(metrics_of(result.path), metrics_of(reference), check_exact=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_metrics_in_another_process(tmp_path, reference, threads):
    """Another process (1 thread) and 2 threads both give the in-process run's metrics bit for bit:
    at these sizes torch's CPU kernels do not split reductions over threads, and sampling threads
    over seeds draw from per-seed generators (see README, limits)."""
    r = cli_subprocess(tmp_path, threads=threads)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(metrics_of(run_dir_of(tmp_path)), metrics_of(reference), check_exact=True)


def test_claims_into_a_folder_that_refuses_writes_exits_4(copy_of, monkeypatch):
    run = copy_of()
    before = (run / "claims.json").read_bytes()
    monkeypatch.setattr(store.os, "replace", _fail_nth(1, PermissionError(errno.EACCES, "Permission denied"),
                                                       os.replace))
    r = invoke("claims", run)
    one_sentence_error(r, code=4)
    assert "claims.json" in r.output and "no permission" in r.output
    assert (run / "claims.json").read_bytes() == before
