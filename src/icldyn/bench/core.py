"""Timing primitives shared by the benchmark cases: best-of-N wall time and the matmul peak."""

from __future__ import annotations

import time

import torch


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
