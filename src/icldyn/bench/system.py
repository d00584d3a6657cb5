"""Cases about the machine rather than the model, each run in fresh processes: glibc's allocator
settings, one two-thread process against two one-thread processes, torch.compile's cold start
and gain, and the GPU cases (skipped with a note without CUDA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from icldyn.bench.core import MALLOC_ENV, best_of, gpt_flops, load_average, peak_gflops, throughput


def _worker(args: list[str], env: dict | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "icldyn.bench.worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)


def _result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def _env(malloc: bool, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    if malloc:
        env.update(MALLOC_ENV)
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def allocator(quick: bool = False) -> dict:
    """The GPT (and the GPT2 reference, when installed) at batch 1024, 2 threads, each in a fresh
    process with and without the Makefile's glibc settings (MALLOC_MMAP_MAX_=0,
    MALLOC_TRIM_THRESHOLD_=4 GiB); the processes take turns."""
    from icldyn.bench.gpt import transformers_version

    batch, steps, rounds = (256, 2, 1) if quick else (1024, 3, 2)
    threads = min(2, os.cpu_count() or 1)
    models = ["gpt"] + (["gpt2"] if transformers_version() is not None else [])
    out = {"batch": batch, "threads": threads, "load_avg": load_average()}
    for model in models:
        best = {True: float("inf"), False: float("inf")}
        for _ in range(rounds):
            for malloc in (True, False):
                r = _result(_worker([model, str(batch), "--threads", str(threads), "--steps", str(steps)],
                                    env=_env(malloc, threads)))
                best[malloc] = min(best[malloc], r["best_step_s"])
        out[model] = {"with_malloc_env_steps_per_s": 1 / best[True],
                      "without_malloc_env_steps_per_s": 1 / best[False],
                      "malloc_env_speedup": best[False] / best[True]}
    out["load_avg_end"] = load_average()
    return out


def threads(quick: bool = False) -> dict:
    """Total steps/s of one process with 2 threads against 2 one-thread processes side by side
    (the same training loop, each for the same wall-clock interval): LSA batch 1024 and GPT batch 64."""
    cores = os.cpu_count() or 1
    duration, delay = (3.0, 10.0) if quick else (15.0, 20.0)  # delay: every worker's import and warm-up
    out = {"cores": cores, "duration_s": duration, "load_avg": load_average()}
    for model, batch in (("lsa", 1024), ("gpt", 64)):
        base = ["--duration", str(duration)]
        start = time.time() + delay
        one = _result(_worker([model, str(batch), "--threads", "2", "--start-at", str(start), *base],
                              env=_env(True, 2)))
        start = time.time() + delay
        procs = [_worker([model, str(batch), "--threads", "1", "--seed", str(i), "--start-at", str(start), *base],
                         env=_env(True, 1)) for i in range(2)]
        two = [_result(p) for p in procs]
        out[f"{model}_batch_{batch}"] = {
            "one_process_2_threads_steps_per_s": one["steps_per_s"],
            "two_processes_1_thread_steps_per_s": sum(r["steps_per_s"] for r in two),
            "two_processes_speedup": sum(r["steps_per_s"] for r in two) / one["steps_per_s"],
        }
    return out


def compile_gain(quick: bool = False) -> dict:
    """`--compile` (torch.compile of the training loss): cold compile time (the first step, with
    empty inductor caches) and steps/s against eager at 1 thread (`icldyn run`'s default) and at
    the bench's thread count, for the LSA at batch 1024 and the 4-layer GPT at batch 64 (one seed)."""
    import shutil
    import tempfile

    cache = tempfile.mkdtemp(prefix="icldyn-bench-inductor-")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
    try:
        return _compile_gain(quick)
    finally:
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
        shutil.rmtree(cache, ignore_errors=True)


def _compile_gain(quick: bool) -> dict:
    from icldyn.bench.core import interleaved
    from icldyn.bench.lsa import lsa_trainer, stepper

    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = False
    except (ImportError, AttributeError):
        pass
    out = {"load_avg": load_average()}
    cases = {"lsa_batch_1024": lambda c: lsa_trainer(1, 1024, compile=c)}
    if not quick:
        cases["gpt_batch_64"] = lambda c: _gpt_trainer(64, c)
    threads_now = torch.get_num_threads()
    for name, make in cases.items():
        eager, compiled = make(False), make(True)
        start = time.perf_counter()
        stepper(compiled)()
        cold = time.perf_counter() - start
        if compiled.compile_note:
            out[name] = {"note": compiled.compile_note}
            continue
        inner = 10 if name.startswith("lsa") else 1
        row = {"cold_compile_s": cold}
        for threads in sorted({1, threads_now}):
            torch.set_num_threads(threads)
            t = interleaved({"eager": stepper(eager, inner), "compiled": stepper(compiled, inner)},
                            3 if quick else 5, warmup=1)
            row[f"threads_{threads}"] = {"eager_steps_per_s": inner / t["eager"],
                                         "compiled_steps_per_s": inner / t["compiled"],
                                         "compile_speedup": t["eager"] / t["compiled"]}
        torch.set_num_threads(threads_now)
        out[name] = row
    return out


def _gpt_trainer(batch: int, compile: bool):
    from icldyn.experiments import EXPERIMENTS
    from icldyn.train.trainer import Trainer

    exp = EXPERIMENTS["linreg-gpt"]
    cfg = exp.config("quick", {"task.d": 10, "task.n_points": 40, "model.n_layers": 4, "model.n_heads": 4,
                               "model.width": 128, "train.batch_size": batch, "train.lr": 1e-3,
                               "train.compile": compile})
    task = exp.build_task(cfg)
    return Trainer(cfg, task, exp.build_model(cfg, task, [0]))


def gpu(quick: bool = False) -> dict:
    """On a CUDA device: the matmul peak, the 1,000-seed LSA ensemble (batch 1024) and the
    small (6/4/128) and standard (12/8/256) GPT-style models' fraction of peak (batch 64)."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine; run `icldyn bench --case gpu` where there is one"}
    from icldyn.bench.lsa import lsa_throughput
    from icldyn.models.gpt import GPT, GPTConfig
    from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask

    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False  # the float32 peak, as the models run
    out = {"gpu": torch.cuda.get_device_name(0), "matmul_peak_gflops": peak_gflops(dev, 8192)}
    for seeds in ((1, 100) if quick else (1, 16, 1000)):
        out[f"lsa_{seeds}_seeds_batch_1024"] = lsa_throughput(seeds, 1024, dev)
    task = LinearRegressionTask(LinearRegressionConfig(d=10, n_points=40))
    for size, batch in (("small", 64), ("standard", 64), ("standard", 256)):
        model = GPT(GPTConfig(size=size), task, [0]).to(dev)  # 41 positions
        data = task.sample([0], 0, batch, device=dev)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, data=data, opt=opt):
            for _ in range(5):
                loss = model.loss(model(data), data).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            torch.cuda.synchronize()

        secs = best_of(step, 2 if quick else 5) / 5
        c = model.config
        out[f"gpt_{size}_batch_{batch}"] = throughput(secs, batch, gpt_flops(batch, 40, 10, c.n_layers, c.width),
                                                      out["matmul_peak_gflops"])
    return out
