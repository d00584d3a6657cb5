"""The grokking experiment end to end: a tiny run through the API (seconds), the preset config, and
(slow) the quick preset's claims."""

import numpy as np
import pytest

from icldyn import api
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS

TINY = {"task.p": 7, "model.width": 16, "model.n_heads": 2, "train.steps": 12, "train.n_records": 4,
        "log_records": 0}


def test_config_is_full_batch_over_the_training_split():
    cfg = EXPERIMENTS["grokking"].config("quick", {"task.p": 11, "task.train_fraction": 0.4})
    assert cfg.train.dataset_size == cfg.train.batch_size == round(0.4 * 121)
    paper = EXPERIMENTS["grokking"].config("paper")
    assert (paper.task.p, paper.task.train_fraction, paper.model.width, paper.train.lr,
            paper.train.weight_decay) == (113, 0.3, 128, 1e-3, 1.0)
    with pytest.raises(UsageError):
        EXPERIMENTS["grokking"].config("huge")


def test_tiny_run_records_events_spectra_and_distances(tmp_path):
    run = api.run("grokking", "quick", TINY, seeds=2, out=tmp_path)
    assert set(run.variants) == {"wd", "no_wd"}
    main = run.variants["wd"]
    names = set(main.metrics["name"])
    for name in ("accuracy/train", "accuracy/test", "loss/train", "loss/test", "probe/weight_norm",
                 "probe/fourier_top5", "probe/erank/embed", "probe/merank1/blocks.0.attn.qk.0",
                 "probe/subspace_dist/left/k1/blocks.0.attn.ov.1", "probe/subspace_dist/right/kr/embed",
                 "probe/rowspace_dist/blocks.0.attn.qk.0", "probe/overlap_prev/k2/blocks.0.mlp.fc.weight"):
        assert name in names, name
    final = main.metrics[(main.metrics["name"] == "probe/subspace_dist/left/k2/embed")
                         & (main.metrics["step"] == 12)]["value"]
    np.testing.assert_allclose(final, 0.0, atol=1e-9)              # the final matrix is its own reference
    ids = {c["id"] for c in run.claims}
    assert {"groks", "time_ordering", "no_grokking_without_weight_decay"} <= ids
    assert all(len(f.read_bytes()) > 0 for f in (main.path.parent.parent / "figures").glob("*.png"))


# Measured on the quick preset with 3 seeds (2026-12-06) and kept failing: the OV products' top-2
# subspace distance to the final matrices stays > 0.1 until ≈ 94% of training, and late loss spikes
# break the sustained memorisation of two seeds, so the spec's time ordering is not reproduced.
KNOWN_CONTRADICTIONS = {"time_ordering"}


@pytest.mark.slow
def test_quick_preset_groks_and_the_control_does_not(tmp_path):
    run = api.run("grokking", "quick", seeds=3, out=tmp_path, workers=None)
    for c in run.claims:
        if c["id"] in KNOWN_CONTRADICTIONS:
            assert c["passed"] is False and c["note"], c
        else:
            assert c["passed"] is True, c
