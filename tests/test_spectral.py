"""Spectral probes on matrices built with known singular values and subspaces."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from icldyn.models.lsa import LSA, LSAConfig
from icldyn.probes.spectral import (effective_rank, matrix_parameters, spectral_probes, stable_rank,
                                    subspace_overlap, top_singular_values)
from icldyn.tasks.linear_regression import LinearRegressionConfig


def orthonormal(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    return q


def build(s, m=6, n=5, seed=0):
    """U diag(s) Vᵀ with random orthonormal U (m, r), V (n, r)."""
    s = torch.as_tensor(s, dtype=torch.float64)
    return orthonormal(m, len(s), seed) @ torch.diag(s) @ orthonormal(n, len(s), seed + 1).T


@settings(deadline=None, max_examples=15)
@given(st.lists(st.floats(0.01, 10.0), min_size=1, max_size=5), st.integers(0, 1000))
def test_ranks_and_singular_values_of_a_known_spectrum(s, seed):
    M = build(s, seed=seed)
    desc = torch.tensor(sorted(s, reverse=True), dtype=torch.float64)
    p = desc / desc.sum()
    assert effective_rank(M).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-9)
    assert stable_rank(M).item() == pytest.approx((desc**2).sum().item() / desc[0].item() ** 2, rel=1e-9)
    padded = torch.cat([desc, torch.zeros(5, dtype=torch.float64)])[:3]  # a 6×5 matrix has 5 values
    torch.testing.assert_close(top_singular_values(M, 3), padded, rtol=1e-9, atol=1e-12)
    assert 1 - 1e-9 <= effective_rank(M).item() <= len(s) + 1e-9


def test_equal_singular_values_give_full_rank_and_rank_one_gives_one():
    assert effective_rank(build([2.0, 2.0, 2.0])).item() == pytest.approx(3.0)
    assert stable_rank(build([2.0, 2.0, 2.0])).item() == pytest.approx(3.0)
    assert effective_rank(build([5.0])).item() == pytest.approx(1.0)
    assert stable_rank(build([5.0])).item() == pytest.approx(1.0)


def test_zero_matrix_has_rank_zero_and_no_nan():
    Z = torch.zeros(2, 4, 3)
    assert torch.equal(effective_rank(Z), torch.zeros(2))
    assert torch.equal(stable_rank(Z), torch.zeros(2))
    out = spectral_probes({"w": Z}, previous={"w": Z}, final={"w": Z}, k=2)
    assert all(torch.isfinite(v).all() for v in out.values())


def test_subspace_overlap_self_orthogonal_and_partial():
    U = orthonormal(6, 4, seed=3)
    V = orthonormal(5, 2, seed=4)
    A = U[:, :2] @ torch.diag(torch.tensor([3.0, 2.0], dtype=torch.float64)) @ V.T
    B = U[:, 2:] @ torch.diag(torch.tensor([5.0, 1.0], dtype=torch.float64)) @ V.T  # orthogonal span
    C = U[:, 1:3] @ torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64)) @ V.T  # shares one direction
    assert subspace_overlap(A, A, 2).item() == pytest.approx(1.0)
    assert subspace_overlap(A, 7.0 * A, 2).item() == pytest.approx(1.0)  # a subspace, not a scale
    assert subspace_overlap(A, B, 2).item() == pytest.approx(0.0, abs=1e-12)
    assert subspace_overlap(A, C, 2).item() == pytest.approx(0.5)
    # k = 1: the top direction of C is U[:, 1], A's second direction → orthogonal to A's top one
    assert subspace_overlap(A, C, 1).item() == pytest.approx(0.0, abs=1e-12)
    # a rotation by θ of the top direction gives cos² θ
    th = 0.3
    R = (math.cos(th) * U[:, :1] + math.sin(th) * U[:, 3:4]) @ V[:, :1].T
    assert subspace_overlap(U[:, :1] @ V[:, :1].T, R, 1).item() == pytest.approx(math.cos(th) ** 2)


def test_batched_over_seeds():
    Ms = torch.stack([build([3.0, 1.0], seed=i) for i in range(4)])
    assert effective_rank(Ms).shape == (4,)
    assert subspace_overlap(Ms, Ms, 2).shape == (4,)
    torch.testing.assert_close(stable_rank(Ms), torch.full((4,), 10 / 9, dtype=torch.float64))


def test_spectral_probes_names_and_values():
    E = 2
    W = torch.stack([build([4.0, 2.0, 1.0], m=4, n=4, seed=i) for i in range(E)])
    prev = torch.stack([build([4.0, 2.0, 1.0], m=4, n=4, seed=i + 10) for i in range(E)])
    params = {"w_kq.0": W, "bias.0": torch.ones(E, 4)}
    out = spectral_probes(params, previous={"w_kq.0": prev}, final={"w_kq.0": W}, k=2)
    assert set(out) == {"probe/erank/w_kq.0", "probe/stable_rank/w_kq.0", "probe/sv/w_kq.0/0",
                        "probe/sv/w_kq.0/1", "probe/overlap_prev/w_kq.0", "probe/overlap_final/w_kq.0"}
    assert all(v.shape == (E,) for v in out.values())
    torch.testing.assert_close(out["probe/sv/w_kq.0/1"], torch.full((E,), 2.0, dtype=torch.float64))
    torch.testing.assert_close(out["probe/stable_rank/w_kq.0"], torch.full((E,), 21 / 16, dtype=torch.float64))
    torch.testing.assert_close(out["probe/overlap_final/w_kq.0"], torch.ones(E, dtype=torch.float64))
    torch.testing.assert_close(out["probe/overlap_prev/w_kq.0"], subspace_overlap(W, prev, 2))
    assert spectral_probes(params, k=9).keys() >= {"probe/sv/w_kq.0/3"}  # k clipped to min(m, n)
    assert "probe/sv/w_kq.0/4" not in spectral_probes(params, k=9)


def test_probes_read_a_models_matrices_by_name():
    model = LSA(LSAConfig(init="zfb", init_scale=0.5), LinearRegressionConfig(d=3), seeds=[0, 1])
    params = matrix_parameters(model)
    assert set(params) == {"w_pv.0", "w_kq.0"}
    out = spectral_probes(params, k=1)
    # ZFB init: W^PV has one non-zero entry (rank 1), W^KQ's x-block is σ₀ I/√3 (rank 3, equal σ)
    torch.testing.assert_close(out["probe/erank/w_pv.0"], torch.ones(2))
    torch.testing.assert_close(out["probe/erank/w_kq.0"], torch.full((2,), 3.0))
    torch.testing.assert_close(out["probe/sv/w_kq.0/0"], torch.full((2,), 0.5 / math.sqrt(3)))
