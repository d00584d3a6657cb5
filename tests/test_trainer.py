"""The shared training loop: determinism, ensembles, resume after a crash, divergence."""

import pandas as pd
import pytest
import torch

import icldyn
from icldyn import api
from icldyn.errors import DivergedError, UsageError
from icldyn.experiments import EXPERIMENTS
from icldyn.tasks.linear_regression import LinearRegressionTask
from icldyn.train.schedule import clock, learning_rates, lr_at, record_steps
from icldyn.train.trainer import Trainer

SAMPLED = {"train.gradient": "sampled", "train.optimizer": "adam", "train.lr": 0.02, "train.batch_size": 64}


def metrics(run):
    return run.metrics.sort_values(["step", "seed", "name"]).reset_index(drop=True)


def test_record_steps_are_log_spaced_with_ends():
    s = record_steps(10_000, 20)
    assert s[0] == 0 and s[-1] == 10_000 and s == sorted(set(s))
    ratios = [b / a for a, b in zip(s[2:], s[3:])]
    assert max(ratios) < 2.2  # roughly geometric: no decade is skipped


def test_schedules():
    assert lr_at(0, 1.0, 100, "cosine", 0) == pytest.approx(1.0)
    assert lr_at(50, 1.0, 100, "cosine", 0) == pytest.approx(0.5)
    assert lr_at(4, 1.0, 100, "constant", 10) == pytest.approx(0.5)


# Σ lr of 10 updates of a cosine schedule (base lr 1) with 4 warm-up steps, worked out by hand:
# lr_k = min(1, (k+1)/4)·½(1 + cos(πk/10)). Without warm-up Σ_k ½(1 + cos(πk/10)) = ½(10 + 1) = 5.5
# (the cosines of k and 10 − k cancel, cos 0 = 1 remains); warm-up removes ¾·1 + ½·½(1 + cos 0.1π)
# + ¼·½(1 + cos 0.2π) = 0.75 + 0.48776413 + 0.22612712, leaving 4.03610875. lr·steps would say 10.
COSINE_WARMUP_TIME = 4.03610875


def test_time_is_sum_of_learning_rates_worked_by_hand(tmp_path, tiny_lsa):
    over = {**tiny_lsa, **SAMPLED, "train.lr": 1e-6, "train.steps": 10, "train.schedule": "cosine",
            "train.warmup_steps": 4, "train.n_records": 4}
    run = icldyn.run("linreg-lsa", overrides=over, out=tmp_path)
    last = run.metric("loss/train").iloc[-1]
    assert last["step"] == 10
    assert last["time"] == pytest.approx(COSINE_WARMUP_TIME * 1e-6, rel=1e-7)
    assert clock(run.config.train)[-1] == pytest.approx(COSINE_WARMUP_TIME * 1e-6, rel=1e-7)


def test_clock_of_stages_restarts_the_schedule_per_stage():
    from icldyn.config import StageConfig, TrainConfig

    tc = TrainConfig(lr=1.0, steps=6, schedule="linear",
                     stages=[StageConfig(params=["a"], steps=2, lr=0.5), StageConfig(params=["b"], steps=4)])
    # stage 1: 0.5·(1 − k/2), k = 0, 1 → 0.5, 0.25; stage 2: 1·(1 − k/4) → 1, 0.75, 0.5, 0.25
    assert learning_rates(tc).tolist() == pytest.approx([0.5, 0.25, 1.0, 0.75, 0.5, 0.25])
    assert clock(tc).tolist() == pytest.approx([0, 0.5, 0.75, 1.75, 2.5, 3.0, 3.25])


def test_same_seed_same_metrics(tmp_path, tiny_lsa):
    a = icldyn.run("linreg-lsa", overrides={**tiny_lsa, **SAMPLED}, out=tmp_path / "a")
    b = icldyn.run("linreg-lsa", overrides={**tiny_lsa, **SAMPLED}, out=tmp_path / "b")
    pd.testing.assert_frame_equal(metrics(a), metrics(b))
    c = icldyn.run("linreg-lsa", overrides={**tiny_lsa, **SAMPLED, "seed": 1}, out=tmp_path / "c")
    assert not metrics(a)["value"].equals(metrics(c)["value"])


def test_ensemble_equals_each_seed_alone():
    exp = EXPERIMENTS["linreg-lsa"]
    over = {"task.d": 3, "task.n_points": 8, "model.init": "gaussian", "train.steps": 25, **SAMPLED}

    def train(seed, n):
        cfg = exp.config("quick", {**over, "seed": seed, "n_seeds": n, "sampled_check": False})
        task = exp.build_task(cfg)
        model = exp.build_model(cfg, task, list(range(seed, seed + n)))
        Trainer(cfg, task, model).fit()
        return torch.cat([p.detach().flatten(1) for p in model.parameters()], 1)

    together = train(0, 3)
    for s in range(3):
        assert torch.allclose(together[s], train(s, 1)[0], atol=1e-6)


def test_resume_after_a_crash_ends_with_the_same_metrics(tmp_path, tiny_lsa, monkeypatch):
    over = {**tiny_lsa, **SAMPLED}
    whole = icldyn.run("linreg-lsa", overrides=over, out=tmp_path / "whole")
    original = LinearRegressionTask.sample

    def crash_at_27(self, seeds, step, *args, **kw):
        if step == 27 and kw.get("stream", "train") == "train":
            raise KeyboardInterrupt("killed")
        return original(self, seeds, step, *args, **kw)

    monkeypatch.setattr(LinearRegressionTask, "sample", crash_at_27)
    with pytest.raises(KeyboardInterrupt):
        icldyn.run("linreg-lsa", overrides=over, out=tmp_path / "cut")
    monkeypatch.setattr(LinearRegressionTask, "sample", original)
    with pytest.raises(UsageError, match="--resume"):
        icldyn.run("linreg-lsa", overrides=over, out=tmp_path / "cut")
    resumed = icldyn.run("linreg-lsa", overrides=over, out=tmp_path / "cut", resume=True)
    pd.testing.assert_frame_equal(metrics(whole), metrics(resumed))
    # a complete run directory is reused, not retrained
    again = icldyn.run("linreg-lsa", overrides=over, out=tmp_path / "cut")
    assert again.env["end"] == resumed.env["end"]


def test_divergence_stops_and_keeps_state(tmp_path, tiny_lsa):
    over = {**tiny_lsa, **SAMPLED, "train.optimizer": "sgd", "train.lr": 1e4}
    with pytest.raises(DivergedError, match="non-finite at step") as err:
        icldyn.run("linreg-lsa", overrides=over, out=tmp_path)
    assert err.value.exit_code == 3
    run_dir = next((tmp_path / "linreg-lsa").iterdir())
    assert (run_dir / "metrics.parquet").exists()
    assert list((run_dir / "checkpoints").glob("step_0.safetensors"))


def test_population_mode_rejects_unsupported_models(tmp_path, tiny_lsa):
    with pytest.raises(UsageError, match="model.n_layers=1"):
        icldyn.run("linreg-lsa", overrides={**tiny_lsa, "model.n_layers": 2}, out=tmp_path)


def test_checkpoints_hold_parameters_by_module_name(tmp_path, tiny_lsa):
    run = icldyn.run("linreg-lsa", overrides={**tiny_lsa, "n_seeds": 2}, out=tmp_path)
    params = run.checkpoint()
    assert set(params) == {"w_pv.0", "w_kq.0"} and params["w_kq.0"].shape == (2, 4, 4)
    assert run.checkpoint_steps[0] == 0 and run.checkpoint_steps[-1] == 40


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches(tmp_path, tiny_lsa):
    """A real `kill -9` of `icldyn run` between checkpoints, then --resume: same metrics."""
    import os
    import signal
    import subprocess
    import sys
    import time

    over = {**tiny_lsa, **SAMPLED, "train.steps": 1000, "train.checkpoint_every": 50, "train.n_records": 8}
    args = [sys.executable, "-m", "icldyn.cli", "run", "linreg-lsa", "--out", str(tmp_path / "cut")]
    for k, v in over.items():
        args += ["--set", f"{k}={v}".replace(" ", "")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    ckpts = []
    while time.time() < deadline and proc.poll() is None:
        ckpts = list((tmp_path / "cut").glob("linreg-lsa/*/checkpoints/step_*.safetensors"))
        if any(int(p.stem.split("_")[1]) >= 200 for p in ckpts):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.stem.split("_")[1]) for p in ckpts)
    assert 0 < killed_at < 1000
    resumed = icldyn.run("linreg-lsa", overrides=over, out=tmp_path / "cut", resume=True)
    whole = icldyn.run("linreg-lsa", overrides=over, out=tmp_path / "whole")
    pd.testing.assert_frame_equal(metrics(whole), metrics(resumed))


def test_metrics_written_incrementally_equal_the_rows_written_at_once(tmp_path):
    """The trainer's metrics table grows with the rows it appends; the file equals a DataFrame of all
    the rows written in one go, also after the rows were replaced (a resume restores fewer)."""
    from icldyn.store import MetricsTable, RunDir

    rows = [{"step": k // 3, "time": 0.1 * k, "seed": k % 2, "name": f"m/{k % 3}", "value": float(k) ** 0.5}
            for k in range(50)]
    rd, table = RunDir(tmp_path / "r"), MetricsTable()
    for end in (0, 7, 7, 30, 50, 12, 40):  # 12 < 50: replaced rows, rebuilt
        rd.write_metrics(rows[:end], table)
        got = pd.read_parquet(rd.path / "metrics.parquet")
        want = pd.DataFrame(rows[:end], columns=["step", "time", "seed", "name", "value"])
        pd.testing.assert_frame_equal(got, want, check_dtype=False, check_column_type=False)
        assert list(got.dtypes.astype(str)[:3]) == ["int64", "float64", "int64"]
