"""Model registry: name → (config class, model class)."""

from icldyn.models.base import EnsembleModel
from icldyn.models.gpt import GPT, GPTConfig
from icldyn.models.induction import InductionFull, InductionFullConfig, InductionSimplified, InductionSimplifiedConfig
from icldyn.models.lsa import LSA, LSAConfig
from icldyn.models.multihead_attention import MultiheadAttention, MultiheadAttentionConfig
from icldyn.models.softmax_attention import SoftmaxAttention, SoftmaxAttentionConfig
from icldyn.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("lsa", (LSAConfig, LSA))
MODELS.register("gpt", (GPTConfig, GPT))
MODELS.register("induction-simplified", (InductionSimplifiedConfig, InductionSimplified))
MODELS.register("induction-full", (InductionFullConfig, InductionFull))
MODELS.register("multihead-attention", (MultiheadAttentionConfig, MultiheadAttention))
MODELS.register("softmax-attention", (SoftmaxAttentionConfig, SoftmaxAttention))

__all__ = ["EnsembleModel", "MODELS"]


# The union of the registered model configs, selected by `name` (`--set model.name=gpt`).
from icldyn.config import config_union  # noqa: E402

ModelConfig = config_union(MODELS)
__all__ += ["ModelConfig"]
