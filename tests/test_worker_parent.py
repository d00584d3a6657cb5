"""A pool worker dies with its parent: killing `icldyn run` must not leave workers training on in
the background (holding run locks, writing into directories the user thinks are stopped)."""

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = """
import sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from icldyn.runner import die_with_parent
{init}

def job():
    import os, time
    print(os.getpid(), flush=True)
    time.sleep(60)

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=init)
    fut = pool.submit(job)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                         # a zombie waiting for its reaper counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def _orphan_survives(tmp_path, init: str) -> bool:
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(init=init))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)        # no cleanup at all: the harshest way a parent goes
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and _alive(worker):
        time.sleep(0.1)
    survived = _alive(worker)
    if survived:
        os.kill(worker, signal.SIGKILL)
    return survived


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_a_worker_dies_with_its_killed_parent(tmp_path):
    assert not _orphan_survives(tmp_path, "init = die_with_parent")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux-only")
def test_without_it_the_worker_outlives_its_parent(tmp_path):
    """The control: the same pool without the initializer leaves the worker running."""
    assert _orphan_survives(tmp_path, "def init():\n    pass")
