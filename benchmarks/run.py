"""Run the icldyn benchmark suite: a thin wrapper of `icldyn bench` (see README.md here).

    python benchmarks/run.py [--quick] [--json FILE] [--case NAME ...] [--threads N]

`make bench` runs the whole suite with the Makefile's allocator settings and writes bench.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from icldyn.bench import CASES, default_cases, run_benchmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (a smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="run only this case (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run_benchmarks(quick=args.quick, json_path=args.json, console=Console(), cases=args.case or default_cases())


if __name__ == "__main__":
    main()
