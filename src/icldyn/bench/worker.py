"""One timed training loop in its own process, for the cases that compare processes:

    python -m icldyn.bench.worker MODEL BATCH --threads T [--steps K] [--start-at UNIX_TIME]
                                  [--duration S]

MODEL is `lsa` (one-layer LSA, d = 10, N = 40, one seed, sampled prompts, Adam), `gpt` (the
4-layer GPT-style model on a fixed batch) or `gpt2` (Garg et al.'s GPT2Model reference, sdpa). Prints one JSON line: steps, seconds, steps_per_s
and best_step_s. With --start-at the worker warms up, then waits for that moment, so that
several workers started together time the same interval; with --duration it runs for that
long, else for --steps steps.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["lsa", "gpt", "gpt2"])
    parser.add_argument("batch", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--start-at", type=float, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "lsa":
        from icldyn.bench.lsa import lsa_trainer, stepper

        step = stepper(lsa_trainer(1, args.batch, first_seed=args.seed))
    else:
        from icldyn.bench.gpt import gpt_steps

        steps = gpt_steps(args.batch, with_reference=args.model == "gpt2", seed=args.seed)
        step = steps["icldyn" if args.model == "gpt" else "gpt2_sdpa"]
    step()  # warm-up
    if args.start_at is not None:
        time.sleep(max(0.0, args.start_at - time.time()))
    times, start = [], time.perf_counter()
    while True:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if (args.duration is not None and elapsed >= args.duration) or \
                (args.duration is None and len(times) >= args.steps):
            break
    print(json.dumps({"model": args.model, "batch": args.batch, "threads": args.threads, "steps": len(times),
                      "seconds": elapsed, "steps_per_s": len(times) / elapsed, "best_step_s": min(times)}))


if __name__ == "__main__":
    main()
