"""Hook points and the one constructor: every registered model, built through `build_model` on a
tiny task, exposes its documented hooks with the documented shapes; caching leaves the output
unchanged; patching a hook changes the output as computed independently of the hook."""

import copy

import pytest
import torch

from icldyn.errors import UsageError
from icldyn.models import MODELS, build_model, evaluate
from icldyn.models.base import HookPoint
from icldyn.models.gpt import GPTConfig
from icldyn.models.induction import InductionFullConfig, InductionSimplifiedConfig
from icldyn.models.lsa import LSAConfig
from icldyn.models.mode_lsa import ModeLSAConfig
from icldyn.models.multihead_attention import MultiheadAttentionConfig
from icldyn.models.relu_attention_classifier import ReluAttentionClassifierConfig
from icldyn.models.softmax_attention import SoftmaxAttentionConfig
from icldyn.tasks.binary_classification import BinaryClassificationConfig, BinaryClassificationTask
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.tasks.multitask_regression import MultitaskRegressionConfig, MultitaskRegressionTask
from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramMarkovTask
from icldyn.tasks.structured_features import StructuredFeaturesConfig, StructuredFeaturesTask
from icldyn.tasks.vector_regression import VectorRegressionConfig, VectorRegressionTask

F64 = torch.float64
E, B = 2, 5
SEEDS = [3, 4]

# name → (model config, task, {hook name: shape}); T points per prompt, n = T − 1 context points
LINREG = LinearRegressionTask(LinearRegressionConfig(d=3, n_points=6), F64)          # T = 7
NGRAM = NgramMarkovTask(NgramMarkovConfig(n_points=10), F64)                           # L = 10, S = 3
CASES = {
    "lsa": (LSAConfig(init="gaussian", init_scale=0.3), LINREG, {
        "blocks.0.attn.hook_scores": (E, B, 7), "blocks.0.attn.hook_pattern": (E, B, 7),
        "hook_pred": (E, B, 1)}),
    "gpt": (GPTConfig(n_layers=2, n_heads=2, width=16), LINREG, {
        "hook_embed": (E, B, 13, 16),
        **{f"blocks.{i}.{name}": shape for i in range(2) for name, shape in [
            ("attn.hook_scores", (E, B, 2, 13, 13)), ("attn.hook_pattern", (E, B, 2, 13, 13)),
            ("attn.hook_out", (E, B, 13, 16)), ("hook_resid_mid", (E, B, 13, 16)),
            ("hook_resid_post", (E, B, 13, 16))]},
        "hook_pred": (E, B, 7)}),
    "induction-simplified": (InductionSimplifiedConfig(impl="direct"), NGRAM, {
        "blocks.0.attn.hook_pattern": (E, 3, 3), "blocks.1.hook_selector_weights": (E, 6),
        "blocks.1.attn.hook_pattern": (E, B, 10), "hook_pred": (E, B, 3)}),
    "induction-full": (InductionFullConfig(impl="direct"), NGRAM, {
        "blocks.0.attn.hook_pattern": (E, B * 11, 3, 3), "blocks.1.hook_selector_weights": (E, 6),
        "blocks.1.attn.hook_pattern": (E, B, 10), "hook_pred": (E, B, 3)}),
    "multihead-attention": (MultiheadAttentionConfig(n_heads=3), MultitaskRegressionTask(
        MultitaskRegressionConfig(d0=2, n_points=8, orthogonal=True), F64), {
        "blocks.0.attn.hook_scores": (E, B, 3, 8), "blocks.0.attn.hook_pattern": (E, B, 3, 8),
        "hook_pred": (E, B, 2)}),
    "softmax-attention": (SoftmaxAttentionConfig(train="full"), StructuredFeaturesTask(
        StructuredFeaturesConfig(d=4, K=3, n_points=8), F64), {
        "blocks.0.attn.hook_scores": (E, B, 8), "blocks.0.attn.hook_pattern": (E, B, 8),
        "hook_pred": (E, B, 1)}),
    "relu-attention-classifier": (ReluAttentionClassifierConfig(width=6), BinaryClassificationTask(
        BinaryClassificationConfig(context_length=8), F64), {
        "blocks.0.attn.hook_scores": (E, B, 8), "blocks.0.attn.hook_pattern": (E, B, 8),
        "hook_hidden": (E, B, 6), "hook_pred": (E, B, 1)}),
    "mode-lsa": (ModeLSAConfig(init_scale=0.3), VectorRegressionTask(VectorRegressionConfig(d=3, n_points=6), F64), {
        "blocks.0.attn.hook_scores": (E, B, 6), "hook_pred": (E, B, 3)}),
}


def built(name):
    config, task, hooks = CASES[name]
    model = build_model(config, task, SEEDS, F64)
    with torch.no_grad():  # away from the init's symmetries, so that patches show
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=F64))
    return model, task.sample(SEEDS, 0, B), hooks


def test_every_registered_model_has_a_case():
    assert set(CASES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_build_model_hook_names_shapes_and_cache_leaves_output_alone(name):
    model, batch, hooks = built(name)
    assert type(model) is MODELS[name][1]
    assert set(model.hook_points()) == set(hooks)
    assert not any("hook" in n for n, _ in model.named_parameters())     # hooks hold no parameters
    with torch.no_grad():
        plain = model(batch)
        out, cache = model.run_with_cache(batch)
        again = model(batch)
    assert {k: tuple(v.shape) for k, v in cache.items()} == hooks
    torch.testing.assert_close(out, plain, rtol=1e-12, atol=1e-12)
    assert torch.equal(again, plain)                                     # no hook left behind
    assert not model.hooks_active and all(not hp.fns for hp in model.hook_points().values())
    assert torch.equal(cache["hook_pred"], out)
    # a filter picks hooks; a hook function that returns None changes nothing
    _, only = model.run_with_cache(batch, lambda n: n.endswith("hook_pred"))
    assert list(only) == ["hook_pred"]
    seen = []
    with torch.no_grad():
        read = model.run_with_hooks(batch, [("hook_pred", lambda x, hook: seen.append(hook.name))])
    assert seen == ["hook_pred"]
    torch.testing.assert_close(read, plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_patching_hook_pred_replaces_the_output_and_evaluate_sees_it(name):
    model, batch, _ = built(name)
    with torch.no_grad():
        target = torch.full_like(model(batch), 0.25)
        patched = model.run_with_hooks(batch, [("hook_pred", lambda x, hook: torch.full_like(x, 0.25))])
    assert torch.equal(patched, target)
    with model.hooks([("hook_pred", lambda x, hook: torch.full_like(x, 0.25))]):
        torch.testing.assert_close(evaluate(model, batch), model.loss(target, batch).double(), rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["lsa", "multihead-attention", "softmax-attention"])
def test_zero_attention_pattern_zeroes_the_prediction(name):
    """These models' prediction is Σ_keys pattern·value (no residual at the query's label), so a
    zero pattern must give ŷ = 0 exactly."""
    model, batch, _ = built(name)
    with torch.no_grad():
        out = model.run_with_hooks(batch, [("blocks.0.attn.hook_pattern", lambda x, hook: torch.zeros_like(x))])
        assert model(batch).abs().min() > 0
    assert torch.equal(out, torch.zeros_like(out))


def test_gpt_zero_pattern_equals_attention_without_output_weights():
    """Zeroed patterns leave each attention's output at its out-projection's bias: the same as a
    copy of the model whose out-projection weights are zero."""
    model, batch, _ = built("gpt")
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for block in reference.blocks:
            block.attn.out.weight.zero_()
        patched = model.run_with_hooks(batch, [(lambda n: n.endswith("attn.hook_pattern"),
                                                lambda x, hook: torch.zeros_like(x))])
        torch.testing.assert_close(patched, reference(batch), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(patched, model(batch))


def test_gpt_uniform_pattern_patch_averages_the_visible_values():
    """A causal-uniform pattern patched into layer 0 makes its attention output the out-projection
    of the running average of the values, built here by hand from the embedding."""
    model, batch, _ = built("gpt")
    S = 13
    uniform = torch.ones(S, S, dtype=F64).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    captured = {}

    def keep_values(x, hook):                      # the attention's output when its pattern is uniform
        captured["out"] = x

    with torch.no_grad():
        model.run_with_hooks(batch, [("blocks.0.attn.hook_pattern", lambda x, hook: uniform.expand_as(x).clone()),
                                     ("blocks.0.attn.hook_out", keep_values)])
        _, cache = model.run_with_cache(batch, "hook_embed")
        attn = model.blocks[0].attn
        h = cache["hook_embed"].reshape(E, B * S, -1)
        qkv = attn.qkv(h, model.blocks[0].ln1).view(E, B, S, 3, 16)
        v = qkv[:, :, :, 2]                                                   # heads side by side
        expected = attn.out((uniform @ v).reshape(E, B * S, 16)).view(E, B, S, 16)
    torch.testing.assert_close(captured["out"], expected, rtol=1e-10, atol=1e-12)


def test_induction_patches_match_parameter_edits():
    """Classifier pattern uniform → ŷ = token frequencies; selector weights one-hot on subset k →
    the model with c = e_k; copier pattern → the model with those RPE logits."""
    model, batch, _ = built("induction-simplified")
    L = batch.x.shape[-1]
    with torch.no_grad():
        uniform = model.run_with_hooks(batch, [("blocks.1.attn.hook_pattern",
                                                lambda x, hook: torch.full_like(x, 1.0 / L))])
        freq = torch.nn.functional.one_hot(batch.x, 3).to(F64).mean(-2).expand_as(uniform)
        torch.testing.assert_close(uniform, freq, rtol=1e-12, atol=1e-12)

        onehot = torch.zeros(E, 6, dtype=F64)
        onehot[:, 2] = 1.0
        patched = model.run_with_hooks(batch, [("blocks.1.hook_selector_weights", lambda x, hook: onehot)])
        edited = copy.deepcopy(model)
        edited.c.copy_(onehot)
        torch.testing.assert_close(patched, edited(batch), rtol=1e-12, atol=1e-12)

        logits = torch.randn(E, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
        patched = model.run_with_hooks(batch, [("blocks.0.attn.hook_pattern", lambda x, hook: logits.softmax(-1))])
        edited = copy.deepcopy(model)
        edited.w.copy_(logits)
        torch.testing.assert_close(patched, edited(batch), rtol=1e-12, atol=1e-12)
        assert not torch.allclose(patched, model(batch))


def test_hook_point_is_identity_when_idle_and_names_come_from_the_tree():
    model, batch, _ = built("lsa")
    hp = model.blocks[0].attn.hook_scores
    assert isinstance(hp, HookPoint) and hp.name == "blocks.0.attn.hook_scores"
    x = torch.randn(3)
    assert hp(x) is x
    with pytest.raises(UsageError, match="hook_pattern"):
        model.add_hook("blocks.9.attn.hook_pattern", lambda x, hook: x)
    model.add_hook("hook_pred", lambda x, hook: x * 0)
    assert model.hooks_active
    with torch.no_grad():
        assert torch.equal(model(batch), torch.zeros(E, B, 1, dtype=F64))
    model.reset_hooks()
    assert not model.hooks_active


def test_lsa_multilayer_hooks_and_pattern_patch():
    """Two layers, masked query: the scores before the last layer are [query, key] over the n
    keys; zero patterns in both layers leave the query's label entry (0) as ŷ."""
    task = LinearRegressionTask(LinearRegressionConfig(d=3, n_points=6), F64)
    model = build_model(LSAConfig(init="gaussian", n_layers=2, mask_query=True, init_scale=0.3), task, SEEDS, F64)
    batch = task.sample(SEEDS, 0, B)
    with torch.no_grad():
        out, cache = model.run_with_cache(batch)
        torch.testing.assert_close(out, model(batch), rtol=1e-12, atol=1e-12)
    assert cache["blocks.0.attn.hook_scores"].shape == (E, B, 7, 6)
    assert cache["blocks.1.attn.hook_pattern"].shape == (E, B, 6)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"], cache["blocks.0.attn.hook_scores"] / 6)
    with torch.no_grad():
        zero_all = model.run_with_hooks(batch, [(lambda n: n.endswith("hook_pattern"), lambda x, hook: torch.zeros_like(x))])
        zero_first = model.run_with_hooks(batch, [("blocks.0.attn.hook_pattern", lambda x, hook: torch.zeros_like(x))])
        one_layer = copy.deepcopy(model)
        one_layer.w_pv[0].zero_()                 # layer 0 adds nothing: the same as a zero pattern there
    assert torch.equal(zero_all, torch.zeros_like(zero_all))
    torch.testing.assert_close(zero_first, one_layer(batch), rtol=1e-12, atol=1e-12)
