"""The five per-prompt learners of classification-icl, batched, against scikit-learn fitted prompt by prompt.

    python -m icldyn.bench.classifiers [--threads 2] [--prompts 10000] [--context 20]

scikit-learn is a test-only dependency: without it the case reports the batched times alone.
Both sides run in the same process on one thread each: the batched learners run their small ops
on one torch intra-op thread (`estimators.classification.one_intra_op_thread`, faster than two on
this machine), and the reference loop's BLAS/OpenMP pools are capped at one through threadpoolctl
(scikit-learn's per-prompt fits are single-threaded; two BLAS threads on 20 × 30 arrays only add
hand-offs — under load they made the loop up to 15× slower, inflating the ratio). Each side is
warmed up first (imports, first calls); the batched
time is the median of BATCHED_REPEATS calls on all prompts. The reference loop is timed once on a
subset of prompts (as many as fit in LOOP_BUDGET_S per learner, all of them when they fit) and
scaled linearly to all prompts; agreement is measured on that subset.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from icldyn.estimators import make_estimator
from icldyn.estimators.classification import CLASSIFIERS
from icldyn.tasks.binary_classification import BinaryClassificationConfig, BinaryClassificationTask

LOOP_BUDGET_S = 8.0
BATCHED_REPEATS = 3


def _reference(name):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC, LinearSVC

    return {"logistic": lambda: LogisticRegression(), "linear_svm": lambda: LinearSVC(loss="hinge"),
            "rbf_svm": lambda: SVC(kernel="rbf", gamma="scale"), "nn_1": lambda: KNeighborsClassifier(1),
            "nn_3": lambda: KNeighborsClassifier(3)}[name]


def _loop(name, x, y) -> np.ndarray:
    make = _reference(name)
    out = np.empty(x.shape[0])
    for p in range(x.shape[0]):
        yc = y[p, :-1]
        out[p] = yc[0] if (yc == yc[0]).all() else make().fit(x[p, :-1], yc).predict(x[p, -1:])[0]
    return out


def bench_classifiers(prompts: int = 10_000, context: int = 20, alpha: float = 0.8) -> dict:
    task = BinaryClassificationTask(BinaryClassificationConfig(context_length=context, alpha=alpha), torch.float64)
    batch = task.sample([0], 0, prompts, stream="eval", split="unseen")
    x, y = batch.x[0].numpy(), batch.y[0].numpy()
    out = {"prompts": prompts, "context": context, "threads": 1, "learners": {}}
    try:
        import sklearn  # noqa: F401
        have_sklearn = True
    except ImportError:
        have_sklearn = False
    batched_total = loop_total = 0.0
    for name in CLASSIFIERS:
        est = make_estimator(name, task)
        est(batch.select(slice(0, 100)))                                              # warm-up
        times = []
        for _ in range(BATCHED_REPEATS):
            start = time.perf_counter()
            pred = np.sign(est(batch)[0].numpy())
            times.append(time.perf_counter() - start)
        batched = float(np.median(times))
        row = {"batched_seconds": batched}
        batched_total += batched
        if have_sklearn:
            from threadpoolctl import threadpool_limits      # a scikit-learn dependency

            with warnings.catch_warnings(), threadpool_limits(1):
                warnings.simplefilter("ignore")
                _loop(name, x[:20], y[:20])                                            # warm-up
                start = time.perf_counter()
                _loop(name, x[:50], y[:50])
                per = (time.perf_counter() - start) / 50
                timed = min(prompts, max(50, int(LOOP_BUDGET_S / per)))
                start = time.perf_counter()
                ref = _loop(name, x[:timed], y[:timed])
                loop = (time.perf_counter() - start) * prompts / timed
            row.update({"loop_seconds": loop, "loop_prompts_timed": timed, "speedup": loop / batched,
                        "agreement": float(np.mean(ref == pred[:timed]))})
            loop_total += loop
        out["learners"][name] = row
    out["batched_seconds"] = batched_total
    if have_sklearn:
        out.update({"loop_seconds": loop_total, "speedup": loop_total / batched_total})
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--context", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(bench_classifiers(args.prompts, args.context), indent=2))
