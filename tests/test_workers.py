"""Variants trained side by side in worker processes give the same runs as one after another."""

import pandas as pd
import pytest

import icldyn
from icldyn.errors import DivergedError

SAMPLED = {"train.gradient": "sampled", "train.optimizer": "adam", "train.batch_size": 64}


def variant_metrics(run) -> pd.DataFrame:
    frames = [v.metrics.assign(variant=name) for name, v in run.variants.items()]
    return pd.concat(frames).sort_values(["variant", "step", "seed", "name"]).reset_index(drop=True)


def test_two_workers_give_the_same_metrics_as_one(tmp_path, tiny_lsa):
    sweep = {"train.lr": [0.01, 0.03]}
    over = {**tiny_lsa, **SAMPLED}
    seen = []
    parallel = icldyn.run("linreg-lsa", overrides=over, sweep=sweep, out=tmp_path / "two", workers=2,
                          progress=lambda *item: seen.append(item))
    serial = icldyn.run("linreg-lsa", overrides=over, sweep=sweep, out=tmp_path / "one", workers=1)
    assert len(parallel.variants) == 2
    pd.testing.assert_frame_equal(variant_metrics(parallel), variant_metrics(serial))
    # progress came back from both workers, each ending on its last step
    finished = {label for label, step, total, _ in seen if step == total}
    assert len(finished) == 2
    assert [c["measured"] for c in parallel.claims] == [c["measured"] for c in serial.claims]


def test_a_diverging_variant_in_a_worker_stops_the_run_with_its_error(tmp_path, tiny_lsa):
    over = {**tiny_lsa, **SAMPLED, "train.optimizer": "sgd"}
    with pytest.raises(DivergedError, match="non-finite at step"):
        icldyn.run("linreg-lsa", overrides=over, sweep={"train.lr": [0.01, 1e4]}, out=tmp_path, workers=2)
    # the diverged variant kept its metrics and first checkpoint
    run_dir = next((tmp_path / "linreg-lsa").iterdir())
    kept = list(run_dir.glob("variants/*/checkpoints/step_0.safetensors"))
    assert kept
