"""Per-(seed, stream, step) random generators: the batch at step t is a pure function of them.

Streams are separate so that, e.g., changing the label noise does not change the inputs.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS = {"init": 0, "data": 1, "task": 2, "noise": 3, "eval": 4, "pool": 5, "fixed": 6}


def stream_seed(seed: int, stream: str, step: int = 0) -> int:
    """A 63-bit seed mixing (seed, stream, step) through numpy's SeedSequence hash."""
    state = np.random.SeedSequence([int(seed), STREAMS[stream], int(step)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def generator(seed: int, stream: str, step: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(stream_seed(seed, stream, step))
    return g
