"""`icldyn export --tensorboard` read back with TensorBoard's own reader equals metrics.parquet;
`icldyn compare` overlays runs and names the config keys in which they differ."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from browser import tiny_run
from icldyn.cli import app


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return tiny_run(root, seeds=2), tiny_run(root, seeds=1, **{"train.lr": 0.02})


def _read_back(seed_dir) -> pd.DataFrame:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(seed_dir), size_guidance={"scalars": 0})
    acc.Reload()
    rows = [(tag, e.step, e.value) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)]
    return pd.DataFrame(rows, columns=["name", "step", "value"])


def test_tensorboard_round_trip(two_runs, tmp_path):
    pytest.importorskip("tensorboard")
    run = two_runs[0]
    r = CliRunner().invoke(app, ["export", str(run.path), "--tensorboard", str(tmp_path / "tb")])
    assert r.exit_code == 0, r.output
    stored = pd.read_parquet(run.path / "metrics.parquet")
    for seed in run.seeds:
        back = _read_back(tmp_path / "tb" / f"seed_{seed}")
        mine = stored[stored["seed"] == seed]
        metrics = back[back["name"] != "clock/time"].sort_values(["name", "step"]).reset_index(drop=True)
        want = mine.sort_values(["name", "step"]).reset_index(drop=True)
        assert list(metrics["name"]) == list(want["name"]) and list(metrics["step"]) == list(want["step"])
        # TensorBoard keeps scalars as float32
        np.testing.assert_array_equal(metrics["value"].to_numpy(np.float32), want["value"].to_numpy(np.float32))
        clock = back[back["name"] == "clock/time"].sort_values("step")
        times = mine.drop_duplicates("step").sort_values("step")
        np.testing.assert_array_equal(clock["value"].to_numpy(np.float32), times["time"].to_numpy(np.float32))


def test_export_of_a_folder_that_is_not_a_run(tmp_path):
    r = CliRunner().invoke(app, ["export", str(tmp_path), "--tensorboard", str(tmp_path / "tb")])
    assert r.exit_code == 2 and "not an icldyn run directory" in r.output


def test_compare(two_runs, tmp_path, monkeypatch):
    from icldyn import cli

    monkeypatch.setattr(cli.console, "width", 250)  # the claim ids on one line each
    a, b = two_runs
    out = tmp_path / "cmp.png"
    r = CliRunner().invoke(app, ["compare", str(a.path), str(b.path), "--metric", "loss/test", "--metric",
                                 "loss/train", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert out.stat().st_size > 10_000
    assert "train.lr" in r.output and "n_seeds" in r.output and "task.d" not in r.output
    assert all(c["id"] in r.output for c in a.claims)
    bad = CliRunner().invoke(app, ["compare", str(a.path), str(b.path), "--metric", "loss/nope"])
    assert bad.exit_code == 2 and "loss/test" in bad.output
    assert CliRunner().invoke(app, ["compare", str(a.path)]).exit_code == 2
