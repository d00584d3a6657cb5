"""Model registry: name → (config class, model class), and `build_model`, the one way to build one.

Every model class is built as `Model(config, task, seeds, dtype)`; hook points and the held-out
`evaluate` are shared through `icldyn.models.base`.
"""

from __future__ import annotations

from typing import Sequence

import torch

from icldyn.models.base import EnsembleModel, HookPoint, evaluate
from icldyn.models.gpt import GPT, GPTConfig
from icldyn.models.induction import InductionFull, InductionFullConfig, InductionSimplified, InductionSimplifiedConfig
from icldyn.models.lsa import LSA, LSAConfig
from icldyn.models.mode_lsa import ModeLSA, ModeLSAConfig
from icldyn.models.multihead_attention import MultiheadAttention, MultiheadAttentionConfig
from icldyn.models.relu_attention_classifier import ReluAttentionClassifier, ReluAttentionClassifierConfig
from icldyn.models.softmax_attention import SoftmaxAttention, SoftmaxAttentionConfig
from icldyn.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("lsa", (LSAConfig, LSA))
MODELS.register("gpt", (GPTConfig, GPT))
MODELS.register("induction-simplified", (InductionSimplifiedConfig, InductionSimplified))
MODELS.register("induction-full", (InductionFullConfig, InductionFull))
MODELS.register("multihead-attention", (MultiheadAttentionConfig, MultiheadAttention))
MODELS.register("softmax-attention", (SoftmaxAttentionConfig, SoftmaxAttention))
MODELS.register("relu-attention-classifier", (ReluAttentionClassifierConfig, ReluAttentionClassifier))
MODELS.register("mode-lsa", (ModeLSAConfig, ModeLSA))


def build_model(model_config, task, seeds: Sequence[int], dtype: torch.dtype = torch.float32) -> EnsembleModel:
    """The registered model named `model_config.name`, for `task`, one member per seed."""
    _, model_class = MODELS[model_config.name]
    return model_class(model_config, task, list(seeds), dtype)


__all__ = ["EnsembleModel", "HookPoint", "MODELS", "build_model", "evaluate"]


# The union of the registered model configs, selected by `name` (`--set model.name=gpt`).
from icldyn.config import config_union  # noqa: E402

ModelConfig = config_union(MODELS)
__all__ += ["ModelConfig"]
