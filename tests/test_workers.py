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


def test_reproduce_in_two_workers_gives_the_runs_of_one(tmp_path, monkeypatch, tiny_lsa):
    """`icldyn reproduce` trains experiments side by side: the same runs (metrics, claims) as one after
    another, the summary in registry order, and the parent's preset reaches the workers."""
    from icldyn.api import reproduce
    from icldyn.experiments import EXPERIMENTS

    induction = {"task.n_points": 20, "train.steps": 20, "train.dataset_size": 200, "train.batch_size": 200,
                 "validation_size": 100, "train.n_records": 6, "train.eval_prompts": 100,
                 "train.eval_prompts_during": 100, "info_draws": 200, "generalisation_lengths": [10, 20],
                 "generalisation_prompts": 100, "compare_losses": False}
    monkeypatch.setitem(type(EXPERIMENTS["linreg-lsa"]).presets, "quick", tiny_lsa)
    monkeypatch.setitem(type(EXPERIMENTS["induction-ngram"]).presets, "quick", induction)
    names = ["linreg-lsa", "induction-ngram"]
    seen = []
    two = reproduce(names, out=tmp_path / "two", workers=2, progress=lambda *item: seen.append(item))
    one = reproduce(names, out=tmp_path / "one", workers=1)
    for name in names:
        a, b = (icldyn.load_run(next((root / name).iterdir())) for root in (tmp_path / "two", tmp_path / "one"))
        assert a.config.train.steps == b.config.train.steps == {"linreg-lsa": 40, "induction-ngram": 20}[name]
        pd.testing.assert_frame_equal(a.metrics, b.metrics)
        assert [c["measured"] for c in a.claims] == [c["measured"] for c in b.claims]
    rows = [line.split("|")[1].strip() for line in two.read_text().splitlines() if line.startswith("| ")]
    assert [r for r in dict.fromkeys(rows) if r in names] == names  # registry order, not finishing order
    assert {label for label, step, total, _ in seen if step == total} == set(names)
