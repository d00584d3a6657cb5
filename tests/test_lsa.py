import pytest
import torch

from icldyn.models.lsa import LSA, LSAConfig, embed
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask


def naive_lsa(model, batch):
    """f(E) = E + W^PV E M (Eᵀ W^KQ E)/n on full matrices, layer by layer (ZFB / Ahn)."""
    Z = embed(batch.x, batch.y).expand(model.n_seeds, -1, -1, -1)
    n = Z.shape[-1] - 1
    M = torch.eye(n + 1, dtype=Z.dtype)
    if model.config.mask_query:
        M[-1, -1] = 0
    for w_pv, w_kq in zip(model.w_pv, model.w_kq):
        Z = Z + w_pv[:, None] @ Z @ M @ (Z.transpose(-1, -2) @ w_kq[:, None] @ Z) / n
    return Z[..., -1, -1]


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("layers", [1, 3])
def test_forward_matches_full_matrix_formula(mask, layers):
    task = LinearRegressionTask(LinearRegressionConfig(d=4, n_points=7), dtype=torch.float64)
    model = LSA(LSAConfig(init="gaussian", init_scale=0.3, mask_query=mask, n_layers=layers), LinearRegressionConfig(d=4), [0, 1],
                dtype=torch.float64)
    b = task.eval_batch(32, 5)  # E = 1 prompts broadcast against 2 seeds
    assert torch.allclose(model(b)[..., 0], naive_lsa(model, b), atol=1e-12)


def test_zfb_init_prediction_is_v_h_U_xq():
    task = LinearRegressionTask(LinearRegressionConfig(d=3, n_points=9, covariance="anisotropic"),
                                dtype=torch.float64)
    model = LSA(LSAConfig(init="zfb_random", init_scale=0.7), LinearRegressionConfig(d=3), [4], dtype=torch.float64)
    b = task.eval_batch(16, 1)
    h = (b.y[..., :-1, None] * b.x[..., :-1, :]).mean(-2)
    B = model.effective_matrix()
    expected = torch.einsum("ebi,eij,ebj->eb", h, B, b.x[..., -1, :])
    assert torch.allclose(model(b)[..., 0], expected, atol=1e-12)
    assert model.off_block_norm().abs().max() == 0


def test_seed_slices_do_not_depend_on_the_ensemble():
    a = LSA(LSAConfig(init="gaussian"), LinearRegressionConfig(d=3), [2, 5])
    b = LSA(LSAConfig(init="gaussian"), LinearRegressionConfig(d=3), [5])
    assert torch.equal(a.w_kq[0][1], b.w_kq[0][0])
