"""`train.shared_data` (seeds differ in their init only) and `train.fused_optimizer`: what each
changes and what it keeps, for every registered model; neither enters the hash at its default."""

import pytest
import torch

from icldyn.experiments import EXPERIMENTS
from icldyn.tasks import build_task
from icldyn.train.trainer import Trainer
from tests.test_ensembles import CASES, TINY


class DataOf(Trainer):
    """A run whose prompts come from the streams of seed `source` instead of its own."""

    source = 0

    @property
    def data_seeds(self):
        return [self.source]


def trained(experiment, overrides, seed, n_seeds, trainer_class=Trainer, steps=5):
    """Parameters (E, P) after `steps` updates, in float64 (see tests/test_ensembles.py)."""
    exp = EXPERIMENTS[experiment]
    cfg = exp.config("quick", {**TINY, **overrides, "train.steps": steps, "seed": seed, "n_seeds": n_seeds})
    task = build_task(cfg.task, torch.float64)
    trainer = trainer_class(cfg, task, exp.build_model(cfg, task, list(range(seed, seed + n_seeds))).double())
    for k in range(steps):
        trainer.update(k, trainer.train_loss(k))
    return torch.cat([p.detach().reshape(n_seeds, -1) for p in trainer.model.parameters()], 1)


@pytest.mark.parametrize("model", sorted(CASES))
def test_shared_data_member_equals_its_init_trained_on_the_first_seeds_prompts(model):
    experiment, overrides = CASES[model]
    together = trained(experiment, {**overrides, "train.shared_data": True}, 3, 3)
    for i in range(3):
        alone = trained(experiment, overrides, 3 + i, 1, type("FromSeed3", (DataOf,), {"source": 3}))
        torch.testing.assert_close(together[i], alone[0], rtol=1e-9, atol=1e-11)
    # negative control: without shared data the second member sees its own prompts, not seed 3's
    own = trained(experiment, overrides, 3, 3)
    assert not torch.allclose(own[1], together[1], rtol=1e-6, atol=1e-8)


def test_shared_data_batch_is_the_first_seeds_own():
    experiment, overrides = CASES["gpt"]
    exp = EXPERIMENTS[experiment]
    cfg = exp.config("quick", {**TINY, **overrides, "train.shared_data": True, "seed": 4, "n_seeds": 3})
    task = exp.build_task(cfg)
    trainer = Trainer(cfg, task, exp.build_model(cfg, task, [4, 5, 6]))
    batch, own = trainer.batch(7), task.sample([4], 7, cfg.train.batch_size)
    assert batch.x.shape[0] == 1 and torch.equal(batch.x, own.x) and torch.equal(batch.y, own.y)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_fused_optimizer_takes_the_same_steps_up_to_rounding(optimizer):
    experiment, overrides = CASES["gpt"]
    overrides = {**overrides, "train.optimizer": optimizer, "train.momentum": 0.9 if optimizer == "sgd" else 0.0,
                 "train.weight_decay": 0.01}
    loop = trained(experiment, overrides, 0, 2)
    fused = trained(experiment, {**overrides, "train.fused_optimizer": True}, 0, 2)
    torch.testing.assert_close(fused, loop, rtol=1e-9, atol=1e-11)
    # negative control: a different learning rate is not a rounding difference
    other = trained(experiment, {**overrides, "train.fused_optimizer": True, "train.lr": 0.011}, 0, 2)
    assert not torch.allclose(other, loop, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("key", ["shared_data", "fused_optimizer"])
def test_new_train_options_enter_the_hash_only_when_set(key):
    exp = EXPERIMENTS["linreg-lsa"]
    base = exp.config("quick", {})
    assert exp.config("quick", {f"train.{key}": False}).config_hash() == base.config_hash()
    assert exp.config("quick", {f"train.{key}": True}).config_hash() != base.config_hash()
