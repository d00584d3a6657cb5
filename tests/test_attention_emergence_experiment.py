"""The attention-emergence experiment end to end: a tiny sweep through the API (seconds), the
config (layers as variants, bad input), the baselines' ordering, and (slow) the quick preset's claims."""

import math

import numpy as np
import pytest

from icldyn import api
from icldyn.analysis.runs import theory_constant
from icldyn.errors import UsageError
from icldyn.experiments import EXPERIMENTS

EXP = EXPERIMENTS["attention-emergence"]
TINY = {"layers": [1, 2], "model.width": 8, "task.n_points": 8, "train.steps": 12, "train.n_records": 4,
        "train.batch_size": 8, "train.eval_prompts": 64, "train.eval_prompts_during": 64, "log_records": 0,
        "baseline_prompts": 4000}


def test_layers_are_variants_and_a_single_run_follows_its_layers():
    cfg = EXP.config("quick")
    assert cfg.model.mlp is False and cfg.model.layernorm is False and cfg.model.tokens and cfg.model.readout == "last"
    assert cfg.task.parents == [1] and cfg.task.n_states == 5
    assert set(EXP.variants(cfg)) == {f"layers={n}" for n in (1, 2, 3, 4)}
    single = EXP.config("quick", {"layers": [3]})
    assert single.model.n_layers == 3 and EXP.variants(single) is None


@pytest.mark.parametrize("bad", [{"layers": [0]}, {"layers": [2, 2]}, {"layers": []}])
def test_bad_layers_are_a_usage_error(bad):
    with pytest.raises(UsageError, match="layers"):
        EXP.config("quick", bad)


def test_tiny_sweep_records_losses_spectra_distances_and_baselines(tmp_path):
    run = api.run("attention-emergence", "quick", TINY, seeds=2, out=tmp_path)
    assert set(run.variants) == {"layers=1", "layers=2"}
    two = run.variants["layers=2"]
    names = set(two.metrics["name"])
    for name in ("loss/test", "probe/merank1/blocks.1.attn.qk.0", "probe/erank/blocks.0.attn.ov.0",
                 "probe/subspace_dist/left/k2/blocks.1.attn.qk.0", "probe/rowspace_dist/blocks.0.attn.ov.0",
                 "probe/overlap_prev/k1/blocks.0.attn.qk.0", "probe/sv/embed/0"):
        assert name in names, name
    last = two.metrics[(two.metrics["name"] == "probe/subspace_dist/left/k2/blocks.1.attn.qk.0")
                       & (two.metrics["step"] == 12)]["value"]
    np.testing.assert_allclose(last, 0.0, atol=1e-9)               # the final matrix is its own reference
    ids = {c["id"] for c in run.claims}
    assert {"emergence[layers=2]", "qk_rank_dips[layers=2]", "one_layer_no_emergence"} <= ids
    assert (run.path / "figures" / "emergence.png").stat().st_size > 0
    # the baselines' order is a property of the task: knowing π beats the Bayes bigram posterior,
    # which beats the order-free unigram, which beats the uniform guess (4,000 prompts: margins ≫ noise)
    base = {n: theory_constant(two, f"baseline/{n}") for n in ("oracle", "ngram_bayes", "unigram", "uniform")}
    assert base["oracle"] < base["ngram_bayes"] < base["unigram"] < base["uniform"] == pytest.approx(math.log(5))


# Measured on the quick preset (seed 0, 2026-12-06) and kept failing (spec thresholds, not loosened):
# the 2-layer QK marginalised rank does not dip inside the window (it falls at steps ~100–250, with
# the first loss drop, and is flat or rising later); the QK/OV subspaces are still far (0.35–0.6) from
# their final matrices at the window's end, the loss still falling at the last step.
KNOWN_CONTRADICTIONS = {"qk_rank_dips[layers=2]", "subspaces_settled[layers=2]", "subspaces_settled[layers=3]",
                        "subspaces_settled[layers=4]"}


@pytest.mark.slow
def test_quick_preset_emerges_for_two_layers_and_more_and_not_for_one(tmp_path):
    run = api.run("attention-emergence", "quick", out=tmp_path, workers=None)
    for c in run.claims:
        if c["id"] in KNOWN_CONTRADICTIONS:
            assert c["passed"] is False and c["note"], c
        else:
            assert c["passed"] is True, c
