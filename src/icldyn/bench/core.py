"""Timing primitives shared by the benchmark cases: best-of-N wall time and the matmul peak."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

# glibc malloc settings the Makefile exports (see benchmarks/README.md): no mmap for big blocks
# and no trimming, so a large step's buffers are reused instead of faulted in again each step
from icldyn.process import MALLOC_ENV, tune_malloc  # noqa: F401 - re-exported for the cases


def best_of(fn, repeats: int, warmup: int = 1) -> float:
    """Minimum wall time of `fn()` over `repeats` calls after `warmup` calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_peak(n: int = 2048, repeats: int = 5, device="cpu", dtype=torch.float32) -> float:
    """The machine's own float32 matmul throughput (GFLOP/s) on an n×n product."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def step():
        a @ b
        if a.is_cuda:
            torch.cuda.synchronize()

    return 2 * n**3 / best_of(step, repeats) / 1e9


def interleaved(fns: dict, repeats: int, warmup: int = 1, inner: int = 1, clock=time.perf_counter) -> dict[str, float]:
    """Minimum wall time per call (seconds) of each `fns[name]()`, the functions taking turns.

    On a shared, noisy machine a load spike then hits every compared implementation alike;
    each turn runs `inner` calls, so a turn lasts long enough to time a very short call.
    `clock=time.process_time` gives this process's CPU time instead (user + system, all its
    threads), which a busy machine inflates far less than the wall time.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            for _ in range(inner):
                fn()
            times[name].append((clock() - start) / inner)
    return {name: min(ts) for name, ts in times.items()}


def load_average() -> float | None:
    """The 1-minute load average (runnable processes, all cores), or None where unknown."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine() -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_start": load_average(),
            "malloc_env": {k: os.environ[k] for k in MALLOC_ENV if k in os.environ}}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def throughput(seconds_per_step: float, prompts_per_step: int, flops_per_step: float | None,
               peak_gflops: float | None, seeds: int = 1) -> dict:
    """steps/s, prompts/s (all seeds), achieved GFLOP/s from counted FLOPs and the fraction of peak."""
    out = {"steps_per_s": 1 / seconds_per_step, "seeds_steps_per_s": seeds / seconds_per_step,
           "prompts_per_s": prompts_per_step / seconds_per_step}
    if seeds == 1:
        out.pop("seeds_steps_per_s")
    if flops_per_step is not None:
        out["gflops"] = flops_per_step / seconds_per_step / 1e9
        if peak_gflops:
            out["fraction_of_peak"] = out["gflops"] / peak_gflops
    return out


# -- counted FLOPs (multiply-adds count 2; a training step counts 3× its forward pass) -----------
def lsa_flops(n_prompts: int, n_points: int, d: int) -> float:
    """One-layer LSA training step on `n_prompts` prompts of N = n_points examples (all seeds).

    Forward per prompt, as the model computes it: W^KQ z_q (2·d·D), scores and values of the
    T = N+1 keys (2 × 2·d·T), the label terms and the weighted sum (≈ 6·N)."""
    T, D = n_points + 1, d + 1
    return 3.0 * n_prompts * (2 * d * D + 4 * d * T + 6 * n_points)


def gpt_flops(n_prompts: int, n_points: int, d: int, n_layers: int, width: int, mlp_ratio: int = 4) -> float:
    """GPT-style training step on interleaved prompts of S = 2(N+1) − 1 tokens (all seeds).

    Forward per token and layer: QKV, output and MLP projections (2·(4 + 2·mlp_ratio)·w²);
    per prompt and layer, causal attention QKᵀ and PV (2·S²·w, half of the full S×S products);
    read-in 2·d·w per token. The same count is used for the reference, so GFLOP/s ratios are
    steps/s ratios."""
    S = 2 * (n_points + 1) - 1
    per_token = n_layers * 2 * (4 + 2 * mlp_ratio) * width**2 + 2 * d * width + 2 * width
    per_prompt = S * per_token + n_layers * 2 * S * S * width
    return 3.0 * n_prompts * per_prompt


_PEAKS: dict[tuple, float] = {}


def peak_gflops(device: str = "cpu", n: int = 2048) -> float:
    """`matmul_peak` at the current thread count, measured once per process and device."""
    key = (device, torch.get_num_threads(), n)
    if key not in _PEAKS:
        _PEAKS[key] = matmul_peak(n, device=device)
    return _PEAKS[key]


