"""Sweeps: the spec's checks, the retry loop, and the backends against each other (local, a real
local Ray instance, Slurm through submitit's local executor) — the same members, the same metrics."""

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import icldyn
from icldyn import api
from icldyn.cli import app
from icldyn.errors import DivergedError, UsageError
from icldyn.sweep import load_spec, plan
from icldyn.sweep.driver import execute

SAMPLED = {"train.gradient": "sampled", "train.optimizer": "adam", "train.batch_size": 64}


@pytest.fixture
def tiny(tiny_lsa):
    return {**tiny_lsa, **SAMPLED, "train.steps": 20, "train.n_records": 3, "train.eval_prompts": 500,
            "train.eval_prompts_during": 200}


def spec_of(tiny, **extra):
    return {"experiment": "linreg-lsa", "overrides": tiny, "grid": {"train.lr": [0.01, 0.03]}, **extra}


def member_metrics(sweep_dir: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(f).assign(variant=f.parent.name)
              for f in sorted(Path(sweep_dir).glob("variants/*/metrics.parquet"))]
    return pd.concat(frames).sort_values(["variant", "step", "seed", "name"]).reset_index(drop=True)


# -- the spec ---------------------------------------------------------------------------------------
def test_members_are_the_grid_product_plus_the_points(tiny):
    p = plan(load_spec(spec_of(tiny, grid={"train.lr": [0.01, 0.03], "train.batch_size": [32, 64]},
                               points=[{"train.lr": 0.1, "train.batch_size": 16}])), "runs")
    assert sorted(m.name for m in p.members) == sorted(
        [f"train.lr={lr},train.batch_size={b}" for lr in ("0.01", "0.03") for b in (32, 64)]
        + ["train.lr=0.1,train.batch_size=16"])
    m = next(m for m in p.members if m.name == "train.lr=0.1,train.batch_size=16")
    assert (m.config.train.lr, m.config.train.batch_size, m.config.train.steps) == (0.1, 16, 20)
    assert m.path == p.path / "variants" / m.name and p.path.name.endswith(tuple("0123456789abcdef"))


@pytest.mark.parametrize("bad, words", [
    ({"experiment": "nope", "grid": {"train.lr": [1]}}, "unknown experiment"),
    ({"experiment": "linreg-lsa", "grid": {"train.lrr": [0.1]}}, "train.lrr"),
    ({"experiment": "linreg-lsa", "grid": {"train.lr": []}}, "empty"),
    ({"experiment": "linreg-lsa", "grid": {"train.lr": ["fast"]}}, "train.lr"),
    ({"experiment": "linreg-lsa"}, "non-empty `grid`"),
    ({"experiment": "linreg-lsa", "grid": {"train.lr": [0.1]}, "gird": 1}, "gird"),
])
def test_a_bad_spec_is_one_sentence(bad, words):
    with pytest.raises(UsageError, match=words):
        plan(load_spec(bad), "runs")


def test_cli_bad_input_exits_2_with_one_sentence(tmp_path, monkeypatch):
    spec = tmp_path / "s.yaml"
    spec.write_text("experiment: linreg-lsa\ngrid: {train.lr: []}\n")
    one = ["sweep", "linreg-lsa", "--grid", "train.lr=[0.1]", "--out", str(tmp_path)]

    def usage_error(args, words):
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        text = res.output.strip()
        assert text.startswith("error:") and len(text.splitlines()) == 1 and words in text, text

    usage_error(["sweep", str(spec)], "empty")
    usage_error(["sweep", "nope", "--grid", "train.lr=[0.1]"], "unknown experiment")
    usage_error([*one, "--set", "train.lrr=3"], "train.lrr")
    usage_error([*one, "--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers")
    if shutil.which("sbatch") is None:
        usage_error([*one, "--backend", "slurm"], "sbatch not found")
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if `icldyn[slurm]` were not installed
    usage_error([*one, "--backend", "slurm"], "needs submitit, the `slurm` extra")
    monkeypatch.setitem(sys.modules, "ray", None)
    usage_error([*one, "--backend", "ray"], "needs Ray, the `ray` extra")
    usage_error(["sweep", "linreg-lsa", "--out", str(tmp_path)], "non-empty `grid` (key: list of values)")
    assert not list(tmp_path.glob("linreg-lsa/*/variants/*"))  # nothing trained


# -- the retry loop (a fake engine: what the loop does with what comes back) -------------------------
class FlakyEngine:
    """Fails member `name` its first `fails[name]` tries with `error`."""

    def __init__(self, fails, error=RuntimeError("node lost")):
        self.fails, self.error, self.out, self.calls = fails, error, [], []

    def submit(self, items):
        for m, attempt in items:
            self.calls.append((m.name, attempt))
            bad = attempt < self.fails.get(m.name, 0)
            self.out.append((m, attempt, None if bad else {"resumed_from": None}, self.error if bad else None))

    def poll(self, timeout):
        out, self.out = self.out, []
        return out

    def progress_events(self):
        return []

    def close(self):
        pass


def test_a_failing_member_is_retried_then_reported_and_the_rest_go_on(tmp_path, tiny):
    p = plan(load_spec(spec_of(tiny, grid={"train.lr": [0.01, 0.02, 0.03]}, retries=2, backoff=0)), tmp_path)
    engine = FlakyEngine({"train.lr=0.01": 2, "train.lr=0.02": 99})
    s = execute(p, engine)
    assert sorted(s.done) == ["train.lr=0.01", "train.lr=0.03"]
    assert s.failed == {"train.lr=0.02": "RuntimeError: node lost"}
    assert s.attempts == {"train.lr=0.01": 3, "train.lr=0.02": 3, "train.lr=0.03": 1}
    # a diverged member would diverge again: reported at once, not retried
    engine = FlakyEngine({"train.lr=0.02": 99}, DivergedError("loss non-finite at step 3"))
    s = execute(p, engine)
    assert s.attempts["train.lr=0.02"] == 1 and "DivergedError" in s.failed["train.lr=0.02"]


# -- real engines -----------------------------------------------------------------------------------
def test_ray_members_equal_the_local_backend_bit_for_bit_and_a_rerun_trains_nothing(tmp_path, tiny):
    local, _ = api.sweep(spec_of(tiny), backend="local", max_parallel=2, out=tmp_path / "local")
    ray_, run = api.sweep(spec_of(tiny), backend="ray", out=tmp_path / "ray")
    assert sorted(ray_.done) == sorted(local.done) == ["train.lr=0.01", "train.lr=0.03"] and ray_.ok
    pd.testing.assert_frame_equal(member_metrics(ray_.path), member_metrics(local.path))
    assert {r["storage"] for r in ray_.results.values()} == {"shared"}  # the workers saw the driver's token
    assert run.env["complete"] and len(run.variants) == 2
    # the same sweep from the command line finds every member complete: it trains nothing
    sets = [a for k, v in tiny.items() for a in ("--set", f"{k}={v}".replace(" ", ""))]
    res = CliRunner().invoke(app, ["sweep", "linreg-lsa", "--grid", "train.lr=[0.01,0.03]", *sets,
                                   "--out", str(tmp_path / "ray")])
    assert res.exit_code == 0, res.output
    assert "0 done, 2 skipped, 0 failed" in res.output and str(ray_.path) in res.output.replace("\n", "")


def test_slurm_array_through_submitit_local_executor_equals_training_here(tmp_path, tiny):
    pytest.importorskip("submitit")  # installed by `make test` (extra `slurm`)
    here = icldyn.run("linreg-lsa", overrides=tiny, sweep={"train.lr": [0.01, 0.03]}, out=tmp_path, workers=1)
    # the same grid lands in the `icldyn run --sweep` directory: nothing left to train
    again, _ = api.sweep(spec_of(tiny), backend="slurm", cluster="local", out=tmp_path)
    assert again.path == here.path and again.done == [] and len(again.skipped) == 2
    s, run = api.sweep(spec_of(tiny), backend="slurm", cluster="local", out=tmp_path / "slurm")
    assert s.ok and sorted(s.done) == ["train.lr=0.01", "train.lr=0.03"]
    pd.testing.assert_frame_equal(member_metrics(s.path), member_metrics(here.path))
