"""Ensembles: E seeds (or E learning rates) trained as one module equal each member trained alone,
for every model in the registry; and batched sampling keeps every seed's prompts bit for bit."""

import pytest
import torch

from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS
from icldyn.models import MODELS
from icldyn.seeding import STREAMS, generator, stream_seed, stream_seed_table
from icldyn.tasks import build_task
from icldyn.tasks import linear_regression
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.train.trainer import Trainer

TINY = {"train.n_records": 2, "train.eval_prompts": 64, "train.eval_prompts_during": 64}
# One tiny config per registered model: (experiment, overrides). Models with a fixed dataset draw
# per-seed minibatches from it (dataset_size > batch_size), so that path is covered too.
CASES = {
    "lsa": ("linreg-lsa", {"task.d": 3, "task.n_points": 8, "model.init": "gaussian", "sampled_check": False,
                           "train.gradient": "sampled", "train.optimizer": "adam", "train.lr": 0.02,
                           "train.batch_size": 32}),
    "gpt": ("linreg-gpt", {"task.d": 3, "task.n_points": 6, "model.n_layers": 2, "model.n_heads": 2,
                           "model.width": 16, "train.batch_size": 16, "train.lr": 0.01}),
    "induction-simplified": ("induction-ngram", {"task.n_points": 12, "train.dataset_size": 48,
                                                 "train.batch_size": 24, "compare_losses": False}),
    "induction-full": ("induction-full", {"task.n_points": 12, "train.dataset_size": 48,
                                          "train.batch_size": 24}),
    "multihead-attention": ("multihead-tasks", {"task.d0": 2, "task.n_points": 10, "train.dataset_size": 48,
                                                "train.batch_size": 24, "train.lr": 0.5}),
    "softmax-attention": ("feature-convergence", {"task.d": 3, "task.K": 3, "task.n_points": 10,
                                                  "model.train": "full", "train.batch_size": 32,
                                                  "train.lr": 1.0}),
    "relu-attention-classifier": ("classification-icl", {"task.context_length": 6, "model.width": 8,
                                                         "model.wo_std": 0.3, "train.batch_size": 16,
                                                         "alpha_sweep": []}),
    "mode-lsa": ("linear-exact-dynamics-vector", {"role": "sgd", "task.population_context": "finite",
                                                  "train.gradient": "sampled", "train.optimizer": "adam",
                                                  "train.stages": None, "train.lr": 0.02, "train.batch_size": 32}),
}


def train(experiment: str, overrides: dict, seed: int, n_seeds: int, steps: int = 6) -> torch.Tensor:
    """Parameters (E, P) after `steps` updates of seeds seed..seed+n_seeds−1 trained together.

    In float64: Adam divides by √v, so a float32 rounding difference in a near-zero gradient
    entry becomes a difference of order lr; in float64 the comparison can be tight."""
    exp = EXPERIMENTS[experiment]
    cfg = exp.config("quick", {**TINY, **overrides, "train.steps": steps, "seed": seed, "n_seeds": n_seeds})
    task = build_task(cfg.task, torch.float64)
    model = exp.build_model(cfg, task, list(range(seed, seed + n_seeds))).double()
    trainer = Trainer(cfg, task, model)
    for k in range(steps):
        trainer.update(k, trainer.train_loss(k))
    return torch.cat([p.detach().double().reshape(n_seeds, -1) for p in trainer.model.parameters()], 1)


def test_every_registered_model_has_an_ensemble_case():
    assert set(CASES) == set(MODELS), "add a tiny config for the new model to CASES"


@pytest.mark.parametrize("model", sorted(CASES))
def test_ensemble_equals_each_seed_alone(model):
    experiment, overrides = CASES[model]
    assert EXPERIMENTS[experiment].config("quick", overrides).model.name == model
    together = train(experiment, overrides, seed=3, n_seeds=2)
    for i in range(2):
        alone = train(experiment, overrides, seed=3 + i, n_seeds=1)[0]
        assert torch.allclose(together[i], alone, rtol=1e-9, atol=1e-10), f"{model}: seed {3 + i} differs"
    assert not torch.allclose(together[0], together[1])  # the seeds are different runs


LSA = CASES["lsa"]


@pytest.mark.parametrize("optimizer", [{"train.optimizer": "adam"},
                                       {"train.optimizer": "sgd", "train.momentum": 0.9, "train.weight_decay": 0.01},
                                       {"train.optimizer": "adamw", "train.weight_decay": 0.1}])
def test_learning_rate_ensemble_equals_each_lr_alone(optimizer):
    experiment, over = LSA
    over = {**over, **optimizer, "train.lr": 0.01, "train.schedule": "cosine"}
    lrs = [0.01, 0.003, 0.02]
    together = train(experiment, {**over, "train.lrs": lrs}, seed=0, n_seeds=3, steps=12)
    for i, lr in enumerate(lrs):
        alone = train(experiment, {**over, "train.lr": lr}, seed=i, n_seeds=1, steps=12)[0]
        assert torch.allclose(together[i], alone, rtol=1e-9, atol=1e-10), f"lr {lr} differs"


def test_learning_rate_ensemble_records_each_members_time_and_checks_its_size(tmp_path):
    import icldyn

    experiment, over = LSA
    over = {**over, **TINY, "train.steps": 5, "train.lr": 0.01, "train.lrs": [0.01, 0.02]}
    run = icldyn.run(experiment, overrides={**over, "n_seeds": 2}, out=tmp_path)
    last = run.metric("loss/train").groupby("seed")["time"].max()
    assert last[0] == pytest.approx(0.05) and last[1] == pytest.approx(0.1)
    with pytest.raises(UsageError, match="--seeds 2"):
        icldyn.run(experiment, overrides=over, out=tmp_path / "one")


# -- sampling ------------------------------------------------------------------------------------
def reference_sample(task: LinearRegressionTask, seeds, step, batch_size, stream="train"):
    """The per-seed loop the batched sampler replaced (kept to check it bit for bit)."""
    c, dt, T = task.config, task.dtype, task.config.n_points + 1
    xs, ys, ws = [], [], []
    for seed in seeds:
        if stream in ("eval", "fixed"):
            gx, gw, ge = (generator(seed, stream, k) for k in range(3))
        else:
            gx, gw, ge = (generator(seed, s, step) for s in ("data", "task", "noise"))
        if c.inputs == "uniform":
            x = (torch.rand(batch_size, T, c.d, generator=gx, dtype=dt) * 2 - 1) * c.uniform_a
        else:
            x = torch.randn(batch_size, T, c.d, generator=gx, dtype=dt) @ task.input_map.to(dt)
        if c.curriculum is not None and stream == "train":
            x[..., c.curriculum.dims_at(step, c.d):] = 0
        if task.pool is None:
            w = torch.randn(batch_size, c.d, generator=gw, dtype=dt)
        else:
            w = task.pool.to(dt)[torch.randint(0, c.pool_size, (batch_size,), generator=gw)]
        y = torch.einsum("btd,bd->bt", x, w)
        if c.noise_std > 0:
            y = y + c.noise_std * torch.randn(batch_size, T, generator=ge, dtype=dt)
        xs.append(x), ys.append(y), ws.append(w)
    return torch.stack(xs), torch.stack(ys), torch.stack(ws)


SAMPLING = {
    "isotropic": {"d": 10, "n_points": 40},
    "anisotropic_noise": {"d": 3, "n_points": 5, "covariance": "anisotropic", "noise_std": 0.5},
    "rotated": {"d": 3, "n_points": 5, "covariance": "rotated"},
    "uniform_pool": {"d": 3, "n_points": 5, "inputs": "uniform", "uniform_a": 2.0, "pool_size": 4},
    "curriculum": {"d": 3, "n_points": 5, "curriculum": {"dims_start": 1, "every": 10}},
}
# x[1, 2, 3, 1], y[1, 3, 5], y[0, 0, 0], w[1, 1, 2] of sample([0, 7], step 13, batch 4), computed
# with the per-seed loop before the sampler was batched: the streams must never change.
PINNED = {
    ("anisotropic_noise", "train"): [0.263977, 0.716175, 1.009526, -0.958928],
    ("anisotropic_noise", "eval"): [-0.365102, 1.213393, -1.004535, -1.107408],
    ("rotated", "train"): [0.330036, 0.292298, 0.970308, -0.958928],
    ("rotated", "fixed"): [-0.156559, -0.011383, -0.668235, -0.318185],
    ("uniform_pool", "train"): [-0.348057, 0.120845, 0.843048, 0.62812],
    ("curriculum", "train"): [0.469425, 1.242017, 2.216246, -0.958928],
}


@pytest.mark.parametrize("case,stream", sorted(PINNED))
def test_sampled_values_are_pinned(case, stream):
    task = LinearRegressionTask(LinearRegressionConfig(**{**SAMPLING[case], "d": 3, "n_points": 5}))
    b = task.sample([0, 7], 13, 4, stream=stream)
    got = [b.x[1, 2, 3, 1], b.y[1, 3, 5], b.y[0, 0, 0], b.extras["w"][1, 1, 2]]
    assert [float(v) for v in got] == pytest.approx(PINNED[case, stream], abs=2e-6)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", sorted(SAMPLING))
def test_batched_sampler_is_bit_identical_to_the_per_seed_loop(case, threads, monkeypatch):
    task = LinearRegressionTask(LinearRegressionConfig(**SAMPLING[case]))
    monkeypatch.setattr(linear_regression, "PARALLEL_MIN_NUMEL", 0)  # small batches use threads too
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # two threads fill two seeds at once
    try:
        for stream, seeds, step in (("train", [0, 7, 2], 13), ("eval", [5], 0), ("fixed", [1, 2], 0)):
            b = task.sample(seeds, step, 8, stream=stream)
            for got, want in zip((b.x, b.y, b.extras["w"]), reference_sample(task, seeds, step, 8, stream)):
                assert torch.equal(got, want)
    finally:
        torch.set_num_threads(before)


def test_a_seeds_prompts_do_not_depend_on_the_ensemble():
    task = LinearRegressionTask(LinearRegressionConfig(d=4, n_points=6, noise_std=0.1))
    together = task.sample([3, 9, 4], 5, 16)
    alone = task.sample([9], 5, 16)
    assert torch.equal(together.x[1], alone.x[0]) and torch.equal(together.y[1], alone.y[0])


def test_stream_seeds_of_many_seeds_at_once_equal_one_at_a_time():
    rng = torch.Generator().manual_seed(0)
    seeds = torch.randint(0, 2**32, (40,), generator=rng).tolist() + [0, 1, 2**32 - 1]
    entries = [(s, stream, step) for s in seeds for stream, step in zip(STREAMS, (0, 1, 7, 10**6, 2**32 - 1, 3, 5))]
    assert stream_seed_table(entries) == [stream_seed(*e) for e in entries]
    assert stream_seed_table([(2**40, "data", 3)] * 25) == [stream_seed(2**40, "data", 3)] * 25  # scalar path
