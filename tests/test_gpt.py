"""The GPT decoder: causality, seed-ensemble equivalence, switches, a naive reference, learning."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from icldyn.errors import UsageError
from icldyn.models import MODELS
from icldyn.models.gpt import GPT, GPTConfig
from icldyn.tasks.base import Batch
from icldyn.tasks.linear_regression import LinearRegressionConfig

SMALL = dict(n_layers=2, n_heads=2, width=16)


def task(d=3, max_points=8):
    """The task config a model reads d and its positional table (n_points + 1 = max_points) from."""
    return LinearRegressionConfig(d=d, n_points=max_points - 1)


def make(seeds=(0, 1), d=3, max_points=8, dtype=torch.float32, **kw):
    return GPT(GPTConfig(**{**SMALL, **kw}), task(d, max_points), list(seeds), dtype=dtype)


def batch(E=2, B=3, T=6, d=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(E, B, T, d, generator=g, dtype=dtype), torch.randn(E, B, T, generator=g, dtype=dtype))


# -- a naive reference, written independently of the model's batched code -------------------------

def naive_forward(model: GPT, b: Batch) -> torch.Tensor:
    """Loop over seeds; all 2T tokens (the last y-token included); explicit masked attention."""
    cfg, outs = model.config, []
    p = dict(model.named_parameters())
    E, B, T, d = model.n_seeds, *b.x.shape[1:]
    x, y = b.x.expand(E, B, T, d), b.y.expand(E, B, T)

    def ln(h, name, e):
        if not cfg.layernorm:
            return h
        mu, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mu) / torch.sqrt(var + 1e-5) * p[f"{name}.weight"][e] + p[f"{name}.bias"][e]

    def lin(h, name, e):
        return h @ p[f"{name}.weight"][e] + p[f"{name}.bias"][e]

    for e in range(E):
        z = torch.zeros(B, 2 * T, d, dtype=x.dtype)
        z[:, 0::2] = x[e]
        z[:, 1::2, 0] = y[e]
        h = lin(z, "read_in", e)
        if cfg.positional:
            h = h + p["pos"][e][: 2 * T]
        S, H, dh = 2 * T, cfg.n_heads, cfg.width // cfg.n_heads
        allowed = torch.ones(S, S).tril().bool()
        for i in range(cfg.n_layers):
            q, k, v = lin(ln(h, f"blocks.{i}.ln1", e), f"blocks.{i}.attn.qkv", e).split(cfg.width, -1)
            q, k, v = (t.reshape(B, S, H, dh).transpose(1, 2) for t in (q, k, v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
            if cfg.attention == "softmax":
                w = torch.exp(scores - scores.max(-1, keepdim=True).values) * allowed
                w = w / w.sum(-1, keepdim=True)
            else:
                act = scores.clamp(min=0) if cfg.attention == "relu" else scores
                w = act * allowed / torch.arange(1, S + 1, dtype=x.dtype)[:, None]
            att = (w @ v).transpose(1, 2).reshape(B, S, cfg.width)
            h = h + lin(att, f"blocks.{i}.attn.out", e)
            if cfg.mlp:
                u = lin(ln(h, f"blocks.{i}.ln2", e), f"blocks.{i}.mlp.fc", e)
                u = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))
                h = h + lin(u, f"blocks.{i}.mlp.proj", e)
        outs.append(lin(ln(h, "ln_f", e), "read_out", e)[:, 0::2, 0])
    return torch.stack(outs)


@pytest.mark.parametrize("switch", [{}, {"attention": "linear"}, {"attention": "relu"}, {"mlp": False},
                                    {"layernorm": False}, {"positional": False}, {"n_layers": 1}])
def test_matches_naive_reference(switch):
    model = make(dtype=torch.float64, init_std=0.3, **switch)
    b = batch(dtype=torch.float64)
    ref = naive_forward(model, b)
    out = model(b)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-9)             # SDPA / fast path
    torch.testing.assert_close(model.run_with_cache(b)[0], ref, atol=1e-10, rtol=1e-9)  # explicit patterns
    # gradients too: the folded LayerNorm affine and the x-only last block are exact rewrites
    weights = torch.randn_like(out)
    fast = torch.autograd.grad((out * weights).sum(), list(model.parameters()))
    slow = torch.autograd.grad((ref * weights).sum(), list(model.parameters()))
    for (name, _), g_fast, g_slow in zip(model.named_parameters(), fast, slow):
        torch.testing.assert_close(g_fast, g_slow, atol=1e-10, rtol=1e-9, msg=name)


def test_switches_change_the_function():
    b = batch()
    base = make(init_std=0.3)(b)
    for switch in [{"attention": "linear"}, {"attention": "relu"}, {"mlp": False}, {"layernorm": False},
                   {"positional": False}]:
        other = make(init_std=0.3, **switch)(b)
        assert other.shape == base.shape and torch.isfinite(other).all()
        assert (other - base).abs().max() > 1e-3, switch


# -- causality ---------------------------------------------------------------------------------------

@settings(deadline=None, max_examples=15)
@given(t=st.integers(0, 5), kind=st.sampled_from(["softmax", "linear", "relu"]), seed=st.integers(0, 10))
def test_causal(t, kind, seed):
    model = make(attention=kind, init_std=0.3)
    b = batch(seed=seed)
    out = model(b)
    later = Batch(b.x.clone(), b.y.clone())
    later.x[:, :, t + 1:] += 1.0
    later.y[:, :, t:] += 1.0          # y_t itself is not visible to the prediction of y_t
    changed = model(later)
    torch.testing.assert_close(changed[..., : t + 1], out[..., : t + 1], atol=1e-6, rtol=0)
    if t < 5:
        assert (changed[..., t + 1:] - out[..., t + 1:]).abs().max() > 1e-6   # and later ones do see it


# -- shapes and the seed axis -------------------------------------------------------------------------

def test_shapes_and_shared_eval_batch():
    model = make(seeds=(0, 1, 2))
    assert model.prefix_outputs
    assert model(batch(E=3, B=4, T=5)).shape == (3, 4, 5)
    shared = batch(E=1, B=4, T=7)
    out = model(shared)
    assert out.shape == (3, 4, 7)
    expanded = Batch(shared.x.expand(3, -1, -1, -1), shared.y.expand(3, -1, -1))
    torch.testing.assert_close(out, model(expanded))


def test_ensemble_equals_separate_models():
    b = batch(E=2, seed=4)
    ens = make(seeds=(3, 7))
    singles = [make(seeds=(s,)) for s in (3, 7)]

    def loss(model, x, y):  # sum over seeds of each seed's ½·MSE
        return (0.5 * (model(Batch(x, y)) - y).pow(2).mean((1, 2))).sum()

    loss(ens, b.x, b.y).backward()
    for e, single in enumerate(singles):
        for (name, p_ens), (_, p_one) in zip(ens.named_parameters(), single.named_parameters()):
            assert torch.equal(p_ens.detach()[e], p_one.detach()[0]), name     # init is per seed
        loss(single, b.x[e:e + 1], b.y[e:e + 1]).backward()
        torch.testing.assert_close(ens(b)[e], single(Batch(b.x[e:e + 1], b.y[e:e + 1]))[0], atol=1e-6, rtol=0)
        for (name, p_ens), (_, p_one) in zip(ens.named_parameters(), single.named_parameters()):
            torch.testing.assert_close(p_ens.grad[e], p_one.grad[0], atol=1e-6, rtol=1e-5, msg=name)


def test_gpt2_init():
    model = make(seeds=(0,), n_layers=4, width=64, n_heads=4, max_points=64)
    sd = dict(model.named_parameters())
    assert sd["blocks.0.attn.qkv.weight"].std().item() == pytest.approx(0.02, rel=0.1)
    assert sd["blocks.0.mlp.proj.weight"].std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    assert sd["blocks.0.attn.out.weight"].std().item() == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    assert (sd["blocks.0.attn.qkv.bias"] == 0).all() and (sd["ln_f.weight"] == 1).all()
    first, second = sd["blocks.0.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"]
    assert not torch.equal(first, second)                                    # distinct streams per tensor


# -- hooks ---------------------------------------------------------------------------------------------

def test_hooks_only_when_caching():
    model = make(seeds=(0, 1))
    b = batch(E=1, B=3, T=4)
    plain = model(b)
    assert not model.hooks_active
    out, cache = model.run_with_cache(b)
    assert not model.hooks_active
    torch.testing.assert_close(out, plain, atol=1e-6, rtol=0)
    pattern = cache["blocks.1.attn.hook_pattern"]                           # (E, B, H, S, S), S = 2T−1
    assert pattern.shape == (2, 3, 2, 7, 7)
    torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 3, 2, 7))
    assert torch.all(pattern.triu(1) == 0)
    assert cache["blocks.1.hook_resid_post"].shape == (2, 3, 7, 16)
    assert cache["hook_embed"].shape == (2, 3, 7, 16) and cache["hook_pred"].shape == (2, 3, 4)


# -- learning --------------------------------------------------------------------------------------------

def test_learns_a_trivial_interleaved_task():
    model = GPT(GPTConfig(n_layers=1, n_heads=2, width=16), task(d=2, max_points=4), [0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(150):
        x = torch.randn(1, 16, 4, 2, generator=g)
        y = x[..., 0]                                                       # y = first coordinate of x
        loss = 0.5 * (model(Batch(x, y)) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 / 10


# -- config and errors -------------------------------------------------------------------------------------

def test_size_shortcut_and_validation():
    small = GPTConfig(size="small")
    assert (small.n_layers, small.n_heads, small.width) == (6, 4, 128)
    assert GPTConfig(size="small", n_layers=6).width == 128                 # agreeing values are fine
    with pytest.raises(ValidationError, match="n_layers"):
        GPTConfig(size="small", n_layers=3)
    with pytest.raises(ValidationError, match="width"):
        GPTConfig(width=30, n_heads=4)
    with pytest.raises(ValidationError, match="size"):
        GPTConfig(size="huge")
    # a dumped config re-sizes cleanly (the sized fields follow the size)
    dumped = GPTConfig(size="tiny").model_dump()
    assert "n_layers" not in dumped
    assert GPTConfig.model_validate({**dumped, "size": "standard"}).width == 256
    assert GPTConfig.model_validate(GPTConfig(n_layers=5).model_dump()).n_layers == 5


def test_bad_batches_raise_usage_errors():
    model = make(max_points=4)
    with pytest.raises(UsageError, match="max_points"):
        model(batch(T=5))
    with pytest.raises(UsageError, match="d=3"):
        model(batch(d=2, T=3))
    with pytest.raises(UsageError):
        model(batch(E=3, T=3))


def test_registered():
    assert MODELS["gpt"] == (GPTConfig, GPT)
