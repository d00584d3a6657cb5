"""Per-prefix OLS and ridge, vectorised, against the field's reference: one lstsq per prompt and prefix.

    python -m icldyn.bench.estimators [--threads 2] [--batch 1024] [--n-points 40] [--d 20]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from icldyn.estimators import make_estimator
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask

LOOP_BUDGET_S = 20.0  # above this the reference loop is timed on a subset and scaled linearly


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up: first calls load LAPACK kernels and allocate
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def reference_loop(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One torch.linalg.lstsq (min-norm) per prompt and prefix.  x (P, T, d), y (P, T) → (P, T)."""
    pred = torch.zeros_like(y)
    for p in range(x.shape[0]):
        for t in range(1, x.shape[1]):
            w = torch.linalg.lstsq(x[p, :t], y[p, :t, None]).solution
            pred[p, t] = x[p, t] @ w[:, 0]
    return pred


def bench_prefix_estimators(batch: int = 1024, n_points: int = 40, d: int = 20, repeats: int = 3,
                            noise_std: float = 0.5, dtype: torch.dtype = torch.float32) -> dict:
    """Seconds for OLS and ridge at every prefix of `batch` prompts (best of `repeats`) and for the loop.

    The loop runs once over all prompts, or, when a 32-prompt probe predicts more than 20 s, over
    as many prompts as fit in 20 s, scaled linearly to `batch` (then `loop_extrapolated` is True).
    The max/median differences compare the OLS predictions with the loop's on the timed prompts.
    """
    task = LinearRegressionTask(LinearRegressionConfig(d=d, n_points=n_points, noise_std=noise_std), dtype=dtype)
    data = task.sample([0], step=0, batch_size=batch)
    ols, ridge = make_estimator("ols", task), make_estimator("ridge", task)
    x, y = data.x[0], data.y[0]

    ols_s = _best_of(lambda: ols(data), repeats)
    ridge_s = _best_of(lambda: ridge(data), repeats)

    # the loop is timed once (it is long, so timer noise is small); the probe doubles as warm-up
    probe = min(batch, 32)
    start = time.perf_counter()
    reference_loop(x[:probe], y[:probe])
    estimate = (time.perf_counter() - start) * batch / probe
    extrapolated = estimate > LOOP_BUDGET_S
    timed = max(probe, int(batch * LOOP_BUDGET_S / estimate)) if extrapolated else batch
    start = time.perf_counter()
    loop_pred = reference_loop(x[:timed], y[:timed])
    loop_s = (time.perf_counter() - start) * batch / timed
    diff = (ols(data)[0, :timed] - loop_pred).abs()
    return {
        "batch": batch, "n_points": n_points, "d": d, "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(), "repeats": repeats,
        "ols_seconds": ols_s, "ridge_seconds": ridge_s, "loop_seconds": loop_s,
        "ols_speedup": loop_s / ols_s, "ridge_speedup": loop_s / ridge_s,
        "loop_extrapolated": extrapolated, "loop_prompts_timed": timed,
        "ols_vs_loop_median_abs_diff": float(diff.median()), "ols_vs_loop_max_abs_diff": float(diff.max()),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--n-points", type=int, default=40)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(bench_prefix_estimators(args.batch, args.n_points, args.d, args.repeats), indent=2))
