"""A 24-member sweep on the local backend vs Ray on this machine: wall times and overhead per member.

    PYTHONPATH=src python benchmarks/sweep_backends.py [--steps 200] [--json FILE]

The members (train.lr × train.batch_size, 6 × 4, linreg-lsa, d = 3) are first trained one after
another in this process (the member body every backend runs): their summed wall time is the
training itself. Only training is timed (no claims or figures). Each backend then trains the same 24 members into a fresh folder with two
parallel slots; its overhead per member, in core-seconds, is (wall × slots − serial) / 24 (process
or task start, imports, shipping, bookkeeping). Measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from icldyn import sweep
from icldyn.sweep.member import train_member

GRID = {"train.lr": [0.005, 0.01, 0.02, 0.03, 0.05, 0.08], "train.batch_size": [16, 32, 64, 128]}


def overrides(steps: int) -> dict:
    return {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1.0, 0.5, 0.25], "train.steps": steps,
            "train.n_records": 6, "train.eval_prompts": 1000, "train.eval_prompts_during": 500,
            "train.checkpoint_every": max(10, steps // 4), "sampled_check": False,
            "train.gradient": "sampled", "train.optimizer": "adam"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--backends", default="local,ray", help="in this order (to see order effects)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    over = overrides(args.steps)
    spec = {"experiment": "linreg-lsa", "overrides": over, "grid": GRID}
    import torch

    torch.set_num_threads(1)
    out = {"members": 24, "steps": args.steps, "slots": args.slots, "load_avg_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for m in sweep.plan(sweep.load_spec(spec), Path(tmp) / "serial").members:
            train_member(m.config.experiment, m.config, str(m.path), m.label, device="cpu")
        out["serial_s"] = time.perf_counter() - t
        for backend in args.backends.split(","):
            t = time.perf_counter()
            s = sweep.run_sweep(sweep.plan(sweep.load_spec(spec), Path(tmp) / backend), backend,
                                max_parallel=args.slots)
            wall = time.perf_counter() - t
            assert s.ok and len(s.done) == 24, s.failed
            out[f"{backend}_s"] = wall
            out[f"{backend}_overhead_core_s_per_member"] = (wall * args.slots - out["serial_s"]) / 24
            t = time.perf_counter()
            again = sweep.run_sweep(sweep.plan(sweep.load_spec(spec), Path(tmp) / backend), backend,
                                    max_parallel=args.slots)
            out[f"{backend}_rerun_s"] = time.perf_counter() - t
            assert again.done == [] and len(again.skipped) == 24
    out["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
