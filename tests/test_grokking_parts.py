"""Parts of the grokking experiment: the spectral measures beyond ranks (marginalised rank, subspace
and row-space distances, the post-hoc distance rows), the token switch of GPT, the modular-arithmetic
task and the Fourier probe — against closed forms, least squares and independent computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from icldyn.errors import UsageError
from icldyn.models.gpt import GPT, GPTConfig
from icldyn.probes import PROBES
from icldyn.probes.grokking import frequency_power, top_share
from icldyn.probes.spectral import (distance_rows, marginal_effective_rank, model_matrices, row_space_distance,
                                    select_matrices, subspace_distance)
from icldyn.tasks import build_task
from icldyn.tasks.base import Batch
from icldyn.tasks.modular_arithmetic import ModularArithmeticConfig


def orthonormal(n, k, seed):
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def build(s, m=7, n=6, seed=0):
    s = torch.as_tensor(s, dtype=torch.float64)
    return orthonormal(m, len(s), seed) @ torch.diag(s) @ orthonormal(n, len(s), seed + 1).T


# -- spectral measures -----------------------------------------------------------------------------
@settings(deadline=None, max_examples=15)
@given(st.lists(st.floats(0.01, 10.0), min_size=3, max_size=6), st.integers(1, 2), st.integers(0, 500))
def test_marginal_effective_rank_is_the_entropy_rank_of_the_tail(s, k, seed):
    desc = sorted(s, reverse=True)[k:]
    p = torch.tensor(desc, dtype=torch.float64) / sum(desc)
    expected = math.exp(-(p * p.log()).sum().item())
    assert marginal_effective_rank(build(s, seed=seed), k).item() == pytest.approx(expected, rel=1e-8)


def test_marginal_rank_of_a_rank_one_matrix_is_zero():
    assert marginal_effective_rank(build([3.0]), 1).item() == 0.0


def test_subspace_distance_left_and_right_against_constructed_subspaces():
    U, V = orthonormal(7, 4, 0), orthonormal(6, 4, 1)
    M = U[:, :2] @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ V[:, :2].T
    same_left = U[:, :2] @ torch.diag(torch.tensor([5.0, 1.0], dtype=torch.float64)) @ V[:, 2:].T
    assert subspace_distance(M, same_left, 2, "left").item() == pytest.approx(0.0, abs=1e-10)
    assert subspace_distance(M, same_left, 2, "right").item() == pytest.approx(1.0, abs=1e-10)
    # half of the left subspace kept: the mean squared cosine of the principal angles is ½
    half = torch.cat([U[:, :1], U[:, 2:3]], 1) @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ V[:, :2].T
    assert subspace_distance(M, half, 2, "left").item() == pytest.approx(0.5, abs=1e-10)
    with pytest.raises(ValueError, match="side"):
        subspace_distance(M, M, 1, "up")


@settings(deadline=None, max_examples=15)
@given(st.integers(1, 4), st.integers(0, 500))
def test_row_space_distance_is_the_least_squares_residual(r, seed):
    g = torch.Generator().manual_seed(seed)
    M1 = torch.randn(6, r, generator=g, dtype=torch.float64) @ torch.randn(r, 6, generator=g, dtype=torch.float64)
    M2 = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = torch.linalg.lstsq(M1.T, M2.T).solution.T                              # min_A ‖A M1 − M2‖ by lstsq
    expected = torch.linalg.matrix_norm(A @ M1 - M2) / torch.linalg.matrix_norm(M2)
    assert row_space_distance(M1, M2).item() == pytest.approx(expected.item(), rel=1e-6)
    assert row_space_distance(M1, torch.randn(3, 6, generator=g, dtype=torch.float64) @ M1).item() < 1e-8


def test_distance_rows_match_the_direct_measures():
    seeds = [0, 1]
    mats = [{"a": torch.stack([build([3, 2, 1], seed=10 * t + e) for e in seeds])} for t in range(3)]
    rows = distance_rows([(t, 0.1 * t, m) for t, m in enumerate(mats)], seeds, ks=(1, 2), rank_deficient=("a",))
    got = {(r["step"], r["seed"], r["name"]): r["value"] for r in rows}
    for t in range(3):
        for i, seed in enumerate(seeds):
            M, R = mats[t]["a"][i], mats[-1]["a"][i]
            for side in ("left", "right"):
                assert got[(t, seed, f"probe/subspace_dist/{side}/k2/a")] == pytest.approx(
                    subspace_distance(M, R, 2, side).item(), abs=1e-10)
            assert got[(t, seed, "probe/rowspace_dist/a")] == pytest.approx(row_space_distance(M, R).item(), abs=1e-8)
    assert got[(2, 0, "probe/subspace_dist/left/k1/a")] == pytest.approx(0.0, abs=1e-10)
    assert (0, 0, "probe/overlap_prev/k1/a") not in got and (1, 0, "probe/overlap_prev/k1/a") in got


# -- the token GPT ---------------------------------------------------------------------------------
TASK = ModularArithmeticConfig(p=7, train_fraction=0.5)
TOKENS = dict(n_layers=1, n_heads=2, width=16, tokens=True, readout="last", layernorm=False, activation="relu",
              init_std=0.3)


def token_model(seeds=(0, 1), dtype=torch.float64, **kw):
    return GPT(GPTConfig(**{**TOKENS, **kw}), build_task(TASK), list(seeds), dtype)


def token_batch(E=1, B=5, S=3, V=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randint(0, V, (E, B, S), generator=g), torch.randint(0, 7, (E, B), generator=g))


def test_token_model_members_equal_single_seed_models_and_loss_is_cross_entropy():
    b = token_batch()
    both = token_model((3, 4))
    for e, seed in enumerate((3, 4)):
        alone = token_model((seed,))
        torch.testing.assert_close(both(b)[e], alone(b)[0])
    logits = both(b)
    ce = torch.stack([F.cross_entropy(logits[e], b.y[0]) for e in range(2)])
    torch.testing.assert_close(both.loss(logits, b), ce)


@pytest.mark.parametrize("layers", [1, 2])
def test_last_position_trim_equals_the_full_pass(layers):
    """Without hooks the last block works on the last position only; with hooks on every one."""
    m, b = token_model(n_layers=layers, mlp=True), token_batch()
    plain = m(b)
    cached, _ = m.run_with_cache(b)
    torch.testing.assert_close(plain, cached)
    full = token_model(n_layers=layers, readout="all")
    full.load_state_dict(m.state_dict())
    torch.testing.assert_close(full(b)[:, :, -1], plain)


def test_qk_and_ov_products_reproduce_the_attention():
    """At init (biases zero, no LayerNorm) scores = h QK_h hᵀ/√dh and the attention's output is
    Σ_h pattern_h h OV_h, with h the embedding plus positions."""
    m, b = token_model(seeds=(0,), mlp=False), token_batch()
    _, cache = m.run_with_cache(b)
    mats = m.spectral_matrices()
    h = cache["hook_embed"][0]                                                  # (B, S, w)
    dh = 16 // 2
    out = torch.zeros_like(h)
    for head in range(2):
        qk, ov = mats[f"blocks.0.attn.qk.{head}"][0], mats[f"blocks.0.attn.ov.{head}"][0]
        torch.testing.assert_close(cache["blocks.0.attn.hook_scores"][0, :, head], h @ qk @ h.transpose(-1, -2) / math.sqrt(dh))
        out = out + cache["blocks.0.attn.hook_pattern"][0, :, head] @ h @ ov
        assert torch.linalg.matrix_rank(qk).item() <= dh
    torch.testing.assert_close(cache["blocks.0.attn.hook_out"][0], out)


def test_matrices_by_name_and_the_registered_probe():
    m = token_model()
    names = select_matrices(model_matrices(m), ["embed", "blocks.*.attn.ov.*"])
    assert sorted(names) == ["blocks.0.attn.ov.0", "blocks.0.attn.ov.1", "embed"]
    probe = PROBES["matrix_spectral"](None, None, names=["embed"], k=2, marginal=(1,))

    class Ctx:
        model = m
    out = probe(Ctx)
    assert set(out) == {"probe/erank/embed", "probe/stable_rank/embed", "probe/sv/embed/0", "probe/sv/embed/1",
                        "probe/merank1/embed"}
    torch.testing.assert_close(out["probe/merank1/embed"], marginal_effective_rank(m.embed.double(), 1))


def test_token_model_rejects_a_task_without_a_vocabulary():
    from icldyn.tasks.linear_regression import LinearRegressionConfig
    with pytest.raises(UsageError, match="tokens"):
        GPT(GPTConfig(**TOKENS), LinearRegressionConfig(d=3, n_points=4), [0])


# -- the task and the Fourier probe ----------------------------------------------------------------
def test_modular_split_covers_every_pair_once_with_correct_labels():
    t = build_task(ModularArithmeticConfig(p=11, train_fraction=0.3))
    x = torch.cat([t.train_x, t.test_x])
    assert t.n_train == round(0.3 * 121) and len(x) == 121
    assert len({(int(a), int(b)) for a, b, _ in x}) == 121 and (x[:, 2] == 11).all()
    assert torch.equal(torch.cat([t.train_y, t.test_y]), (x[:, 0] + x[:, 1]) % 11)
    fixed = t.sample([0, 5], 0, t.n_train, stream="fixed")
    assert torch.equal(fixed.x[0], fixed.x[1]) and fixed.x.shape == (2, t.n_train, 3)
    assert t.eval_batch(10, 0).x.shape == (1, 121 - t.n_train, 3)
    with pytest.raises(UsageError, match="dataset_size"):
        t.sample([0], 0, 5, stream="fixed")


def test_fourier_power_parseval_and_a_five_frequency_table():
    p, w = 13, 6
    a = torch.arange(p, dtype=torch.float64)[:, None]
    g = torch.Generator().manual_seed(0)
    table = sum(torch.cos(2 * math.pi * k * a / p + torch.rand(1, w, generator=g, dtype=torch.float64) * 6)
                * torch.rand(1, w, generator=g, dtype=torch.float64) for k in (1, 3, 4, 5, 6))
    table = torch.cat([table, torch.randn(1, w, dtype=torch.float64)])[None]   # the "=" row is ignored
    power = frequency_power(table, p)
    assert power.shape == (1, p // 2 + 1)
    assert power.sum().item() == pytest.approx(p * table[0, :p].pow(2).sum().item(), rel=1e-10)
    assert top_share(power, 5).item() == pytest.approx(1.0, abs=1e-10)
    assert power[0, [0, 2]].max().item() < 1e-8
    noise = torch.randn(1, p, 64, generator=g, dtype=torch.float64)
    assert top_share(frequency_power(noise, p), 5).item() < 0.8
