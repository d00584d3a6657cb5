import os

import pytest
import torch
from hypothesis import settings

# CI machines are small and noisy: one thread per test process, no hypothesis deadlines.
torch.set_num_threads(1)
settings.register_profile("icldyn", deadline=None, max_examples=25)
settings.load_profile("icldyn")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def tiny_lsa():
    """Overrides for a linreg-lsa run that takes a second or two."""
    return {"task.d": 3, "task.n_points": 10, "task.eigenvalues": [1.0, 0.5, 0.25], "train.steps": 40,
            "train.n_records": 6, "train.eval_prompts": 2000, "train.eval_prompts_during": 500,
            "train.checkpoint_every": 10, "sampled_check": False}
