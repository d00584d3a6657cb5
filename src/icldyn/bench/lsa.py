"""Benchmark cases of the one-layer LSA (d = 10, N = 40): one seed, seed ensembles against
sequential runs, and exact population-gradient training of 1,000 seeds.

Every case times the trainer's own step (`Trainer.train_loss` + `Trainer.update`): sampling,
forward, backward and the optimizer, as `icldyn run` does between records.
"""

from __future__ import annotations

import time

import torch

from icldyn.bench.core import best_of, interleaved, load_average, lsa_flops, peak_gflops, throughput

D, N_POINTS = 10, 40


def lsa_trainer(n_seeds: int, batch: int, gradient: str = "sampled", optimizer: str = "adam",
                first_seed: int = 0, compile: bool = False, shared_data: bool = False):
    from icldyn.experiments import EXPERIMENTS
    from icldyn.train.trainer import Trainer

    exp = EXPERIMENTS["linreg-lsa"]
    cfg = exp.config("quick", {"task.d": D, "task.n_points": N_POINTS, "task.covariance": "isotropic",
                               "train.gradient": gradient, "train.optimizer": optimizer, "train.lr": 1e-3,
                               "train.batch_size": batch, "sampled_check": False, "seed": first_seed,
                               "n_seeds": n_seeds, "train.compile": compile,
                               "train.shared_data": shared_data})
    task = exp.build_task(cfg)
    seeds = list(range(first_seed, first_seed + n_seeds))
    return Trainer(cfg, task, exp.build_model(cfg, task, seeds))


def stepper(trainer, steps: int = 1):
    """A callable running `steps` training steps of `trainer`, continuing its step count."""
    def run():
        for _ in range(steps):
            k = trainer.step
            trainer.update(k, trainer.train_loss(k))
    return run


def lsa_step(quick: bool = False) -> dict:
    """One sampled-prompt Adam step of a one-layer LSA: d = 10, N = 40, batch 1024, one seed.

    Also the same step on a fixed batch (no sampling) and the sampler alone: `sampling_fraction`
    is the sampler's time over the step's."""
    batch, repeats = 1024, 3 if quick else 15
    load = load_average()
    trainer = lsa_trainer(1, batch)
    fixed = trainer.task.sample(trainer.seeds, 0, batch)

    def step_fixed():
        trainer.update(trainer.step, trainer.model.loss(trainer.model(fixed), fixed))

    t = interleaved({"step": stepper(trainer), "fixed": step_fixed,
                     "sample": lambda: trainer.task.sample(trainer.seeds, 7, batch)},
                    repeats, warmup=2, inner=5 if quick else 20)
    peak = peak_gflops()
    flops = lsa_flops(batch, N_POINTS, D)
    out = {"batch": batch, "load_avg": load, **throughput(t["step"], batch, flops, peak),
           "fixed_data_steps_per_s": 1 / t["fixed"], "sampling_ms": t["sample"] * 1e3,
           "sampling_fraction": t["sample"] / t["step"]}
    out["fixed_data_fraction_of_peak"] = flops / t["fixed"] / 1e9 / peak
    return out


def fixed_stepper(trainer, steps: int = 1):
    """Like `stepper`, on one batch sampled once: the step without the sampler."""
    batch = trainer.task.sample(trainer.seeds, 0, trainer.tc.batch_size)

    def run():
        for _ in range(steps):
            trainer.update(trainer.step, trainer.model.loss(trainer.model(batch), batch))
    return run


def lsa_ensemble(quick: bool = False) -> dict:
    """16 seeds trained as one ensemble vs 16 sequential one-seed runs (Adam, batch 64 and 1024):
    seeds·steps/s of each and `ensemble_speedup`, their ratio; `fixed_data_ensemble_speedup` is
    the same ratio with the sampler left out (every seed's batch drawn once), and
    `shared_data_ensemble_speedup` the ensemble with `train.shared_data` (every seed trains on the
    first seed's fresh prompts: one sampler call for all) against the same sequential runs.
    Wall-time ratios, and the same ratios in this process's CPU time (`*_cpu`), all taking turns."""
    E = 16
    out = {"seeds": E, "load_avg": load_average()}
    peak = peak_gflops()
    for batch in ((64,) if quick else (64, 1024)):
        steps = max(1, 256 // batch) * (1 if quick else 4)
        fns = _ensemble_steppers(E, batch, steps)
        repeats = 2 if quick else (5 if batch > 256 else 9)
        t = interleaved(fns, repeats, warmup=1)
        cpu = interleaved(fns, repeats, warmup=0, clock=time.process_time)
        flops = lsa_flops(E * batch, N_POINTS, D) * steps
        ens = throughput(t["ensemble"], E * batch * steps, flops, peak, seeds=E * steps)
        seq = throughput(t["sequential"], E * batch * steps, flops, peak, seeds=E * steps)
        row = {"load_avg": load_average(),
               "ensemble_seeds_steps_per_s": ens["seeds_steps_per_s"],
               "sequential_seeds_steps_per_s": seq["seeds_steps_per_s"],
               "ensemble_gflops": ens["gflops"], "ensemble_fraction_of_peak": ens["fraction_of_peak"],
               "fixed_data_ensemble_seeds_steps_per_s": E * steps / t["ensemble_fixed"],
               "shared_data_ensemble_seeds_steps_per_s": E * steps / t["ensemble_shared"]}
        for clock, times in (("", t), ("_cpu", cpu)):
            row[f"ensemble_speedup{clock}"] = times["sequential"] / times["ensemble"]
            row[f"fixed_data_ensemble_speedup{clock}"] = times["sequential_fixed"] / times["ensemble_fixed"]
            row[f"shared_data_ensemble_speedup{clock}"] = times["sequential"] / times["ensemble_shared"]
        row["sampling_fraction_of_ensemble_step_cpu"] = cpu["sample"] / cpu["ensemble"]
        out[f"batch_{batch}"] = row
    return out


def _ensemble_steppers(E: int, batch: int, steps: int) -> dict:
    """The compared step callables of `lsa_ensemble`, `steps` steps each (the sequential ones:
    `steps` steps of each of the E one-seed runs)."""
    ensemble = lsa_trainer(E, batch)
    singles = [lsa_trainer(1, batch, first_seed=s) for s in range(E)]
    one_each = [stepper(t, steps) for t in singles]
    fixed_each = [fixed_stepper(t, steps) for t in singles]
    sample = ensemble.task.sample
    return {"ensemble": stepper(ensemble, steps), "sequential": lambda: [f() for f in one_each],
            "ensemble_fixed": fixed_stepper(ensemble, steps),
            "sequential_fixed": lambda: [f() for f in fixed_each],
            "ensemble_shared": stepper(lsa_trainer(E, batch, shared_data=True), steps),
            "sample": lambda: [sample(ensemble.seeds, k, batch) for k in range(steps)]}


def lsa_population(quick: bool = False) -> dict:
    """Exact population-gradient GD of 1,000 one-layer LSA seeds at once (no prompts are sampled,
    so train.batch_size does not enter: timed at batch_size 64 and 1024)."""
    E = 100 if quick else 1000
    out = {"seeds": E, "load_avg": load_average()}
    for batch in (64, 1024):
        trainer = lsa_trainer(E, batch, gradient="population", optimizer="gd")
        secs = best_of(stepper(trainer, 10), 2 if quick else 7) / 10
        out[f"batch_size_{batch}_seeds_steps_per_s"] = E / secs
    out["seeds_steps_per_s"] = max(out["batch_size_64_seeds_steps_per_s"], out["batch_size_1024_seeds_steps_per_s"])
    return out


def lsa_throughput(n_seeds: int, batch: int, device: str, repeats: int = 5) -> dict:
    """Seeds·steps/s of a sampled-prompt Adam ensemble on `device` (used by the GPU case)."""
    from icldyn.train.trainer import Trainer

    base = lsa_trainer(n_seeds, batch)
    trainer = Trainer(base.config, base.task, base.model, device=device)
    run = stepper(trainer, 5)

    def timed():
        run()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    secs = best_of(timed, repeats) / 5
    return throughput(secs, n_seeds * batch, lsa_flops(n_seeds * batch, N_POINTS, D),
                      peak_gflops(device), seeds=n_seeds)
