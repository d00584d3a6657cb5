"""The post-hoc loader rebuilds a stored run's model at a checkpoint: its held-out loss on the
run's own evaluation prompts equals the loss the trainer recorded at that step."""

import pytest
import torch

from icldyn import api
from icldyn.errors import UsageError
from icldyn.models.base import evaluate
from icldyn.trained import load_trained


@pytest.fixture(scope="module")
def lsa_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    return api.run("linreg-lsa", "quick", {"train.steps": 40, "train.checkpoint_every": 20,
                                           "sampled_check": False}, seeds=2, out=out)


def _variant(run):
    return run.path


def test_reloaded_model_reproduces_the_recorded_final_test_loss(lsa_run):
    t = load_trained(_variant(lsa_run))
    batch = t.task.eval_batch(t.config.train.eval_prompts, t.config.eval_seed)
    loss = evaluate(t.model, batch)
    recorded = t.run.final("loss/test").sort_index().to_numpy()
    assert t.step == t.config.train.steps and t.seeds == [0, 1]
    assert torch.allclose(loss.float(), torch.tensor(recorded, dtype=torch.float32), rtol=1e-5)


def test_an_earlier_checkpoint_is_a_different_model(lsa_run):
    early, last = load_trained(_variant(lsa_run), step=20), load_trained(_variant(lsa_run))
    assert early.step == 20
    assert any(not torch.equal(a, b) for a, b in zip(early.model.parameters(), last.model.parameters()))


def test_bad_step_and_sweep_directory_are_one_sentence(lsa_run):
    with pytest.raises(UsageError, match="step must be one of the stored checkpoints"):
        load_trained(_variant(lsa_run), step=10**6)
    (lsa_run.path.parent / "sweep" / "variants" / "a").mkdir(parents=True)
    with pytest.raises(UsageError, match="is a sweep directory"):
        load_trained(_sweep_like(lsa_run))


def _sweep_like(run):
    """The same run seen with a variants/ folder beside its files: a sweep directory."""
    import dataclasses

    path = run.path.parent / "sweep"
    return dataclasses.replace(api.load_run(run.path), path=path)
