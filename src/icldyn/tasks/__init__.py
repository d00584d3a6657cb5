"""Task registry: name → (config class, task class), and `TaskConfig`, the union of the configs."""

from icldyn.config import config_union
from icldyn.registry import Registry
from icldyn.tasks.base import Batch, Task
from icldyn.tasks.binary_classification import BinaryClassificationConfig, BinaryClassificationTask
from icldyn.tasks.linear_regression import LinearRegressionConfig, LinearRegressionTask
from icldyn.tasks.modular_arithmetic import ModularArithmeticConfig, ModularArithmeticTask
from icldyn.tasks.ngram_markov import NgramMarkovConfig, NgramMarkovTask, NgramSplitConfig, NgramSplitTask
from icldyn.tasks.multitask_regression import MultitaskRegressionConfig, MultitaskRegressionTask
from icldyn.tasks.softmax_regression import SoftmaxRegressionConfig, SoftmaxRegressionTask
from icldyn.tasks.structured_features import StructuredFeaturesConfig, StructuredFeaturesTask
from icldyn.tasks.vector_regression import VectorRegressionConfig, VectorRegressionTask

TASKS: Registry = Registry("task")
TASKS.register("linear-regression", (LinearRegressionConfig, LinearRegressionTask))
TASKS.register("ngram-markov", (NgramMarkovConfig, NgramMarkovTask))
TASKS.register("ngram-markov-split", (NgramSplitConfig, NgramSplitTask))
TASKS.register("multitask-regression", (MultitaskRegressionConfig, MultitaskRegressionTask))
TASKS.register("structured-features", (StructuredFeaturesConfig, StructuredFeaturesTask))
TASKS.register("softmax-regression", (SoftmaxRegressionConfig, SoftmaxRegressionTask))
TASKS.register("modular-arithmetic", (ModularArithmeticConfig, ModularArithmeticTask))
TASKS.register("binary-classification", (BinaryClassificationConfig, BinaryClassificationTask))
TASKS.register("vector-regression", (VectorRegressionConfig, VectorRegressionTask))

# The union of the registered task configs, selected by `name` (`--set task.name=...`).
TaskConfig = config_union(TASKS)


def build_task(config, dtype=None) -> Task:
    import torch

    _, cls = TASKS[config.name]
    return cls(config, dtype or torch.float32)


__all__ = ["Batch", "Task", "TASKS", "TaskConfig", "build_task"]
